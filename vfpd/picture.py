"""What decoded pictures show: which frames are informative (not black, flat or a lone logo), where
the border is (letterbox/pillarbox bars, a one-colour frame), and the crop and resize to FRAME_SIZE."""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

RULES_VERSION = 2
"""What a decoded picture becomes (bars and borders cropped, the informative frames chosen):
bumped whenever that changes, so that frames and fingerprints made under older rules are not
taken from a cache or a catalog for new ones (catalog.sampling_tag, presets). 1: black bars;
2: a border of any one colour (BORDER_COLOUR_TOLERANCE)."""

FRAME_SIZE = 64
"""Side of the square frames handed to the model (DESIGN.md: 64x64)."""

DETECT_SIZE = 2 * FRAME_SIZE
"""Intermediate square size at which bars are detected and cropped: twice the output, so that a
crop removing up to half of each axis still leaves FRAME_SIZE real pixels; 512 of them hold 25 MB."""

BAR_MAX_LUMA = 28.0
"""A bar row/column is near black: mean luma at most this (black is 16 in limited range, and
encoders smear the edge of the picture into the first bar rows)."""

BAR_MAX_STD = 10.0
"""...and uniform: the standard deviation along it, averaged over R, G and B for a dark bar and the
largest of the three for a coloured border, is at most this (noise and compression ringing)."""

BORDER_COLOUR_TOLERANCE = 12.0
"""A uniform row of any colour continues a border when its mean colour is within this (per RGB
channel, of 255) of the outermost row's: a coloured frame survives encoding within a few levels, and
a picture's own rows differ from it by more."""

BAR_MAX_FRACTION = 0.4
"""Bars never cover more than this share of one side; beyond it the picture itself is dark."""

BAR_FRAME_QUANTILE = 0.2
"""A bar must be present in at least 80 % of informative frames (subtitles burnt into a bar, a
flash, do not shrink it; a dark opening scene does not create one)."""

FLAT_STD = 6.0
"""A frame whose 64x64 luma has a standard deviation below this is black/flat/faded."""

FLAT_EDGE = 1.5
"""...or whose mean absolute luma gradient is below this has no structure to recognise."""

TEXTURE_GRID = 8
"""For the texture-spread test a frame is cut into TEXTURE_GRID x TEXTURE_GRID blocks (8x8 pixels at
FRAME_SIZE): fine enough that a logo or a caption fills only a few of them."""

TEXTURE_MIN_SHARE = 0.1
"""...and at least this share of the blocks must have a mean luma gradient of FLAT_EDGE or more. A
black leader or a flat grey shot with a channel logo and a caption burnt in has about 0.02 (on the
accuracy benchmark such frames made different watermarked videos match). On that benchmark the test
drops 57 of 4681 frames the contrast tests let through, 51 of them a watermark over a flat or
black picture; blurred copies lose none."""


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 RGB (..., 3) as float32."""
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def informative_mask(frames: np.ndarray) -> np.ndarray:
    """False for frames with too little contrast or structure to recognise (black, flat, fades),
    and for frames whose structure is confined to a small spot (a logo or a caption on a black
    leader): that spot is all such a frame would be matched on."""
    y = luma(frames.astype(np.float32))
    std = y.reshape(len(y), -1).std(axis=1)
    dy, dx = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=2))
    edge = (dy.mean(axis=(1, 2)) + dx.mean(axis=(1, 2))) / 2
    return (std >= FLAT_STD) & (edge >= FLAT_EDGE) & (_textured_share(dy, dx) >= TEXTURE_MIN_SHARE)


def _textured_share(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Per frame, the share of TEXTURE_GRID x TEXTURE_GRID blocks whose mean absolute luma gradient
    is at least FLAT_EDGE."""
    n, h, w = len(dy), dy.shape[1], dx.shape[2]  # both gradients cropped to (h, w)
    g = max(1, min(TEXTURE_GRID, h, w))
    bh, bw = h // g, w // g
    grad = (dy[:, :g * bh, :g * bw] + dx[:, :g * bh, :g * bw]) / 2
    blocks = grad.reshape(n, g, bh, g, bw).mean(axis=(2, 4))
    return (blocks >= FLAT_EDGE).mean(axis=(1, 2))


def _bar_run(is_bar: np.ndarray) -> np.ndarray:
    """Per frame, how many leading entries (along axis 1) are bars."""
    not_bar = ~is_bar
    first = np.argmax(not_bar, axis=1)
    return np.where(not_bar.any(axis=1), first, is_bar.shape[1])


def _border_rows(colour: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per frame and row (axis 1, counted from the edge): a border row is near black and uniform
    (a letterbox bar), or uniform and of the outermost row's colour (a picture framed or padded in
    any colour)."""
    dark = (luma(colour) <= BAR_MAX_LUMA) & (spread.mean(axis=-1) <= BAR_MAX_STD)
    uniform = spread.max(axis=-1) <= BAR_MAX_STD
    edge_colour = np.abs(colour - colour[:, :1]).max(axis=-1) <= BORDER_COLOUR_TOLERANCE
    return dark | (uniform & edge_colour)


EXACT_FLOAT32_ROW = 256
"""Longest row whose float32 sum of squared uint8 values is exact (256 * 255^2 < 2^24)."""


def _row_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour and standard deviation of every row of uint8 RGB frames (n, h, w, 3), each
    (n, h, 3) float32. The sums of values and squares are exact (float32 up to
    EXACT_FLOAT32_ROW pixels, float64 beyond), and one matrix product sums all rows at once (a numpy
    reduction along the middle axis of each pixel's colours is several times slower)."""
    n, h, w, c = frames.shape
    exact = np.float32 if w <= EXACT_FLOAT32_ROW else np.float64
    x = frames.astype(exact).reshape(n * h, w * c)
    pick = np.zeros((w * c, c), exact)
    pick[np.arange(w * c), np.tile(np.arange(c), w)] = 1.0  # sums each colour channel of a row
    s1 = (x @ pick).astype(np.float64)
    s2 = ((x * x) @ pick).astype(np.float64)
    mean = s1 / w
    std = np.sqrt(np.maximum(s2 / w - mean * mean, 0.0))
    return mean.astype(np.float32).reshape(n, h, c), std.astype(np.float32).reshape(n, h, c)


def detect_bars(frames: np.ndarray, usable: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) rows/columns of uniform border (black bars, or a frame of one
    colour around the picture), common to the frames."""
    h, w = frames.shape[1:3]
    sel = frames[usable] if usable.any() else frames
    row_colour, row_spread = _row_stats(sel)  # (n, h, 3)
    col_colour, col_spread = _row_stats(sel.transpose(0, 2, 1, 3))  # (n, w, 3)

    def side(colour: np.ndarray, spread: np.ndarray, length: int) -> int:
        runs = _bar_run(_border_rows(colour, spread))
        v = int(np.floor(np.quantile(runs, BAR_FRAME_QUANTILE)))
        return v if v <= BAR_MAX_FRACTION * length else 0

    top = side(row_colour, row_spread, h)
    bottom = side(row_colour[:, ::-1], row_spread[:, ::-1], h)
    left = side(col_colour, col_spread, w)
    right = side(col_colour[:, ::-1], col_spread[:, ::-1], w)
    return top, bottom, left, right


def _resized(frames: np.ndarray, size: int) -> np.ndarray:
    """Each uint8 RGB frame resized to size x size (area averaging), through one reformatter: a
    frame's own would set up a new scaler for every frame."""
    scaler = VideoReformatter()
    return np.stack([scaler.reformat(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"),
                                     width=size, height=size, format="rgb24",
                                     interpolation="AREA").to_ndarray() for f in frames])


def model_frames(inter: np.ndarray, remove_bars: bool
                 ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Crop bars from the DETECT_SIZE intermediates, resize to FRAME_SIZE, mark informative:
    (frames, informative, crop as (top, bottom, left, right) fractions of the picture)."""
    usable = informative_mask(inter)
    h, w = inter.shape[1:3]
    top, bottom, left, right = detect_bars(inter, usable) if remove_bars else (0, 0, 0, 0)
    if top or bottom or left or right:
        frames = _resized(inter[:, top:h - bottom, left:w - right], FRAME_SIZE)
    else:
        frames = _resized(inter, FRAME_SIZE)
    return frames, informative_mask(frames), (top / h, bottom / h, left / w, right / w)
