"""Measure the embedded pair with the quality harness (issue: embedded default pair).

    python scripts/evaluate_pair.py --videos 64 --out docs

Rows: Large (all steps), a second Large set with other seeds (the seed-to-seed noise band),
Small (all steps), Large with a third of the steps. Writes docs/pair_eval.json, docs/pair_eval.md,
docs/large_vs_small.png and prints the divergence curve along Large's trajectory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adaptive import Schedule, flops_per_row, probe, sigmas
from adaptive.toy import generate, load_pair, prompt_conds, prompt_for, seeded_noise
from adaptive.toy.data import DIRECTION_NAMES, encode_prompts, make_videos
from adaptive.toy.harness import Harness
from adaptive.toy.video import save_strip


def heldout_prompts(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    digits, directions = rng.integers(0, 10, n), rng.integers(0, len(DIRECTION_NAMES), n)
    return [prompt_for(int(d), int(m)) for d, m in zip(digits, directions)], digits, directions


def run(pair, prompts, seeds, schedule, steps, shift, chunk=32):
    start = time.perf_counter()
    out = torch.cat([generate(pair, prompts[i:i + chunk], seeds[i:i + chunk], schedule, num_steps=steps, shift=shift)
                     for i in range(0, len(prompts), chunk)])
    return out, (time.perf_counter() - start) / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--weights", default=None, help="weights folder (default: the shipped ones)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    pair, _ = load_pair(args.weights)
    harness = Harness()
    prompts, digits, directions = heldout_prompts(args.videos)
    seeds = list(range(1000, 1000 + args.videos))
    other_seeds = list(range(5000, 5000 + args.videos))
    few = max(1, args.steps // 3)
    small_only = Schedule.from_stages([(1.0, 0.0, "small")])
    x = seeded_noise([0])
    per_row = flops_per_row(pair, x, encoder_hidden_states=encode_prompts(prompts[:1]))
    rows = {}
    large, t_large = run(pair, prompts, seeds, None, args.steps, args.shift)
    plans = {
        f"Large, {args.steps} steps": (large, t_large, args.steps * per_row["large"]),
        f"Large, {args.steps} steps, other seeds": (*run(pair, prompts, other_seeds, None, args.steps, args.shift),
                                                     args.steps * per_row["large"]),
        f"Small, {args.steps} steps": (*run(pair, prompts, seeds, small_only, args.steps, args.shift),
                                       args.steps * per_row["small"]),
        f"Large, {few} steps": (*run(pair, prompts, seeds, None, few, args.shift), few * per_row["large"]),
    }
    for name, (videos, seconds, flops) in plans.items():
        report = harness.report(videos, digits, directions, reference=large)
        report.update(gflops_per_video=flops / 1e9, seconds_per_video=seconds)
        rows[name] = report
    real = make_videos(args.videos, np.random.default_rng(99), "heldout", digits=digits, directions=directions)
    real_videos = torch.from_numpy(real.videos)
    real_report = harness.report(real_videos, digits, directions)
    rows["Real held-out videos"] = real_report
    curve = probe(pair, prompt_conds(prompts[:8]), args.steps, seeds=[0, 1], shift=args.shift)
    result = {"rows": rows, "flops_per_call_per_video": per_row,
              "divergence": {"sigmas": curve.sigmas.tolist(), "rel_l2": curve.mean().tolist(),
                             "cosine": curve.mean("cosine").tolist(), "weighted": curve.mean("weighted").tolist()},
              "command": "python scripts/evaluate_pair.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())}
    (out / "pair_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = ["feature_sim", "frechet", "digit_acc", "direction_acc", "frame_agreement", "centroid_accel", "sharpness",
            "gflops_per_video", "seconds_per_video"]
    lines = ["| row | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, report in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{report[k]:.3f}" if k in report else "" for k in keys) + " |")
    table = "\n".join(lines)
    (out / "pair_eval.md").write_text(table + "\n")
    print(table)
    print("\ndivergence along Large's trajectory (sigma: rel-L2, 1-cos):")
    for s, r, c in zip(curve.sigmas, curve.mean(), curve.mean("cosine")):
        print(f"  {s:.3f}: {r:.4f}  {c:.4f}")
    small_videos = plans[f"Small, {args.steps} steps"][0]
    few_videos = plans[f"Large, {few} steps"][0]
    save_strip(out / "large_vs_small.png", {"Large": large[:6], "Small": small_videos[:6],
                                            f"Large {few} steps": few_videos[:6]}, prompts[:6])


if __name__ == "__main__":
    main()
