"""Sampling presets: how densely files are sampled, with the matcher settings and the default
threshold measured for that density. "accurate" is the default; "fast" decodes keyframes only."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vfpd.matching import DEFAULT_THRESHOLD, MatchSettings
from vfpd.media import SamplingSettings
from vfpd.picture import RULES_VERSION

PICTURE_SUFFIX = f"+picture{RULES_VERSION}"
"""Names the picture rules in every fingerprint version: a fingerprint made before the rules
changed shows other pictures (a coloured border not cropped) and is made again."""


@dataclass(frozen=True)
class Preset:
    """Everything that changes together when a library is sampled more sparsely.

    version_suffix is appended to the model version of every fingerprint made under the preset:
    fingerprints of two presets never share a cache entry or an index (their frames stand at
    other moments), and verify() refuses to compare them, as it refuses two models."""

    name: str
    sampling: SamplingSettings
    match: MatchSettings
    threshold: float
    version_suffix: str
    summary: str


FAST_EVIDENCE_FRAMES = 3
"""Keyframes-only sampling gives a 24 s copy from x264's defaults three to five frames (one per
GOP of up to 10 s, plus scene cuts), so the accurate preset's six frames of evidence would scale
every such match down. Three is the fewest that still needs a consistent offset (two points fit
any line). Accuracy benchmark, keyframes-only: AP 0.976 with six, 0.985 with three."""

FAST_EVIDENCE_FLOOR = 2
"""A video with only two informative keyframes can still be confirmed, on both of them."""

FAST_PARTIAL_EVIDENCE_FRAMES = 6
"""An overlap of only the two videos' ends needs twice the evidence, as in the accurate preset
(12 = 2 x 6). Twelve keyframes are minutes of x264 footage: with 12, AP on the benchmark was
0.978, with 6 0.982, at the same recall at precision 0.99."""

FAST_THRESHOLD = 0.57
"""Default threshold of the fast preset: the lowest score with precision >= 0.99 on the accuracy
benchmark (`./dev bench accuracy --preset fast`: recall 0.83 there, AP 0.983, held-out AP 0.994;
the accurate preset keeps recall 0.99 at precision 0.99). Lower than the accurate preset's because
frames of a copy land seconds away from the original's (keyframes fall where each encoder put
them), so even true copies rarely match frame for frame."""

FAST_MOTION_PENALTY = 0.0
"""The fast preset leaves the motion rule out (matching.MatchSettings.motion_penalty): keyframes
fall seconds apart and where each encoder put them, too little of what moves to compare, and the
rule cost its own copies (a colour-shifted copy with 2 s GOPs against its 1 s GOP original fell
from 0.6 to 0.3). So `--fast` does not tell clips of one fixed camera apart (docs/scan.md)."""

ACCURATE = Preset(
    name="accurate",
    sampling=SamplingSettings(),
    match=MatchSettings(),
    threshold=DEFAULT_THRESHOLD,
    version_suffix=PICTURE_SUFFIX,
    summary="about one frame a second on a fixed time grid (every reference frame is decoded "
            "when keyframes are sparse)",
)

FAST_MIN_FRAMES = FAST_EVIDENCE_FRAMES
"""A file whose keyframes give fewer frames than this is sampled on the grid instead (issue 15:
clips shorter than their GOP had one keyframe, and recall on 4-11 s clips was 0.10): the evidence
rule's frames. On the accuracy set (`./dev bench accuracy --preset fast`) recall at the fast
threshold went 0.569 -> 0.582, but AP 0.811 -> 0.781 and negatives above it 62 -> 165: files
sampled on the grid score like the accurate preset's and are judged at this preset's lower
threshold (a threshold by the pair's sampling is not built). Six sent most of that set's 20-30 s
files (3-5 keyframes) to the grid: recall 0.722, 193 negatives, slower than the accurate preset."""

FAST_VERSION_SUFFIX = "+keyframes.min3"
"""Names the fast sampling in every fingerprint version: "+keyframes" fingerprints were made
without FAST_MIN_FRAMES (one frame for a short clip) and must not be taken from a cache."""

FAST = Preset(
    name="fast",
    sampling=SamplingSettings(keyframes="keyframes", min_frames=FAST_MIN_FRAMES),
    match=replace(MatchSettings(), min_evidence_frames=FAST_EVIDENCE_FRAMES,
                  min_evidence_floor=FAST_EVIDENCE_FLOOR,
                  partial_evidence_frames=FAST_PARTIAL_EVIDENCE_FRAMES,
                  motion_penalty=FAST_MOTION_PENALTY),
    threshold=FAST_THRESHOLD,
    version_suffix=FAST_VERSION_SUFFIX + PICTURE_SUFFIX,
    summary="keyframes only (several times faster on files with long GOPs; lower recall on "
            "fast footage; does not tell clips of one fixed camera apart); a file with too few "
            "keyframes is sampled on the grid",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (ACCURATE, FAST)}


def decoding_for(sampling: SamplingSettings, model_device: str) -> SamplingSettings:
    """`sampling` with the GPU decoder when the model runs on CUDA (`--device cuda`, or auto on a
    machine with a GPU): the scan's and the daemon's one rule. Workers without a usable NVDEC
    decode in software (vfpd.media), and what is cached does not change either way."""
    return replace(sampling, hwaccel="cuda" if model_device == "cuda" else "none")
