"""Does the default latent metric fail what the pair's own metric fails? (issue #26 item 1)

    python scripts/metric_steps.py [--steps 12]

Large with k of ``--steps`` Euler steps (shift 3, guidance 4) against Large with all of them, on 6
held-out prompts and seeds of the embedded pair: the mean of the pair's own metric (worst of the toy
encoder's feature cosine and per-frame SSIM), of ``LatentStructure`` (the default for pairs without
an encoder) and of the latent cosine (the default before it). About half a minute on two cores.
"""

from __future__ import annotations

import argparse

import torch

from adaptive import sample, sigmas
from adaptive.metrics import LatentSimilarity, LatentStructure
from adaptive.toy import load_pair, prompt_conds, prompt_for, seeded_noise


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args(argv)
    pair, _ = load_pair()
    prompts = [prompt_for(d, m) for d, m in [(3, 1), (8, 6), (1, 2), (5, 0), (0, 7), (9, 4)]]
    cond = {"encoder_hidden_states": torch.cat([c["encoder_hidden_states"] for c in prompt_conds(prompts)])}
    noise = seeded_noise(range(100, 100 + len(prompts)))
    rows = []
    with torch.no_grad():
        reference = sample(pair.models, noise, sigmas(args.steps, 3.0), None, **cond)
        for k in range(1, args.steps + 1):
            out = sample(pair.models, noise, sigmas(k, 3.0), None, **cond)
            row = {"steps": k, "own": float(pair.metric(out, reference).mean()),
                   "latent_structure": float(LatentStructure()(out, reference).mean()),
                   "latent_cosine": float(LatentSimilarity()(out, reference).mean())}
            rows.append(row)
            print(f"Large {k:2d} of {args.steps}: own {row['own']:.3f}  latent_structure "
                  f"{row['latent_structure']:.3f}  latent_cosine {row['latent_cosine']:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
