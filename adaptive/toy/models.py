"""Configs of the embedded Large/Small pair (Wan 2.1 architecture) and the quality encoder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adaptive.toy.data import CANVAS, DIGIT_WORDS, DIRECTION_NAMES, FRAMES, TEXT_DIM

# Same channels, patch and text_dim for both, as Wan 2.1 1.3B / 14B share them; the gap is width
# and depth. Patch (2, 4, 4) on 8x32x32 gives 4x8x8 = 256 tokens.
_SHARED = dict(
    patch_size=(2, 4, 4),
    in_channels=1,
    out_channels=1,
    text_dim=TEXT_DIM,
    freq_dim=64,
    rope_max_seq_len=64,
    qk_norm="rms_norm_across_heads",
    cross_attn_norm=True,
)
LARGE_CONFIG = dict(_SHARED, num_attention_heads=4, attention_head_dim=64, ffn_dim=768, num_layers=6)
SMALL_CONFIG = dict(_SHARED, num_attention_heads=2, attention_head_dim=64, ffn_dim=256, num_layers=3)
SAMPLE_SHAPE = (1, FRAMES, CANVAS, CANVAS)
WEIGHTS_DIR = Path(__file__).parent / "weights"  # the shipped pair and encoder (safetensors)


def build_transformer(size: str, seed: int = 0):
    """A freshly initialised ``WanTransformer3DModel`` for ``size`` in {"large", "small"}."""
    from diffusers import WanTransformer3DModel

    configs = {"large": LARGE_CONFIG, "small": SMALL_CONFIG}
    if size not in configs:
        raise ValueError(f"size must be 'large' or 'small', got {size!r}")
    torch.manual_seed(seed)
    return WanTransformer3DModel(**configs[size])


class VideoEncoder(nn.Module):
    """A small video encoder that reads digit and direction; its features are the embedded pair's
    stand-in for DINO/CLIP features.

    Features are a motion part (a 3D CNN over the clip) and an appearance part (a 2D CNN per frame,
    averaged over frames); per-frame digit logits measure temporal coherence.
    """

    feature_dim = 192

    def __init__(self) -> None:
        super().__init__()
        self.motion = nn.Sequential(
            nn.Conv3d(1, 32, kernel_size=3, padding=1, stride=(1, 2, 2)), nn.SiLU(),
            nn.Conv3d(32, 64, kernel_size=3, padding=1, stride=(2, 2, 2)), nn.SiLU(),
            nn.Conv3d(64, 128, kernel_size=3, padding=1, stride=(2, 2, 2)), nn.SiLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        self.appearance = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, stride=2), nn.SiLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.SiLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.SiLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.digit_head = nn.Linear(self.feature_dim, len(DIGIT_WORDS))
        self.direction_head = nn.Linear(self.feature_dim, len(DIRECTION_NAMES))
        self.frame_digit_head = nn.Linear(64, len(DIGIT_WORDS))
        # Reads the grain variant's per-video contrast; encoders trained on plain data lack it.
        self.grain_head = nn.Linear(self.feature_dim, 1)
        self.reads_grain = True

    def _frames(self, videos: torch.Tensor) -> torch.Tensor:
        n, c, f, h, w = videos.shape
        return self.appearance(videos.transpose(1, 2).reshape(n * f, c, h, w)).reshape(n, f, -1)

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """(n, 192) features of (n, 1, frames, h, w) videos in [-1, 1]."""
        return torch.cat([self.motion(videos), self._frames(videos).mean(1)], dim=1)

    def forward(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Digit logits (n, 10) and direction logits (n, 8)."""
        feats = self.features(videos)
        return self.digit_head(feats), self.direction_head(feats)

    def grain(self, videos: torch.Tensor) -> torch.Tensor:
        """Predicted grain contrast (n,) of each video (meaningful only if ``reads_grain``)."""
        return self.grain_from_features(self.features(videos))

    def grain_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted grain contrast (n,) from features already computed by :meth:`features`."""
        return self.grain_head(features).squeeze(1)

    def frame_digit_logits(self, videos: torch.Tensor) -> torch.Tensor:
        """Per-frame digit logits (n, frames, 10), for temporal coherence."""
        return self.frame_digit_head(self._frames(videos))
