"""How vfpctl's text output shows paths and sizes: one rendering for every printer, readable by a
person and reusable by a shell.

Paths are quoted the way `ls --quoting-style=shell-escape` quotes names, except that a byte that
is not UTF-8 is written `$'\\xNN'` (ls writes octal): one rendering of undecodable bytes in all
text output. Sizes are SI (1 kB = 1000 bytes), as `ls -h --si` and `df -H` show them.
"""

from __future__ import annotations

import os
import string

# Characters that never need quoting anywhere in a word (shlex's set, without "=": ls quotes it).
_SAFE = frozenset(string.ascii_letters + string.digits + "@%+:,./-_")
# Characters that are special inside double quotes: a name with one of them and a "'" is
# single-quoted, the "'" written '\''.
_SPECIAL_IN_DOUBLE = frozenset('$`\\"!')
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b", "\f": "\\f",
                  "\v": "\\v", "\x1b": "\\e"}
_SURROGATES = range(0xDC80, 0xDD00)  # how Python keeps a non-UTF-8 byte of a file name

SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
SIZE_STEP = 1000


def _escaped(c: str) -> str | None:
    """The $'...' form of an unprintable or undecodable character; None for a printable one."""
    if ord(c) in _SURROGATES:
        return f"\\x{ord(c) - 0xDC00:02x}"
    if c in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[c]
    if not c.isprintable():
        return "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))
    return None


def shell_quoted(path: str | bytes | os.PathLike[str]) -> str:
    """`path` as a shell word that gives back its exact bytes (file names need not be UTF-8)."""
    text = os.fsdecode(path)
    if text and all(c in _SAFE or (ord(c) > 127 and _escaped(c) is None) for c in text) \
            and text[0] not in "~#":
        return text
    if "'" in text and not any(c in _SPECIAL_IN_DOUBLE or _escaped(c) for c in text):
        return f'"{text}"'
    out: list[str] = []
    literal: list[str] = []
    for c in text:
        esc = _escaped(c)
        if esc is None:
            literal.append("'\\''" if c == "'" else c)
            continue
        if literal or not out:  # ls opens with '' when the name starts with an escape
            out.append("'" + "".join(literal) + "'")
            literal = []
        out.append(f"$'{esc}'")
    if literal or not out:
        out.append("'" + "".join(literal) + "'")
    return "".join(out)


def human_size(n: float | None) -> str:
    """A byte count in SI units: 999 B, 1.0 kB, 2.5 MB ("?" when unknown)."""
    if n is None:
        return "?"
    if abs(n) < SIZE_STEP:
        return f"{n:.0f} B"
    for unit in SIZE_UNITS[1:-1]:
        n /= SIZE_STEP
        if abs(n) < SIZE_STEP:
            return f"{n:.1f} {unit}"
    return f"{n / SIZE_STEP:.1f} {SIZE_UNITS[-1]}"
