"""The embedded pair's quality harness: our own DINO/CLIP/FVD analogues from a video encoder trained
on real moving-digit videos (no vision backbone can be downloaded here).

- feature similarity: cosine of encoder features between a video and a reference (DINO similarity);
- Frechet distance of encoder features between a generated set and real videos (FVD);
- prompt alignment: accuracy of the prompted digit and direction (CLIP score);
- temporal coherence: share of frames whose digit agrees with the video's majority digit, and motion
  smoothness (mean acceleration of the ink's centre of mass, in pixels per frame squared);
- sharpness: mean distance of pixels from mid-grey (blurry, averaged videos score low);
- grain (grain data variant only): the encoder's reading of the per-video grain contrast, which
  sampling that stops refining early leaves averaged out.

Example:
    >>> import numpy as np, torch
    >>> from adaptive.toy.data import make_videos
    >>> harness = Harness()
    >>> real = make_videos(8, np.random.default_rng(0), "heldout")
    >>> v = torch.from_numpy(real.videos)
    >>> float(harness.similarity(v, v).min()) > 0.999
    True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adaptive.metrics import FeatureSimilarity, frechet_distance
from adaptive.toy.data import GRAINED, make_videos, variant_of
from adaptive.toy.models import WEIGHTS_DIR, VideoEncoder


def load_encoder(path: Path | str | None = None, device: str | torch.device = "cpu") -> VideoEncoder:
    """The shipped video encoder (safetensors only)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS_DIR / "encoder.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no encoder weights at {path}; train them with "
                                "`python -m adaptive.toy.train encoder`")
    encoder = VideoEncoder()
    missing, unexpected = encoder.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or any(not key.startswith("grain_head.") for key in missing):
        raise ValueError(f"{path} is not a VideoEncoder state dict (missing {missing}, unexpected {unexpected})")
    encoder.reads_grain = not missing  # encoders trained on plain data have no grain head
    return encoder.to(device).eval().requires_grad_(False)


def _centroids(videos: torch.Tensor) -> torch.Tensor:
    ink = ((videos[:, 0] + 1) / 2).clamp(0, 1)  # (n, f, h, w)
    mass = ink.sum((2, 3)).clamp_min(1e-6)
    ys = torch.arange(ink.shape[2], dtype=ink.dtype)
    xs = torch.arange(ink.shape[3], dtype=ink.dtype)
    cy = (ink.sum(3) * ys).sum(2) / mass
    cx = (ink.sum(2) * xs).sum(2) / mass
    return torch.stack([cy, cx], dim=-1)  # (n, f, 2)


class Harness:
    """Quality numbers for moving-digit videos ``(n, 1, frames, 32, 32)`` in [-1, 1].

    ``variant`` is the data variant of the real videos the Frechet distance compares with; by default
    the one the shipped weights were trained on.
    """

    def __init__(self, encoder: VideoEncoder | None = None, batch: int = 128, variant: str | None = None) -> None:
        self.encoder = encoder if encoder is not None else load_encoder()
        self.variant = variant if variant is not None else variant_of(WEIGHTS_DIR)
        self.batch = batch
        self.similarity = FeatureSimilarity(self.features, name="toy_feature_cosine")
        self._real: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """Encoder features (n, 192)."""
        videos = videos.float().cpu().clamp(-1, 1)
        return torch.cat([self.encoder.features(videos[i:i + self.batch]) for i in range(0, len(videos), self.batch)])

    def real_features(self, n: int = 512, seed: int = 12345) -> np.ndarray:
        """Features of ``n`` real held-out videos (cached)."""
        if n not in self._real:
            real = make_videos(n, np.random.default_rng(seed), "heldout", variant=self.variant)
            self._real[n] = self.features(torch.from_numpy(real.videos)).numpy()
        return self._real[n]

    def frechet(self, videos: torch.Tensor, real: int = 512) -> float:
        """Frechet distance of encoder features to ``real`` held-out real videos."""
        return frechet_distance(self.features(videos).numpy(), self.real_features(real))

    @torch.no_grad()
    def alignment(self, videos: torch.Tensor, digits: np.ndarray, directions: np.ndarray) -> tuple[float, float]:
        """Accuracy of (prompted digit, prompted direction) as read by the encoder."""
        videos = videos.float().cpu().clamp(-1, 1)
        digit_logits, direction_logits = self.encoder(videos)
        return (float((digit_logits.argmax(1).numpy() == np.asarray(digits)).mean()),
                float((direction_logits.argmax(1).numpy() == np.asarray(directions)).mean()))

    @torch.no_grad()
    def coherence(self, videos: torch.Tensor) -> tuple[float, float]:
        """(share of frames agreeing with the majority digit, mean |acceleration| of the centroid)."""
        videos = videos.float().cpu().clamp(-1, 1)
        per_frame = self.encoder.frame_digit_logits(videos).argmax(-1)  # (n, f)
        majority = per_frame.mode(dim=1).values
        agreement = float((per_frame == majority[:, None]).float().mean())
        accel = _centroids(videos).diff(dim=1).diff(dim=1).norm(dim=-1)
        return agreement, float(accel.mean())

    @torch.no_grad()
    def grain(self, videos: torch.Tensor) -> float:
        """Mean grain contrast the encoder reads (the grain variant's videos have 0.3-0.6)."""
        if not self.encoder.reads_grain:
            raise ValueError("this encoder was trained on plain data and cannot read grain; train one with "
                             "`python -m adaptive.toy.train encoder --data grain`")
        return float(self.encoder.grain_from_features(self.features(videos)).mean())

    @staticmethod
    def sharpness(videos: torch.Tensor) -> float:
        """Mean |pixel| in [-1, 1]: 1 for pure black/white, lower for grey, blurry videos."""
        return float(videos.float().clamp(-1, 1).abs().mean())

    def report(self, videos: torch.Tensor, digits: np.ndarray, directions: np.ndarray,
               reference: torch.Tensor | None = None) -> dict[str, float]:
        """All quality numbers in one dict (feature similarity only with a ``reference`` batch)."""
        digit_acc, direction_acc = self.alignment(videos, digits, directions)
        agreement, accel = self.coherence(videos)
        out = {"frechet": self.frechet(videos), "digit_acc": digit_acc, "direction_acc": direction_acc,
               "frame_agreement": agreement, "centroid_accel": accel, "sharpness": self.sharpness(videos)}
        if self.variant in GRAINED and self.encoder.reads_grain:
            out["grain"] = self.grain(videos)
        if reference is not None:
            out["feature_sim"] = float(self.similarity(videos, reference).mean())
        return out
