"""Why the Frechet distance falls with fewer Large steps: the brightness of the ink each sampler draws.

    python scripts/ink_levels.py --videos 32 --steps 5,10,30

Prints, for real held-out videos and for Large at each step count (same prompts and noise as
scripts/evaluate_pair.py), the share of pixels that are ink (> -0.8) and how the ink's values spread
over brightness bins, and the squared distance between the mean encoder features and the real ones
(the mean term of the Frechet distance), split into the motion and appearance halves.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from adaptive.toy import generate, load_pair
from adaptive.toy.data import make_videos
from adaptive.toy.harness import Harness
from evaluate_pair import heldout_prompts

BINS = np.array([-0.8, -0.4, 0.0, 0.4, 0.8, 1.0001])
MOTION_DIM = 128  # the encoder's features are [motion (128), appearance (64)]


def ink_levels(videos: torch.Tensor) -> tuple[float, np.ndarray]:
    """(share of pixels that are ink, share of ink pixels in each brightness bin)."""
    pixels = videos.float().clamp(-1, 1).flatten().numpy()
    ink = pixels[pixels > BINS[0]]
    return len(ink) / len(pixels), np.histogram(ink, BINS)[0] / max(1, len(ink))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--steps", default="5,10,30")
    args = parser.parse_args()
    pair, _ = load_pair()
    harness = Harness()
    prompts, _, _ = heldout_prompts(args.videos)
    seeds = list(range(1000, 1000 + args.videos))
    real = torch.from_numpy(make_videos(512, np.random.default_rng(12345), "heldout", variant=harness.variant).videos)
    rows = {"real held-out videos": real}
    for k in (int(s) for s in args.steps.split(",")):
        rows[f"Large, {k} steps"] = generate(pair, prompts, seeds, num_steps=k)
    real_mean = harness.real_features().mean(0)
    bins = " | ".join(f"{a:+.1f}..{b:+.1f}" for a, b in zip(BINS, BINS[1:]))
    print(f"| videos | ink share | {bins} | mean-feature gap: motion | appearance |")
    print("|---|---:|" + "---:|" * (len(BINS) + 1))
    for name, videos in rows.items():
        share, spread = ink_levels(videos)
        gap = (harness.features(videos).numpy().mean(0) - real_mean) ** 2
        print(f"| {name} | {share:.3f} | " + " | ".join(f"{v:.3f}" for v in spread)
              + f" | {gap[:MOTION_DIM].sum():.1f} | {gap[MOTION_DIM:].sum():.1f} |")


if __name__ == "__main__":
    main()
