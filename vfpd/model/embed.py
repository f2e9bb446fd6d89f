"""Embedder: sampled frames -> Fingerprint, with the network loaded lazily and batched across videos."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from vfpd.detail import still_pictures
from vfpd.fingerprint import Fingerprint
from vfpd.media import SampledVideo
from vfpd.model.center import center_of
from vfpd.model.network import FingerprintNet, load_blob, load_model
from vfpd.model.version import DEFAULT_WEIGHTS, weights_version

DEFAULT_BATCH_FRAMES = 256
"""Frames per forward pass of the CNN: large enough to keep the cores busy, small enough that
activations stay around 100 MB on a CPU."""

MAX_SEQUENCE_FRAMES = 2048
"""Frames per forward pass of the temporal model (summed over the videos in it): its attention
memory grows with the square of each video's length, and media caps one video at 512 samples."""

CPU_THREADS = 1
"""Intra-op threads of the model on a CPU. One: the embedder runs while the decode workers keep
the other cores busy, and OpenMP threads that wait for a busy core spin. Measured on the 2 shared
cores with decoding running beside it: 602 frames in 0.63-1.0 s with one thread, 2.9-3.8 s with
two; 19 frames in 0.02-0.05 s with one, 0.5-0.8 s with two."""

def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; "cpu"/"cuda" as asked (asking for absent CUDA is an error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU (CPU build or no driver)")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    return torch.device(device)


def frames_to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float in [0, 1] on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def pooling_mask(informative: np.ndarray) -> np.ndarray:
    """Frames the video vector is pooled over: the informative ones, or all when none is (a video
    that is all black still gets a vector; the matcher never confirms a match on such frames)."""
    return informative if informative.any() else np.ones_like(informative)


class Embedder:
    """Turns SampledVideo into Fingerprint. Thread-safe; the model is loaded on first use."""

    def __init__(self, weights: Path | None = None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH_FRAMES, version_suffix: str = "",
                 cpu_threads: int = CPU_THREADS) -> None:
        """version_suffix names how the frames were sampled when that is not the default
        (vfpd/presets.py): it becomes part of every fingerprint's model version.
        cpu_threads: torch's intra-op threads when the model runs on the CPU (process-wide)."""
        if cpu_threads < 1:
            raise ValueError("cpu_threads must be at least 1")
        self.cpu_threads = cpu_threads
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.weights = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model_version = weights_version(self.weights) + version_suffix
        self._lock = threading.Lock()
        self._model: FingerprintNet | None = None
        self._center: tuple[np.ndarray | None] | None = None

    @property
    def frame_center(self) -> np.ndarray | None:
        """The model's background frame feature (weights meta "frame_center", see
        vfpd.model.center): what the frame index centres the frames it stores with. None for
        weights that carry none (frames are then stored as they are)."""
        if self._center is None:
            self._center = (center_of(load_blob(self.weights)),)
        return self._center[0]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _get_model(self) -> FingerprintNet:
        if self._model is None:
            if self.device.type == "cpu":
                torch.set_num_threads(self.cpu_threads)
            model, _ = load_model(self.weights, self.device)
            model.frames.fuse_for_inference()
            self._model = model
        return self._model

    def unload(self) -> None:
        """Free the model (and GPU memory); the next embed loads it again."""
        with self._lock:
            self._model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def embed(self, video: SampledVideo) -> Fingerprint:
        return self.embed_many([video])[0]

    def embed_many(self, videos: list[SampledVideo]) -> list[Fingerprint]:
        """Fingerprints of several videos, their frames batched together through the CNN."""
        for v in videos:
            if len(v.frames) == 0:
                raise ValueError("a sampled video without frames cannot be fingerprinted")
        if not videos:
            return []
        with self._lock, torch.inference_mode():
            model = self._get_model()
            frames = np.concatenate([v.frames for v in videos])
            feats = torch.cat([model.frame_features(frames_to_tensor(frames[i:i + self.batch_size], self.device))
                               for i in range(0, len(frames), self.batch_size)])
            per_video = torch.split(feats, [len(v.frames) for v in videos])
            vectors = self._video_vectors(model, videos, per_video)
        return [
            # Frame features at the precision the catalog keeps them (codecs.frames_blob): a
            # fingerprint fresh from the model compares exactly as one read back from the catalog
            # or a cache, so the scan and the daemon align a pair alike even where many
            # alignments fit almost equally (a still picture fits at any offset).
            Fingerprint(vector=vec, frame_features=f.half().float().cpu().numpy(),
                        timestamps=np.asarray(v.timestamps, dtype=np.float64),
                        informative=np.asarray(v.informative, dtype=bool), duration=float(v.duration),
                        model_version=self.model_version,
                        stills=still_pictures(v.frames, v.informative))
            for v, f, vec in zip(videos, per_video, vectors)
        ]

    def _video_vectors(self, model: FingerprintNet, videos: list[SampledVideo],
                       feats: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        group: list[tuple[torch.Tensor, np.ndarray]] = []
        total = 0

        def flush() -> None:
            t = max(len(ts) for _, ts in group)
            b = len(group)
            x = torch.zeros(b, t, feats[0].shape[1], device=self.device)
            ts = torch.zeros(b, t, device=self.device)
            mask = torch.zeros(b, t, dtype=torch.bool, device=self.device)
            for i, (f, stamps) in enumerate(group):
                x[i, :len(f)] = f
                ts[i, :len(f)] = torch.from_numpy(stamps).float()
                mask[i, :len(f)] = True
            out.extend(model.video_embedding(x, ts, mask).cpu().numpy().astype(np.float32))
            group.clear()

        for v, f in zip(videos, feats):
            keep = pooling_mask(np.asarray(v.informative, dtype=bool))
            sel = (f[torch.from_numpy(keep).to(f.device)], np.asarray(v.timestamps)[keep])
            if group and total + len(sel[1]) > MAX_SEQUENCE_FRAMES:
                flush()
                total = 0
            group.append(sel)
            total += len(sel[1])
        flush()
        return out
