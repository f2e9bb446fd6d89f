#!/usr/bin/env bash
# Check vfpd's systemd units with systemd-analyze: `verify` must be silent for the system unit,
# the system unit with each drop-in (GPU, webhook credential), and the user unit; the system unit's offline security
# exposure must be at most MAX_EXPOSURE. Usage: systemd/check.sh [PATH_TO_VFPD]
# ExecStart is pointed at PATH_TO_VFPD (default: `command -v vfpd`), because verify insists that
# the binary exists.
set -euo pipefail
MAX_EXPOSURE=2.0
here="$(cd "$(dirname "$0")" && pwd)"
vfpd="${1:-$(command -v vfpd || true)}"
if [ -z "$vfpd" ] || [ ! -x "$vfpd" ]; then
    echo "check.sh: no vfpd executable (pass its path)" >&2
    exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/system/vfpd.service.d" "$work/gpu/vfpd.service.d" "$work/cred/vfpd.service.d" \
    "$work/user" "$work/run"
sed "s|^ExecStart=[^ ]*|ExecStart=$vfpd|" "$here/vfpd.service" >"$work/system/vfpd.service"
cp "$work/system/vfpd.service" "$work/gpu/vfpd.service"
cp "$here/vfpd.service.d/gpu.conf" "$work/gpu/vfpd.service.d/gpu.conf"
cp "$work/system/vfpd.service" "$work/cred/vfpd.service"
cp "$here/vfpd.service.d/webhook-credential.conf" "$work/cred/vfpd.service.d/"
sed "s|^ExecStart=[^ ]*|ExecStart=$vfpd|" "$here/vfpd.user.service" >"$work/user/vfpd.service"

fail=0
quiet() {  # run a verify; any output at all is a finding
    local name="$1"; shift
    local out
    out="$("$@" 2>&1)" || { echo "FAIL $name: exit $?"; echo "$out"; fail=1; return; }
    if [ -n "$out" ]; then echo "FAIL $name: not clean"; echo "$out"; fail=1; return; fi
    echo "ok   $name: systemd-analyze verify clean"
}
quiet "vfpd.service" systemd-analyze verify "$work/system/vfpd.service"
quiet "vfpd.service + gpu.conf" env SYSTEMD_UNIT_PATH="$work/gpu:" systemd-analyze verify vfpd.service
quiet "vfpd.service + webhook-credential.conf" env SYSTEMD_UNIT_PATH="$work/cred:" \
    systemd-analyze verify vfpd.service
quiet "vfpd.user.service" env XDG_RUNTIME_DIR="$work/run" systemd-analyze --user verify \
    "$work/user/vfpd.service"

exposure="$(systemd-analyze security --offline=true "$work/system/vfpd.service" 2>&1 |
    sed -n 's/.*Overall exposure level for vfpd.service: \([0-9.]*\).*/\1/p')"
if [ -z "$exposure" ]; then
    echo "FAIL security: no exposure level in systemd-analyze's output"; fail=1
elif awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    echo "ok   vfpd.service: security exposure $exposure (limit $MAX_EXPOSURE)"
else
    echo "FAIL vfpd.service: security exposure $exposure > $MAX_EXPOSURE"; fail=1
fi
exit "$fail"
