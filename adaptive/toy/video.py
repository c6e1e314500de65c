"""Write moving-digit videos as pictures a person can look at: a PNG strip and animated GIFs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def _frames(video: torch.Tensor) -> np.ndarray:
    """(1, f, h, w) in [-1, 1] -> (f, h, w) uint8."""
    return (((video[0].float().clamp(-1, 1) + 1) / 2) * 255).round().byte().cpu().numpy()


def save_gif(path: Path | str, video: torch.Tensor, scale: int = 4, ms_per_frame: int = 150) -> None:
    """One video as an animated GIF, upscaled ``scale`` times."""
    from PIL import Image

    frames = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
              for f in _frames(video)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)


def save_strip(path: Path | str, rows: Mapping[str, torch.Tensor], captions: Sequence[str] | None = None) -> None:
    """A grid: one block of rows per label, each video's frames left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(v) for v in rows.values())
    frames = next(iter(rows.values())).shape[2]
    fig, axes = plt.subplots(n * len(rows), 1, figsize=(frames * 0.9, n * len(rows) * 1.05), squeeze=False)
    for block, (label, videos) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[block * n + i, 0]
            ax.axis("off")
            if i < len(videos):
                ax.imshow(np.concatenate(list(_frames(videos[i])), axis=1), cmap="gray", vmin=0, vmax=255)
                caption = captions[i] if captions is not None and i < len(captions) else ""
                ax.set_title(f"{label}: {caption}", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_side_by_side(path: Path | str, columns: Mapping[str, torch.Tensor],
                      captions: Sequence[str] | None = None) -> None:
    """One row per video (prompt and seed), one column per method: the same sample's frames side
    by side, so a person compares methods on the same noise and prompt at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(v) for v in columns.values())
    frames = next(iter(columns.values())).shape[2]
    fig, axes = plt.subplots(n, len(columns), figsize=(frames * 0.55 * len(columns), n * 0.8 + 0.4),
                             squeeze=False)
    for col, (label, videos) in enumerate(columns.items()):
        for i in range(n):
            ax = axes[i, col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(np.concatenate(list(_frames(videos[i])), axis=1), cmap="gray", vmin=0, vmax=255)
            if i == 0:
                ax.set_title(label, fontsize=8)
            if col == 0 and captions is not None and i < len(captions):
                ax.set_ylabel(captions[i], fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
