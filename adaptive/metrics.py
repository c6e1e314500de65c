"""Quality metrics: latent similarity for any pair, feature similarity through a pluggable encoder,
and the Frechet distance between feature sets.

A ``Metric`` maps ``(generated, reference)`` batches to one similarity per sample, higher is better,
1.0 for identical inputs. Calibration compares a blended output with Large's output for the same
noise and prompt, which is how FlowBlending compared them (DINO similarity).

Example:
    >>> import torch
    >>> x = torch.randn(3, 4, 5)
    >>> bool(torch.allclose(LatentSimilarity()(x, x), torch.ones(3)))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F


@runtime_checkable
class Metric(Protocol):
    """``metric(generated, reference) -> (batch,)`` similarities, 1.0 when identical."""

    name: str

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor: ...


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||a - b|| / ||b||``."""
    diff = (a - b).flatten(1).float().norm(dim=1)
    return diff / b.flatten(1).float().norm(dim=1).clamp_min(1e-12)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of the flattened tensors."""
    return F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1, eps=1e-12)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-sample PSNR in dB for data spanning ``data_range`` (2.0 for [-1, 1])."""
    mse = (a - b).flatten(1).float().pow(2).mean(dim=1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


class LatentSimilarity:
    """Cosine similarity in latent space: the default metric for pairs without an encoder.

    Example:
        >>> import torch
        >>> LatentSimilarity()(torch.ones(2, 3), -torch.ones(2, 3)).round().tolist()
        [-1.0, -1.0]
    """

    name = "latent_cosine"

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return cosine(generated, reference)


def _energy_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``2 <a, b> / (|a|^2 + |b|^2)``: the cosine times how alike the two norms are (SSIM's
    contrast-structure term, taken over the whole sample): 1.0 only when equal, 0.8 for ``a = b / 2``."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    return 2 * (a * b).sum(1) / (a.pow(2).sum(1) + b.pow(2).sum(1)).clamp_min(1e-12)


class LatentStructure:
    """The default metric for pairs without a decoder or encoder: structure in latent space.

    A latent cosine calls a one-step blur "0.96 similar": the posterior mean keeps most of the energy
    and the direction. This metric scores each sample the lower of (1) the energy similarity
    ``2 <a, b> / (|a|^2 + |b|^2)`` of the latents (a faded sample loses) and (2) the mean energy
    similarity of their finite differences along every axis after the channels (frames, height,
    width: the local structure that blur removes and a shift or a tear breaks). Latents without such
    axes (``(batch, dim)``) are scored by (1) alone.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)).cumsum(-1).cumsum(-2)
        >>> LatentStructure()(x, x).tolist()
        [1.0, 1.0]
        >>> blurred = torch.nn.functional.avg_pool3d(x, (1, 5, 5), stride=1, padding=(0, 2, 2))
        >>> bool(LatentSimilarity()(blurred, x).min() > 0.9), bool(LatentStructure()(blurred, x).max() < 0.6)
        (True, True)
    """

    name = "latent_structure"

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if generated.shape != reference.shape:
            raise ValueError(f"latent_structure compares latents of one shape; got {tuple(generated.shape)} and "
                             f"{tuple(reference.shape)}")
        whole = _energy_similarity(generated, reference)
        axes = [d for d in range(2, generated.ndim) if generated.shape[d] > 1]
        if not axes:
            return whole
        detail = torch.stack([_energy_similarity(generated.diff(dim=d), reference.diff(dim=d)) for d in axes])
        return torch.minimum(whole, detail.mean(0))


class FeatureSimilarity:
    """Cosine similarity of encoder features (the DINO-similarity analogue).

    ``encode`` maps a batch of decoded samples (or latents) to ``(batch, dim)`` features.

    Example:
        >>> import torch
        >>> metric = FeatureSimilarity(lambda v: v.flatten(1)[:, :2], name="first_two")
        >>> metric(torch.tensor([[1.0, 0.0, 5.0]]), torch.tensor([[2.0, 0.0, -5.0]])).tolist()
        [1.0]
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], name: str = "feature_cosine") -> None:
        self.encode = encode
        self.name = name

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(self.encode(generated).float(), self.encode(reference).float(), dim=1)


class StructuralSimilarity:
    """Per-frame SSIM (torchmetrics' implementation), averaged over frames: 1.0 when identical.

    The pooled feature cosine of an encoder can call a smeared, doubled or torn video "similar":
    its pooled features still say "a 3 moving left". SSIM compares local luminance, contrast and
    structure at every pixel window, so it fails what a person would reject. Inputs are images
    ``(batch, channels, h, w)`` or videos ``(batch, channels, frames, h, w)`` spanning
    ``data_range`` (2.0 for [-1, 1]); latents of real pairs should be decoded first.

    Example:
        >>> import torch
        >>> video = torch.rand(2, 1, 3, 16, 16) * 2 - 1
        >>> StructuralSimilarity()(video, video).tolist()
        [1.0, 1.0]
        >>> bool(StructuralSimilarity()(video.flip(-1), video)[0] < 0.5)   # mirrored: structure lost
        True
    """

    name = "ssim"

    def __init__(self, data_range: float = 2.0, kernel_size: int = 11) -> None:
        self.data_range, self.kernel_size = float(data_range), int(kernel_size)

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        from torchmetrics.functional.image import structural_similarity_index_measure

        if generated.shape != reference.shape or generated.ndim not in (4, 5):
            raise ValueError(f"SSIM compares images (b, c, h, w) or videos (b, c, f, h, w) of one shape; got "
                             f"{tuple(generated.shape)} and {tuple(reference.shape)}")
        batch = generated.shape[0]
        frames = [t.float().cpu() for t in (generated, reference)]
        if generated.ndim == 5:  # torchmetrics reads 5-D input as volumes: compare frame by frame
            frames = [t.transpose(1, 2).flatten(0, 1) for t in frames]
        if min(generated.shape[-2:]) < 3:
            raise ValueError(f"SSIM needs frames of at least 3x3 pixels, got {tuple(generated.shape[-2:])}")
        size = min(self.kernel_size, *generated.shape[-2:])
        size -= 1 - size % 2  # an odd window that fits the frame
        # torchmetrics sizes a Gaussian window from its sigma (11 pixels at the standard 1.5)
        values = structural_similarity_index_measure(frames[0], frames[1], data_range=self.data_range,
                                                     sigma=1.5 * size / 11, reduction="none")
        return values.reshape(batch, -1).mean(dim=1)


class WorstOf:
    """Several metrics at once: each sample scores the lowest of them, so a sample passes a target
    only if it passes on every metric (e.g. the same content *and* the same structure).

    Example:
        >>> import torch
        >>> first = FeatureSimilarity(lambda v: v[:, :1], name="first")
        >>> both = WorstOf(first, LatentSimilarity())
        >>> both.name, both(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, -1.0]])).tolist()
        ('min(first,latent_cosine)', [0.0])
    """

    def __init__(self, *metrics: Metric) -> None:
        if not metrics:
            raise ValueError("WorstOf needs at least one metric")
        self.metrics = metrics
        self.name = "min(" + ",".join(getattr(m, "name", type(m).__name__) for m in metrics) + ")"

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        scores = [m(generated, reference).float().cpu() for m in self.metrics]
        return torch.stack(scores).min(dim=0).values

    def parts(self, generated: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each metric's own per-sample scores, by name (for reports)."""
        return {getattr(m, "name", type(m).__name__): m(generated, reference).float().cpu() for m in self.metrics}


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID/FVD formula).

    Example:
        >>> import numpy as np
        >>> a = np.random.default_rng(0).normal(size=(500, 2))
        >>> round(frechet_distance(a, a), 6), round(frechet_distance(a, a + [3.0, 0.0]), 3)
        (0.0, 9.0)
    """
    from scipy import linalg

    a = np.asarray(features_a.detach().cpu() if isinstance(features_a, torch.Tensor) else features_a, np.float64)
    b = np.asarray(features_b.detach().cpu() if isinstance(features_b, torch.Tensor) else features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError("frechet_distance needs two (n >= 2, dim) feature arrays of the same dim")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
    return max(value, 0.0)


class VisionModelFeatures:
    """Per-frame features from a transformers vision backbone (``Dinov2Model``, ``CLIPVisionModel``),
    averaged over frames: use with :class:`FeatureSimilarity` for real pairs after VAE decoding.

    Videos are ``(batch, channels, frames, h, w)`` in [-1, 1]; one channel is repeated to three and
    frames are resized to the backbone's ``image_size``.
    """

    def __init__(self, model: torch.nn.Module, mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:
        self.model = model.eval()
        self.size = int(getattr(model.config, "image_size", 224))
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        n, c, f, h, w = videos.shape
        frames = videos.transpose(1, 2).reshape(n * f, c, h, w).float()
        frames = frames.expand(-1, 3, -1, -1) if c == 1 else frames
        frames = F.interpolate((frames + 1) / 2, size=(self.size, self.size), mode="bilinear", align_corners=False)
        param = next(self.model.parameters())
        pixels = ((frames - self.mean) / self.std).to(param.device, param.dtype)
        out = self.model(pixel_values=pixels)
        pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]
        return pooled.float().reshape(n, f, -1).mean(1)
