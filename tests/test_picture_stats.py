"""The picture rules' fast arithmetic gives what the plain numpy it replaced gives: row statistics
summed by one matrix product, borders found from them, and frames resized through one scaler."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vfpd.picture import (
    BAR_FRAME_QUANTILE,
    BAR_MAX_FRACTION,
    EXACT_FLOAT32_ROW,
    _bar_run,
    _border_rows,
    _resized,
    _row_stats,
    detect_bars,
    informative_mask,
)

PIXELS = st.sampled_from([0, 1, 16, 127, 128, 254, 255]) | st.integers(0, 255)


@st.composite
def frames(draw: st.DrawFn, max_side: int = 64) -> np.ndarray:
    n = draw(st.integers(1, 4))
    h = draw(st.integers(1, max_side))
    w = draw(st.sampled_from([1, 2, 3, EXACT_FLOAT32_ROW, EXACT_FLOAT32_ROW + 1]) | st.integers(1, max_side))
    return draw(arrays(np.uint8, (n, h, w, 3), elements=PIXELS))


@settings(max_examples=200, deadline=None)
@given(frames(max_side=40))
def test_row_stats_are_the_rows_mean_and_spread(x: np.ndarray) -> None:
    mean, std = _row_stats(x)
    exact = x.astype(np.float64)
    # The mean of integers over a row is exact (a float32 holds every k/w that occurs here).
    assert np.array_equal(mean, exact.mean(axis=2).astype(np.float32))
    np.testing.assert_allclose(std, exact.std(axis=2), rtol=0, atol=1e-3)


def _reference_bars(frames: np.ndarray, usable: np.ndarray) -> tuple[int, int, int, int]:
    """detect_bars as first written: numpy's float32 mean and std along each axis."""
    h, w = frames.shape[1:3]
    sel = (frames[usable] if usable.any() else frames).astype(np.float32)
    rc, rs = sel.mean(axis=2), sel.std(axis=2)
    cc, cs = sel.mean(axis=1), sel.std(axis=1)

    def side(colour: np.ndarray, spread: np.ndarray, length: int) -> int:
        v = int(np.floor(np.quantile(_bar_run(_border_rows(colour, spread)), BAR_FRAME_QUANTILE)))
        return v if v <= BAR_MAX_FRACTION * length else 0

    return (side(rc, rs, h), side(rc[:, ::-1], rs[:, ::-1], h),
            side(cc, cs, w), side(cc[:, ::-1], cs[:, ::-1], w))


@st.composite
def framed_pictures(draw: st.DrawFn) -> np.ndarray:
    """128x128 pictures of noise and shapes inside borders of one colour (or black), each side
    its own width, with some noise on the border as an encoder leaves it."""
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 256, size=(n, 128, 128, 3)).astype(np.int16)
    colour = np.array(draw(st.sampled_from([(0, 0, 0), (16, 16, 16), (200, 30, 30)]) |
                           st.tuples(*[st.integers(0, 255)] * 3)), dtype=np.int16)
    noise = draw(st.integers(0, 14))
    t, b, l, r = (draw(st.integers(0, 50)) for _ in range(4))
    border = np.ones((128, 128), bool)
    border[t:128 - b, l:128 - r] = False
    x[:, border] = colour + rng.integers(-noise, noise + 1, size=(n, int(border.sum()), 3))
    return np.clip(x, 0, 255).astype(np.uint8)


@settings(max_examples=150, deadline=None)
@given(framed_pictures())
def test_borders_are_found_as_by_numpy(x: np.ndarray) -> None:
    usable = informative_mask(x)
    assert detect_bars(x, usable) == _reference_bars(x, usable)


def test_borders_of_real_frames_are_found_as_by_numpy(bikes: Path, bunny: Path, carphone: Path) -> None:
    found = set()
    for path in (bikes, bunny, carphone):
        with av.open(str(path)) as c:
            pictures = [f.to_ndarray(width=112, height=84, format="rgb24", interpolation="AREA")
                        for i, f in enumerate(c.decode(video=0)) if i % 10 == 0]
        for pad in ((0, 0), (22, 0), (0, 8), (5, 7)):  # as it is, letterboxed, pillarboxed, both
            inter = np.stack([np.pad(p, ((pad[0], 44 - pad[0]), (pad[1], 16 - pad[1]), (0, 0)))
                              for p in pictures])
            usable = informative_mask(inter)
            bars = detect_bars(inter, usable)
            assert bars == _reference_bars(inter, usable)
            found.add(bars)
    assert len(found) > 3  # the bars were seen, not only their absence


@settings(max_examples=40, deadline=None)
@given(frames(max_side=96), st.integers(8, 80))
def test_one_scaler_resizes_as_each_frame_alone(x: np.ndarray, size: int) -> None:
    alone = np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                      .to_ndarray(width=size, height=size, format="rgb24", interpolation="AREA")
                      for f in x])
    assert np.array_equal(_resized(x, size), alone)
