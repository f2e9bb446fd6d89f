"""The real daemon after a model change: restarted with other weights it re-fingerprints the
library from the frames it stored (no decoding) and keeps finding copies of old files; restarted
with the fast preset it decodes again (keyframes only) and still finds a re-encoded copy. Pairs
known before are never announced again. Real videos, real weights files, a real webhook."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from media_factory import encode, make_video, read_frames, sample_clip
from harness.daemon import WEIGHTS, Daemon, NotifyListener, WebhookServer, wait_until
from vfpd import config
from vfpd.client import Client
from vfpd.model.embed import DEFAULT_WEIGHTS, weights_version
from vfpd.model.network import load_blob, load_model
from vfpd.presets import ACCURATE, FAST, PRESETS

LIBRARY = ("bikes", "carphone", "p0")
# Scales one tensor of the shipped network: a different weights file (another model version)
# that still fingerprints like the original, as a retrained model would.
PERTURBATION = 1.01


class ModelDaemon(Daemon):
    """test_daemon's daemon with [model] weights and preset chosen per start."""

    weights: Path | None = None
    preset: str | None = None

    def write_config(self, roots: list[Path], extra: str | None = None) -> None:
        model = [f'weights = "{self.weights or WEIGHTS}"'] if (self.weights or WEIGHTS) else []
        if self.preset:
            model.append(f'preset = "{self.preset}"')
        newline = "\n"
        self.config.write_text(f"""
[watch]
paths = {json.dumps([str(r) for r in roots])}
settle_seconds = 1.0
[storage]
state_dir = "{self.state}"
[control]
socket = "{self.home}/ctl.sock"
[notify]
desktop = false
[notify.webhook]
url = "{self.hook.url}"
timeout = 5
[model]
device = "cpu"
{newline.join(model)}
[decode]
workers = 1
""")

    def restart(self, weights: Path | None = None, preset: str | None = None) -> None:
        self.stop()
        self.weights, self.preset = weights, preset
        self.write_config(self.roots)
        self.start()

    def status(self) -> dict[str, Any]:
        with Client(self.home / "ctl.sock") as client:
            return client.call("status")


def perturbed_weights(dest: Path) -> Path:
    blob = load_blob(Path(WEIGHTS) if WEIGHTS else DEFAULT_WEIGHTS)
    name = next(k for k, v in blob["model"].items() if v.is_floating_point() and v.dim() > 1)
    blob["model"][name] = blob["model"][name] * PERTURBATION
    torch.save(blob, dest)
    load_model(dest)  # the daemon must accept it
    return dest


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("model-change")
    bikes = [f for _, f in read_frames(sample_clip("bikes"))]
    return {
        "bikes": sample_clip("bikes"),
        "carphone": sample_clip("carphone_pristine"),
        "p0": make_video(d / "p0.mp4", seconds=4, width=160, height=120, seed=30),
        # Re-encoded at a lower quality, and at half the size (x264 puts keyframes at the
        # scene cuts, as in the original, so the fast preset has frames to compare).
        "copy1": encode(d / "copy1.mkv", bikes, fps=25, options={"crf": "28"}),
        "copy2": encode(d / "copy2.mp4", [f[::2, ::2] for f in bikes], fps=25,
                        options={"crf": "26"}),
        "weights": perturbed_weights(d / "retrained.pt"),
    }


@pytest.fixture(scope="module")
def daemon(media: dict[str, Path]) -> Iterator[ModelDaemon]:
    home = Path(tempfile.mkdtemp(prefix="vfpd-m-", dir="/tmp"))
    root = home / "videos"
    (root / "library").mkdir(parents=True)
    for name in LIBRARY:
        shutil.copyfile(media[name], root / "library" / f"{name}.mp4")
    hook, notify = WebhookServer(), NotifyListener(str(home / "notify.sock"))
    d = ModelDaemon(home, [root], hook, notify)
    try:
        d.start()
        d.wait_log("fingerprinted", count=len(LIBRARY))
        yield d
    finally:
        d.close()


def test_preset_names_agree_with_the_presets() -> None:
    assert config.PRESET_NAMES == tuple(PRESETS)
    assert config.ModelConfig().preset == "accurate"


def test_preset_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\npreset = "quick"\n')
    with pytest.raises(config.ConfigError, match=r"\[model\] preset: must be one of accurate, fast"):
        config.load(path, env={})
    path.write_text('[model]\npreset = "fast"\n')
    assert config.load(path, env={}).model.preset == "fast"


def test_new_weights_reembed_without_decoding(daemon: ModelDaemon, media) -> None:
    root = daemon.roots[0]
    before = daemon.status()
    assert before["index"]["preset"] == "accurate"
    assert before["index"]["missing_fingerprints"] == 0
    daemon.restart(weights=media["weights"])
    mv = weights_version(media["weights"]) + ACCURATE.version_suffix
    wait_until(lambda: daemon.status()["index"]["missing_fingerprints"] == 0,
               what="re-fingerprinting under the new weights")
    daemon.wait_log("re-fingerprinted from stored frames", count=len(LIBRARY))
    st = daemon.status()
    assert st["model_version"] == mv != before["model_version"]
    assert st["index"]["fingerprinted"] == {"decoded": 0, "from_stored_frames": len(LIBRARY)}
    assert len(daemon.lines("re-fingerprinted from stored frames")) == len(LIBRARY)
    assert st["index"]["size"] == len(LIBRARY)
    # A copy of an old file, dropped in now, is found against it.
    dest = root / "copy1.mkv"
    shutil.copyfile(media["copy1"], dest)
    (event,) = wait_until(lambda: daemon.hook.for_path(dest),
                          what=lambda: f"the copy's webhook event; log:\n{daemon.text()[-3000:]}")
    assert str(root / "library" / "bikes.mp4") in [e["path"] for e in event["existing"]]
    assert daemon.status()["index"]["fingerprinted"]["decoded"] == 1


def test_fast_preset_decodes_again_and_finds_a_reencode(daemon: ModelDaemon, media) -> None:
    root = daemon.roots[0]
    events = len(daemon.hook.events)
    daemon.restart(preset="fast")
    contents = len(LIBRARY) + 1
    wait_until(lambda: daemon.status()["index"]["missing_fingerprints"] == 0,
               what="re-fingerprinting with the fast preset")
    wait_until(lambda: daemon.status()["index"]["fingerprinted"]["decoded"] == contents,
               what="every content decoded again")
    st = daemon.status()
    assert st["index"]["preset"] == "fast" and st["model_version"].endswith(FAST.version_suffix)
    # Stored frames were sampled the accurate way: every content is decoded again.
    assert st["index"]["fingerprinted"] == {"decoded": contents, "from_stored_frames": 0}
    dest = root / "copy2.mp4"
    shutil.copyfile(media["copy2"], dest)
    wait_until(lambda: daemon.hook.for_path(dest),
               what=lambda: f"the re-encode's webhook event; log:\n{daemon.text()[-3000:]}")
    new = daemon.hook.events[events:]
    # The copy found under the first preset is not announced again; the new one is, against the
    # original or the first copy (with keyframes only, which of the two clears the threshold
    # first depends on the keyframes each encode got).
    assert {e["new"]["path"] for e in new} == {str(dest)}
    found = {x["path"] for e in new for x in e["existing"]}
    assert found and found <= {str(root / "library" / "bikes.mp4"), str(root / "copy1.mkv")}
    assert all(e["score"] >= FAST.threshold for e in new)
