"""Transformations that turn sampled frames into what a copy of the video would give: re-encode
look, scale, crop, letterbox, flip, colour, blur, noise, overlays, and time (speed, rate, trim).

Spatial functions take a batch of views, (V, T, 3, H, W) floats in [0, 1], and draw one set of
parameters per view (a copy applies one edit to all its frames), vectorised over views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each edit; defaults cover what people do to shared videos."""

    p_geometry: float = 0.8
    max_crop: float = 0.35  # share of each side that a crop may remove
    max_aspect: float = 0.25  # relative stretch of one axis (anamorphic or wrong-aspect encodes)
    p_pad: float = 0.25  # padding that the bar detector does not remove (coloured or partial bars)
    max_pad: float = 0.25
    p_flip: float = 0.3
    p_rescale: float = 0.6  # down-then-up scaling: the blur of a low-resolution copy
    min_scale: int = 12  # smallest intermediate side in pixels (a 144p copy seen at 64 px)
    p_blocks: float = 0.3
    p_quantise: float = 0.3
    p_colour: float = 0.8
    p_gray: float = 0.15
    p_blur: float = 0.3
    p_noise: float = 0.3
    max_noise: float = 0.06
    p_logo: float = 0.35
    p_text: float = 0.3
    p_watermark: float = 0.2
    # Issue 12's copies: filled boxes at 60-80 % opacity over about a fifth of the picture
    # (redactions, stickers, picture-in-picture frames) and rotation by a quarter turn (a phone
    # video re-posted sideways).
    p_boxes: float = 0.25
    p_rot90: float = 0.1


def _rand(v: int, g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return torch.rand(v, generator=g) * (hi - lo) + lo


def _chance(v: int, p: float, g: torch.Generator) -> Tensor:
    return torch.rand(v, generator=g) < p


def geometry(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Crop, stretch, pad (with a solid colour) and mirror, as one resampling per view."""
    v, t, c, h, w = x.shape
    on = _chance(v, cfg.p_geometry, g)
    # Crop: keep a window of relative size (sx, sy) at a random position.
    keep = 1.0 - _rand(v, g, 0.0, cfg.max_crop) * on
    stretch = 1.0 + _rand(v, g, -cfg.max_aspect, cfg.max_aspect) * on
    sx = (keep * stretch.sqrt()).clamp(max=1.0)
    sy = (keep / stretch.sqrt()).clamp(max=1.0)
    cx = (1.0 - sx) * _rand(v, g, -1.0, 1.0)
    cy = (1.0 - sy) * _rand(v, g, -1.0, 1.0)
    # Pad: the picture shrinks inside the frame on one axis (letterbox) or both.
    pad = _chance(v, cfg.p_pad, g)
    px = 1.0 + _rand(v, g, 0.0, cfg.max_pad) * pad * _chance(v, 0.5, g)
    py = 1.0 + _rand(v, g, 0.0, cfg.max_pad) * pad * _chance(v, 0.5, g)
    flip = torch.where(_chance(v, cfg.p_flip, g), -1.0, 1.0)
    theta = torch.zeros(v, 2, 3)
    theta[:, 0, 0] = sx * px * flip
    theta[:, 1, 1] = sy * py
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [v, c, h, w], align_corners=False)
    flat = x.reshape(v, t * c, h, w)
    out = F.grid_sample(flat, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones(v, 1, h, w, dtype=x.dtype), grid.to(x.dtype), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    fill = torch.rand(v, 1, c, 1, 1, generator=g) * _chance(v, 0.5, g).view(v, 1, 1, 1, 1)
    out = out.view(v, t, c, h, w)
    inside = inside.view(v, 1, 1, h, w)
    return out + (1.0 - inside) * fill


def rescale(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Down- then up-scaling through a random small size: the softness of a low-resolution copy."""
    v, t, c, h, w = x.shape
    out = x.clone()
    for i in torch.nonzero(_chance(v, cfg.p_rescale, g)).flatten().tolist():
        s = int(torch.randint(cfg.min_scale, h, (1,), generator=g))
        small = F.interpolate(x[i], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        out[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def blocks(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Blockiness of a starved encoder: blend in block means (block of 2-4 px at 64 px)."""
    v, t, c, h, w = x.shape
    out = x.clone()
    for i in torch.nonzero(_chance(v, cfg.p_blocks, g)).flatten().tolist():
        b = int(torch.randint(2, 5, (1,), generator=g))
        coarse = F.interpolate(F.avg_pool2d(x[i], b, ceil_mode=True), size=(h, w), mode="nearest")
        a = float(_rand(1, g, 0.3, 0.9))
        out[i] = (1 - a) * x[i] + a * coarse
    return out


def quantise(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Few colour levels (banding): a heavily compressed or GIF-converted copy."""
    v = x.shape[0]
    levels = torch.where(_chance(v, cfg.p_quantise, g), _rand(v, g, 6, 48).floor(), torch.tensor(255.0))
    lv = levels.view(v, 1, 1, 1, 1)
    return torch.round(x * lv) / lv


def colour(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation, gamma, colour cast, hue turn; sometimes grayscale."""
    v = x.shape[0]
    on = _chance(v, cfg.p_colour, g).view(v, 1, 1, 1, 1).to(x.dtype)

    def r(lo: float, hi: float, neutral: float, shape: tuple[int, ...] = (1, 1, 1, 1)) -> Tensor:
        val = _rand(v, g, lo, hi).view(v, *shape)
        return neutral + (val - neutral) * on

    gray = (0.299 * x[:, :, 0:1] + 0.587 * x[:, :, 1:2] + 0.114 * x[:, :, 2:3])
    y = gray + (x - gray) * r(0.3, 1.6, 1.0)  # saturation
    # Hue turn: rotate the chroma plane by a small angle around the gray axis.
    ang = r(-0.5, 0.5, 0.0).view(v)
    k = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3.0)
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = (torch.eye(3) + torch.sin(ang).view(v, 1, 1) * kx
           + (1 - torch.cos(ang)).view(v, 1, 1) * (kx @ kx))
    y = torch.einsum("vij,vtjhw->vtihw", rot, y)
    cast = 1.0 + (torch.rand(v, 1, 3, 1, 1, generator=g) - 0.5) * 0.3 * on
    y = y * cast
    mean = y.mean(dim=(2, 3, 4), keepdim=True)
    y = (y - mean) * r(0.55, 1.5, 1.0) + mean + r(-0.2, 0.2, 0.0)  # contrast, brightness
    y = y.clamp(0, 1) ** r(0.65, 1.5, 1.0)  # gamma
    to_gray = _chance(v, cfg.p_gray, g).view(v, 1, 1, 1, 1)
    yg = (0.299 * y[:, :, 0:1] + 0.587 * y[:, :, 1:2] + 0.114 * y[:, :, 2:3]).expand_as(y)
    return torch.where(to_gray, yg, y).clamp(0, 1)


def blur(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Gaussian blur with one sigma per view (0 for views left sharp)."""
    v, t, c, h, w = x.shape
    sigma = _rand(v, g, 0.4, 1.6) * _chance(v, cfg.p_blur, g)
    r = 3
    offs = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-offs.view(1, -1) ** 2 / (2 * sigma.clamp_min(1e-3).view(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (V, 7); sigma ~0 gives a delta
    kk = k.repeat_interleave(t * c, dim=0)  # one kernel per (view, frame, channel) plane
    planes = x.reshape(1, v * t * c, h, w)
    planes = F.conv2d(F.pad(planes, (r, r, 0, 0), mode="replicate"), kk.view(-1, 1, 1, 2 * r + 1), groups=v * t * c)
    planes = F.conv2d(F.pad(planes, (0, 0, r, r), mode="replicate"), kk.view(-1, 1, 2 * r + 1, 1), groups=v * t * c)
    return planes.view(v, t, c, h, w)


def noise(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    v = x.shape[0]
    s = _rand(v, g, 0.0, cfg.max_noise) * _chance(v, cfg.p_noise, g)
    return (x + torch.randn(x.shape, generator=g) * s.view(v, 1, 1, 1, 1)).clamp(0, 1)


def _pattern(v: int, h: int, w: int, g: torch.Generator) -> Tensor:
    """Random blocky two-colour patterns: stand-ins for logos, text and watermarks."""
    cells = torch.rand(v, 1, 6, 6, generator=g) > 0.5
    shape = F.interpolate(cells.float(), size=(h, w), mode="nearest")
    c1, c2 = torch.rand(v, 3, 1, 1, generator=g), torch.rand(v, 3, 1, 1, generator=g)
    return shape * c1 + (1 - shape) * c2


def overlays(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """A corner logo, a caption band with text-like marks, and a faint full-frame watermark."""
    v, t, c, h, w = x.shape
    out = x.clone()
    for i in torch.nonzero(_chance(v, cfg.p_logo, g)).flatten().tolist():
        lh, lw = int(h * float(_rand(1, g, 0.1, 0.25))), int(w * float(_rand(1, g, 0.1, 0.3)))
        y0 = 1 if torch.rand(1, generator=g) < 0.5 else h - lh - 1
        x0 = 1 if torch.rand(1, generator=g) < 0.5 else w - lw - 1
        a = float(_rand(1, g, 0.5, 1.0))
        patch = _pattern(1, lh, lw, g)[0]
        out[i, :, :, y0:y0 + lh, x0:x0 + lw] = (1 - a) * out[i, :, :, y0:y0 + lh, x0:x0 + lw] + a * patch
    for i in torch.nonzero(_chance(v, cfg.p_text, g)).flatten().tolist():
        # Captions change every few frames: a new random glyph row per frame.
        bh = int(torch.randint(4, 9, (1,), generator=g))
        y0 = int(torch.randint(h // 2, h - bh, (1,), generator=g))
        x0, x1 = int(torch.randint(0, w // 4, (1,), generator=g)), int(torch.randint(3 * w // 4, w, (1,), generator=g))
        glyphs = (torch.rand(t, 1, 2, (x1 - x0) // 2 + 1, generator=g) > 0.5).float()
        glyphs = F.interpolate(glyphs, size=(bh, x1 - x0), mode="nearest")
        ink = 1.0 if torch.rand(1, generator=g) < 0.7 else 0.0
        region = out[i, :, :, y0:y0 + bh, x0:x0 + x1 - x0]
        out[i, :, :, y0:y0 + bh, x0:x1] = region * (1 - glyphs) + ink * glyphs
    wm = _chance(v, cfg.p_watermark, g)
    if wm.any():
        idx = torch.nonzero(wm).flatten()
        a = _rand(len(idx), g, 0.08, 0.3).view(-1, 1, 1, 1, 1)
        pat = _pattern(len(idx), h, w, g).unsqueeze(1)
        out[idx] = (1 - a) * out[idx] + a * pat
    return out


def boxes(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """One or two solid boxes, 60-80 % opaque, covering about a fifth of the picture together."""
    v, t, c, h, w = x.shape
    out = x.clone()
    for i in torch.nonzero(_chance(v, cfg.p_boxes, g)).flatten().tolist():
        n = 1 + int(torch.rand(1, generator=g) < 0.5)
        for _ in range(n):
            share = float(_rand(1, g, 0.15, 0.25)) / n
            aspect = float(_rand(1, g, 0.6, 1.6))
            bh = max(2, min(h - 1, int(round(h * math.sqrt(share / aspect)))))
            bw = max(2, min(w - 1, int(round(w * math.sqrt(share * aspect)))))
            y0 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
            x0 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
            a = float(_rand(1, g, 0.6, 0.8))
            fill = torch.rand(3, 1, 1, generator=g)
            region = out[i, :, :, y0:y0 + bh, x0:x0 + bw]
            out[i, :, :, y0:y0 + bh, x0:x0 + bw] = (1 - a) * region + a * fill
    return out


def rot90(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """A quarter turn either way. Frames are square (FRAME_SIZE x FRAME_SIZE), so the shape stays."""
    v, _, _, h, w = x.shape
    if h != w:
        return x
    out = x.clone()
    for i in torch.nonzero(_chance(v, cfg.p_rot90, g)).flatten().tolist():
        k = 1 if torch.rand(1, generator=g) < 0.5 else 3
        out[i] = torch.rot90(x[i], k, dims=(2, 3))
    return out


def augment_views(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """All spatial edits in the order a copy meets them: edit, overlay, re-encode, deliver."""
    x = rot90(x, cfg, g)
    x = geometry(x, cfg, g)
    x = colour(x, cfg, g)
    x = overlays(x, cfg, g)
    x = boxes(x, cfg, g)
    x = rescale(x, cfg, g)
    x = blur(x, cfg, g)
    x = blocks(x, cfg, g)
    x = quantise(x, cfg, g)
    return noise(x, cfg, g)


@dataclass(frozen=True)
class TimeConfig:
    """Time edits of a copy: its playback speed, sampling phase and jitter."""

    p_speed: float = 0.3
    max_speed: float = 0.2  # relative: 0.8x .. 1.2x (PAL speed-up is 4 %; slowed clips more)
    max_jitter: float = 0.3  # seconds a sampled frame may sit off the grid (keyframe-only decoding)


def time_view(src_times: np.ndarray, start: float, length: float, interval: float, cfg: TimeConfig,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices into densely sampled source frames, and copy timestamps, for one view of a copy.

    The copy starts at source time `start` and lasts `length` seconds of ITS time; it is sampled on
    its own grid (k * interval, shifted by a random phase); each sample shows the source frame
    nearest to start + speed * copy time, give or take a little jitter.
    """
    speed = 1.0 + rng.uniform(-cfg.max_speed, cfg.max_speed) if rng.random() < cfg.p_speed else 1.0
    phase = rng.uniform(0, interval)
    copy_t = np.arange(phase, max(length, interval), interval)
    src_t = start + speed * copy_t + rng.uniform(-cfg.max_jitter, cfg.max_jitter, len(copy_t))
    idx = np.clip(np.searchsorted(src_times, src_t), 0, len(src_times) - 1)
    prev = np.clip(idx - 1, 0, len(src_times) - 1)
    nearer_prev = np.abs(src_times[prev] - src_t) < np.abs(src_times[idx] - src_t)
    idx = np.where(nearer_prev, prev, idx)
    return idx, copy_t - phase
