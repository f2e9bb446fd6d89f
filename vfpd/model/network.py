"""FingerprintNet: a light CNN turns each 64x64 frame into a 128-d feature; a small temporal
transformer over those features gives one 256-d L2-normalised embedding per video."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from vfpd.atomic import atomic_writer
from vfpd.fingerprint import FRAME_DIM, VECTOR_DIM
from vfpd.model.version import WeightsError

CONTRAST_EPS = 0.04
"""Added to a frame's standard deviation (pixel values in [0, 1]) before dividing by it: large
enough that the noise of a nearly flat frame is not blown up to full contrast, small enough that
a dim but detailed frame still is."""

TIME_BUCKET_BASE = 0.5
"""Seconds covered by the first time-difference bucket; buckets then double (0.5, 1, 2, 4 s ...)
so a 20 % speed change rarely moves a pair of frames into another bucket."""


@dataclass(frozen=True)
class NetConfig:
    """Sizes of the network; stored in every weights file so loading needs no other knowledge."""

    channels: tuple[int, ...] = (24, 48, 96, 160)  # CNN widths at 32, 16, 8, 4 pixels
    frame_dim: int = FRAME_DIM
    video_dim: int = VECTOR_DIM
    model_dim: int = 128  # width of the temporal model
    heads: int = 4
    layers: int = 2  # self-attention blocks
    temporal_kernels: tuple[int, ...] = (3, 5, 9)  # multi-scale temporal convolutions, in samples
    time_buckets: int = 12  # per sign: 0.5 s .. 0.5*2^10 s, and one bucket for everything longer
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**kw)


def normalise_frames(x: Tensor) -> Tensor:
    """(N, 3, H, W) floats in [0, 1] -> zero mean per channel, unit contrast per frame.

    Removing each channel's mean cancels brightness shifts and colour casts; dividing by one
    contrast shared by all channels cancels contrast changes but keeps how colourful a frame is.
    """
    x = x - x.mean(dim=(2, 3), keepdim=True)
    std = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return x / (std + CONTRAST_EPS)


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FrameEncoder(nn.Module):
    """64x64 RGB frame -> L2-normalised 128-d feature, computed from the frame alone.

    The frame and its mirror image go through the same CNN and their pooled maps are summed, so
    a horizontally flipped copy gets exactly the same feature.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        c = cfg.channels
        # Few layers at high resolution (memory-bound on CPU), the depth at 8x8.
        self.cnn = nn.Sequential(
            _conv(3, c[0], 3, 2),  # 32x32
            _conv(c[0], c[1], 3, 2),  # 16x16
            _conv(c[1], c[2], 3, 2),  # 8x8
            _conv(c[2], c[2], 3, 1),
            _conv(c[2], c[3], 3, 2),  # 4x4
        )
        pooled = c[3] * (2 + 4)  # global mean + global max + 2x2 regional means
        self.head = nn.Sequential(nn.Linear(pooled, 2 * cfg.frame_dim), nn.ReLU(inplace=True),
                                  nn.Linear(2 * cfg.frame_dim, cfg.frame_dim))

    def fuse_for_inference(self) -> None:
        """Fold each batch norm into its convolution (eval only: the statistics freeze)."""
        for block in self.cnn:
            if isinstance(block[1], nn.BatchNorm2d):
                block[0] = fuse_conv_bn_eval(block[0].eval(), block[1].eval())
                block[1] = nn.Identity()

    def _pool(self, m: Tensor) -> Tensor:
        return torch.cat([m.mean(dim=(2, 3)), m.amax(dim=(2, 3)),
                          F.adaptive_avg_pool2d(m, 2).flatten(1)], dim=1)

    def forward(self, frames: Tensor) -> Tensor:
        """frames: (N, 3, 64, 64) floats in [0, 1] -> (N, frame_dim), rows of unit length."""
        x = normalise_frames(frames)
        n = x.shape[0]
        # channels_last runs the convolutions about twice as fast on CPU (oneDNN's native layout).
        both = torch.cat([x, x.flip(-1)], dim=0).contiguous(memory_format=torch.channels_last)
        pooled = self._pool(self.cnn(both))
        return F.normalize(self.head(pooled[:n] + pooled[n:]), dim=-1)


class TemporalConv(nn.Module):
    """Depthwise convolutions over time at several widths, summed into a residual update."""

    def __init__(self, dim: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, k, padding=k // 2, groups=dim) for k in kernels)
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim * len(kernels), dim)

    @staticmethod
    def _depthwise(x: Tensor, conv: nn.Conv1d) -> Tensor:
        """conv(x) for (B, T, C) input, as a sum of shifted copies: the same arithmetic as the
        depthwise Conv1d that holds the weights, but oneDNN's depthwise 1-D kernel is ~20x slower."""
        k, t = conv.kernel_size[0], x.shape[1]
        xp = F.pad(x, (0, 0, k // 2, k // 2))
        w = conv.weight[:, 0, :]  # (C, k)
        y = conv.bias + xp[:, 0:t] * w[:, 0]
        for j in range(1, k):
            y = y + xp[:, j:j + t] * w[:, j]
        return y

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        x = self.norm(h) * mask.unsqueeze(-1)  # padding contributes zeros
        y = torch.cat([self._depthwise(x, conv) for conv in self.convs], dim=-1)
        return h + self.mix(F.gelu(y))


class AttentionBlock(nn.Module):
    """Pre-norm self-attention whose scores get a learned bias per head and time-difference bucket."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        d = cfg.model_dim
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.time_bias = nn.Embedding(2 * cfg.time_buckets + 1, cfg.heads)
        nn.init.zeros_(self.time_bias.weight)

    def forward(self, h: Tensor, buckets: Tensor, key_pad: Tensor) -> Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.time_bias(buckets).permute(0, 3, 1, 2)  # (B, heads, T, T)
        bias = bias.masked_fill(key_pad[:, None, None, :], float("-inf"))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=self.drop.p if self.training else 0.0)
        h = h + self.drop(self.out(a.transpose(1, 2).reshape(b, t, d)))
        return h + self.drop(self.ffn(self.norm2(h)))


def time_buckets(timestamps: Tensor, n: int) -> Tensor:
    """(B, T) seconds -> (B, T, T) signed log-scale buckets of t_j - t_i, shifted to be >= 0.

    Position enters only as time DIFFERENCES in seconds: a copy trimmed at the start has every
    absolute timestamp shifted, but the same differences, so its embedding does not move.
    """
    dt = timestamps.unsqueeze(1) - timestamps.unsqueeze(2)
    mag = torch.log2(dt.abs().clamp_min(1e-6) / TIME_BUCKET_BASE).floor().add(1).clamp(0, n - 1)
    return (torch.sign(dt) * mag).long() + n


class FingerprintNet(nn.Module):
    """Frames -> per-frame features (kept for verification) -> one video embedding (for retrieval)."""

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or NetConfig()
        d = cfg.model_dim
        self.frames = FrameEncoder(cfg)
        self.inp = nn.Linear(cfg.frame_dim, d)
        self.tconv = TemporalConv(d, cfg.temporal_kernels)
        self.blocks = nn.ModuleList(AttentionBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.score = nn.Linear(d, 1)  # learned per-frame weight for the weighted pooling
        self.proj = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, cfg.video_dim))

    def frame_features(self, frames: Tensor) -> Tensor:
        """(N, 3, 64, 64) floats in [0, 1] -> (N, frame_dim) unit rows."""
        return self.frames(frames)

    def video_embedding(self, feats: Tensor, timestamps: Tensor, mask: Tensor) -> Tensor:
        """feats (B, T, frame_dim), timestamps (B, T) seconds, mask (B, T) True where a frame is
        real (each row needs at least one) -> (B, video_dim) unit rows."""
        m = mask.to(feats.dtype)
        h = self.tconv(self.inp(feats), m)
        buckets = time_buckets(timestamps.float(), self.cfg.time_buckets)
        for block in self.blocks:
            h = block(h, buckets, ~mask)
        h = self.norm(h)
        count = m.sum(dim=1, keepdim=True).clamp_min(1.0)
        mean = (h * m.unsqueeze(-1)).sum(dim=1) / count
        big = torch.finfo(h.dtype).max
        mx = h.masked_fill(~mask.unsqueeze(-1), -big).amax(dim=1)
        w = torch.softmax(self.score(h).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
        weighted = (w.unsqueeze(-1) * h).sum(dim=1)
        return F.normalize(self.proj(torch.cat([mean, mx, weighted], dim=1)).float(), dim=-1)

    def forward(self, frames: Tensor, timestamps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """frames (B, T, 3, 64, 64) -> (video embeddings (B, video_dim), frame features (B, T, frame_dim))."""
        b, t = frames.shape[:2]
        flat = mask.reshape(-1)
        # Only real frames go through the CNN (padding is often a third of a training batch).
        real = self.frame_features(frames.reshape(b * t, *frames.shape[2:])[flat])
        feats = real.new_zeros(b * t, real.shape[1]).index_copy(0, torch.nonzero(flat).flatten(), real)
        feats = feats.view(b, t, -1)
        return self.video_embedding(feats, timestamps, mask), feats


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


WEIGHTS_FORMAT = "vfpd-fingerprint-net/1"
"""Tag of the weights/checkpoint dictionary layout; bumped when the layout changes."""


def save_weights(path: Path, model: FingerprintNet, meta: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
    """Write the model (and, for training checkpoints, `extra` state) atomically to `path`."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": WEIGHTS_FORMAT, "config": model.cfg.to_dict(), "model": state,
            "meta": dict(meta or {}), **(extra or {})}
    with atomic_writer(path) as f:
        torch.save(blob, f)


def load_blob(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dictionary stored by save_weights, checked; plain tensors only (weights_only=True), so
    a file from elsewhere cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no weights file there (train one with `vfpctl train`)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path}: not a vfpd fingerprint-network file (format tag missing or different)")
    return blob


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[FingerprintNet, dict[str, Any]]:
    """(model in eval mode on `map_location`, the file's meta) from a weights or checkpoint file."""
    blob = load_blob(path, map_location)
    model = FingerprintNet(NetConfig.from_dict(blob["config"]))
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not fit the network they describe: {e}") from None
    return model.to(map_location).eval(), dict(blob.get("meta") or {})
