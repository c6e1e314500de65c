"""Which plans does the quality metric pass? The embedded pair's metric against what a person sees.

    python benchmarks/metric_table.py --videos 16 --out docs/metric

Samples ``--videos`` held-out prompts (fixed seeds) with Large and 30 Euler steps (shift 3) as the
reference, and scores against it, per video: Large with another seed (the seed noise floor), Large
with fewer steps, the previous shipped profile's Small-last window (Small for sigma <= 0.665), a
paper-like L-S-L window (Small for sigma in (0.45, 0.85]) and the stored profile's recommended plan.
Columns: the toy encoder's pooled feature cosine, per-frame SSIM (mean and worst video), their
per-video minimum (the pair's calibration metric) and PSNR. Writes metric.json and metric.md, and
metric.png: every plan's videos side by side for the first 6 prompts.

    python benchmarks/metric_table.py --latent-steps 12

instead asks whether the default latent metric fails what the pair's own metric fails (issue #26): Large
with k of 12 Euler steps against all 12, on 6 held-out prompts and seeds, on the pair's own metric, on
``LatentStructure`` (the default for pairs without an encoder) and on the latent cosine (the default
before it). About half a minute on two cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from adaptive import ProfileStore, Schedule, sample, sigmas
from adaptive.metrics import LatentSimilarity, LatentStructure, StructuralSimilarity, psnr
from adaptive.toy import generate, load_pair, prompt_conds, prompt_for, seeded_noise
from adaptive.toy.pair import pair_harness
from adaptive.toy.video import save_side_by_side


def latent_steps(steps: int) -> list[dict[str, float]]:
    """Large with k of ``steps`` steps against all of them: the pair's metric and the latent ones."""
    pair, _ = load_pair()
    prompts = [prompt_for(d, m) for d, m in [(3, 1), (8, 6), (1, 2), (5, 0), (0, 7), (9, 4)]]
    cond = {"encoder_hidden_states": torch.cat([c["encoder_hidden_states"] for c in prompt_conds(prompts)])}
    noise = seeded_noise(range(100, 100 + len(prompts)))
    rows = []
    with torch.no_grad():
        reference = sample(pair.models, noise, sigmas(steps, 3.0), None, **cond)
        for k in range(1, steps + 1):
            out = sample(pair.models, noise, sigmas(k, 3.0), None, **cond)
            rows.append({"steps": k, "own": float(pair.metric(out, reference).mean()),
                         "latent_structure": float(LatentStructure()(out, reference).mean()),
                         "latent_cosine": float(LatentSimilarity()(out, reference).mean())})
            print(f"Large {k:2d} of {steps}: " + "  ".join(f"{n} {v:.3f}" for n, v in rows[-1].items() if n != "steps"),
                  flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--out", default="docs/metric")
    parser.add_argument("--latent-steps", type=int, default=None, help="only the latent metrics' check (see above)")
    parser.add_argument("--pair", default=None, help="an embedded pair's name or a weights folder (default: the shipped)")
    args = parser.parse_args(argv)
    if args.latent_steps:
        latent_steps(args.latent_steps)
        return
    pair, _ = load_pair(args.pair)
    harness, ssim = pair_harness(args.pair), StructuralSimilarity()
    prompts = [prompt_for(i % 10, (3 * i) % 8) for i in range(args.videos)]
    seeds = list(range(100, 100 + args.videos))
    plans: dict[str, tuple[int, Schedule | None, list[int]]] = {
        "Large, 30 steps, other seeds": (30, None, [s + 1000 for s in seeds])}
    for n in (6, 8, 10, 12, 15, 19):
        plans[f"Large, {n} steps"] = (n, None, seeds)
    plans["previous shipped profile: Small for sigma <= 0.665 (steps 18-29)"] = (30, Schedule.lsl(0.6648, 0.0), seeds)
    plans["paper-like L-S-L: Small for sigma in (0.45, 0.85]"] = (30, Schedule.lsl(0.85, 0.45), seeds)
    profile = ProfileStore("profiles").for_grid(pair, 30, 3.0)
    if profile is not None:
        plans[f"stored profile's plan: {profile.decision.split(' meets')[0]}"] = (profile.steps, profile.schedule(),
                                                                                  seeds)
    reference = generate(pair, prompts, seeds, None, num_steps=30)
    rows, pictures = [], {"Large, 30 steps": reference[:6]}
    for name, (steps, schedule, plan_seeds) in plans.items():
        videos = generate(pair, prompts, plan_seeds, schedule, num_steps=steps)
        structure = ssim(videos, reference)
        features = harness.similarity(videos, reference)
        rows.append({"plan": name, "feature_cosine": float(features.mean()), "ssim": float(structure.mean()),
                     "ssim_worst": float(structure.min()), "metric": float(torch.minimum(features, structure).mean()),
                     "psnr_db": float(psnr(videos, reference).mean())})
        print(json.dumps(rows[-1]), flush=True)
        if plan_seeds == seeds:
            pictures[name.split(":")[0]] = videos[:6]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metric.json").write_text(json.dumps({"videos": args.videos, "rows": rows}, indent=2) + "\n")
    lines = ["| plan | feature cosine | SSIM | worst video's SSIM | metric (min of the two) | PSNR dB |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['plan']} | {r['feature_cosine']:.3f} | {r['ssim']:.3f} | {r['ssim_worst']:.3f} | "
              f"{r['metric']:.3f} | {r['psnr_db']:.1f} |" for r in rows]
    (out / "metric.md").write_text("\n".join(lines) + "\n")
    save_side_by_side(out / "metric.png", pictures, prompts[:6])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
