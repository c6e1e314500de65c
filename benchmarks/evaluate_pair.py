"""Measure the embedded pair with the quality harness (issue: embedded default pair).

    python benchmarks/evaluate_pair.py --videos 64 --out docs/pair

Rows: Large (all steps), a second Large set with other seeds (the seed-to-seed noise band),
Small (all steps), Large with a third of the steps on both seed sets (so "Large needs its steps" is
a paired comparison against the noise band), and Large at the ``--sweep`` step counts. Writes
docs/pair/pair_eval.json, pair_eval.md, large_vs_small.png, large_steps.png (quality vs
Large steps) and prints the divergence curve along Large's trajectory.

    python benchmarks/evaluate_pair.py --ink 5,10,30 --videos 32

instead prints why the Frechet distance falls with fewer Large steps: for real held-out videos and for
Large at each step count (the same prompts and noise), the share of pixels that are ink (> -0.8), how
the ink's values spread over brightness bins, and the squared distance between the mean encoder
features and the real ones (the mean term of the Frechet distance), in its motion and appearance halves.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adaptive import Schedule, flops_per_row, probe, sample, sigmas
from adaptive.toy import WEIGHTS_DIR, generate, load_pair, prompt_conds, seeded_noise
from adaptive.toy.data import check_prompts, encode_prompts, make_videos, variant_of
from adaptive.toy.harness import Harness, load_encoder
from adaptive.toy.video import save_strip


def run(pair, prompts, seeds, schedule, steps, shift, chunk=32):
    start = time.perf_counter()
    out = torch.cat([generate(pair, prompts[i:i + chunk], seeds[i:i + chunk], schedule, num_steps=steps, shift=shift)
                     for i in range(0, len(prompts), chunk)])
    return out, (time.perf_counter() - start) / len(prompts)


def commitment(pair, harness, prompts, seeds, steps, shift, device) -> dict[str, list[float]]:
    """How decided Large's video is at each step: feature similarity of its clean-sample prediction
    ``x - sigma * v`` to the final video. Where this is ~1, coarser steps cannot change the content."""
    predictions: list[torch.Tensor] = []
    final = sample(pair, seeded_noise(seeds, device=device), sigmas(steps, shift), None,
                   callback=lambda info: predictions.append(info["x"] - info["sigma"] * info["v"]),
                   encoder_hidden_states=encode_prompts(prompts).to(device))
    grid = sigmas(steps, shift)[:-1]
    return {"sigmas": [float(s) for s in grid],
            "feature_sim": [float(harness.similarity(x0, final).mean()) for x0 in predictions]}


def plot_steps(path: Path, rows: dict, default_steps: int, decided: dict[str, list[float]]) -> None:
    """Frechet distance and feature similarity of Large vs its number of steps, with the seed band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    large = {int(name.split()[1]): r for name, r in rows.items()
             if name.startswith("Large, ") and not name.endswith("other seeds")}
    steps = sorted(large)
    band = rows[f"Large, {default_steps} steps, other seeds"]
    small = rows[f"Small, {default_steps} steps"]
    panels = [("frechet", "Frechet distance to real (lower is better)"),
              ("feature_sim", f"feature similarity to Large-{default_steps} (same noise)")]
    if "grain" in large[default_steps]:
        panels.append(("grain", "grain the encoder reads (real videos: dotted black)"))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.4 * (len(panels) + 1), 3.4))
    for ax, (key, label) in zip(axes, panels):
        ax.plot(steps, [large[k][key] for k in steps], "o-", label="Large")
        ax.axhline(small[key], color="tab:red", ls="--", label=f"Small, {default_steps} steps")
        ax.axhline(band[key], color="grey", ls=":", label=f"Large-{default_steps}, other seeds")
        if key == "grain":
            ax.axhline(rows["Real held-out videos"][key], color="black", ls=":", label="real videos")
        ax.set_xlabel("Large Euler steps")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    axes[-1].plot(decided["sigmas"], decided["feature_sim"], "o-", ms=3)
    axes[-1].invert_xaxis()
    axes[-1].set_xlabel("sigma (noise level), sampling runs left to right")
    axes[-1].set_title("Large's clean-sample prediction vs its final video", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BINS = np.array([-0.8, -0.4, 0.0, 0.4, 0.8, 1.0001])
MOTION_DIM = 128  # the encoder's features are [motion (128), appearance (64)]


def ink_levels(videos: torch.Tensor) -> tuple[float, np.ndarray]:
    """(share of pixels that are ink, share of ink pixels in each brightness bin)."""
    pixels = videos.float().clamp(-1, 1).flatten().numpy()
    ink = pixels[pixels > BINS[0]]
    return len(ink) / len(pixels), np.histogram(ink, BINS)[0] / max(1, len(ink))


def ink_table(pair, harness: Harness, videos: int, steps: list[int]) -> None:
    prompts, _, _ = check_prompts(videos)
    seeds = list(range(1000, 1000 + videos))
    real = torch.from_numpy(make_videos(512, np.random.default_rng(12345), "heldout", variant=harness.variant).videos)
    rows = {"real held-out videos": real, **{f"Large, {k} steps": generate(pair, prompts, seeds, num_steps=k)
                                             for k in steps}}
    real_mean = harness.real_features().mean(0)
    bins = " | ".join(f"{a:+.1f}..{b:+.1f}" for a, b in zip(BINS, BINS[1:]))
    print(f"| videos | ink share | {bins} | mean-feature gap: motion | appearance |")
    print("|---|---:|" + "---:|" * (len(BINS) + 1))
    for name, video in rows.items():
        share, spread = ink_levels(video)
        gap = (harness.features(video).numpy().mean(0) - real_mean) ** 2
        print(f"| {name} | {share:.3f} | " + " | ".join(f"{v:.3f}" for v in spread)
              + f" | {gap[:MOTION_DIM].sum():.1f} | {gap[MOTION_DIM:].sum():.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--weights", default=None, help="weights folder (default: the shipped ones)")
    parser.add_argument("--sweep", default="5,15,20", help="more Large step counts to measure (comma list, '' for none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ink", default=None, help="only the ink table, at these Large step counts (see above)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pair, _ = load_pair(args.weights, device=args.device)
    weights = Path(args.weights) if args.weights else WEIGHTS_DIR
    harness = Harness(load_encoder(weights / "encoder.safetensors"), variant=variant_of(weights))
    if args.ink:
        return ink_table(pair, harness, args.videos, [int(k) for k in args.ink.split(",")])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts, digits, directions = check_prompts(args.videos)
    seeds = list(range(1000, 1000 + args.videos))
    other_seeds = list(range(5000, 5000 + args.videos))
    few = max(1, args.steps // 3)
    small_only = Schedule.from_stages([(1.0, 0.0, "small")])
    x = seeded_noise([0], device=args.device)
    per_row = flops_per_row(pair, x, encoder_hidden_states=encode_prompts(prompts[:1]).to(args.device))
    rows = {}
    large, t_large = run(pair, prompts, seeds, None, args.steps, args.shift)
    plans = {
        f"Large, {args.steps} steps": (large, t_large, args.steps * per_row["large"]),
        f"Large, {args.steps} steps, other seeds": (*run(pair, prompts, other_seeds, None, args.steps, args.shift),
                                                     args.steps * per_row["large"]),
        f"Small, {args.steps} steps": (*run(pair, prompts, seeds, small_only, args.steps, args.shift),
                                       args.steps * per_row["small"]),
        f"Large, {few} steps": (*run(pair, prompts, seeds, None, few, args.shift), few * per_row["large"]),
        f"Large, {few} steps, other seeds": (*run(pair, prompts, other_seeds, None, few, args.shift),
                                             few * per_row["large"]),
    }
    sweep = sorted({int(k) for k in args.sweep.split(",") if k.strip()} - {few, args.steps})
    for k in sweep:
        plans[f"Large, {k} steps"] = (*run(pair, prompts, seeds, None, k, args.shift), k * per_row["large"])
    for name, (videos, seconds, flops) in plans.items():
        # The full-steps other-seeds row is compared with the first seed set: that similarity is the noise band.
        paired = name.endswith("other seeds") and name != f"Large, {args.steps} steps, other seeds"
        reference = plans[f"Large, {args.steps} steps, other seeds"][0] if paired else large
        report = harness.report(videos, digits, directions, reference=reference)
        report.update(gflops_per_video=flops / 1e9, seconds_per_video=seconds)
        rows[name] = report
    real = make_videos(args.videos, np.random.default_rng(99), "heldout", digits=digits, directions=directions,
                       variant=harness.variant)
    real_videos = torch.from_numpy(real.videos)
    real_report = harness.report(real_videos, digits, directions)
    rows["Real held-out videos"] = real_report
    curve = probe(pair, prompt_conds(prompts[:8], args.device), args.steps, seeds=[0, 1], shift=args.shift)
    decided = commitment(pair, harness, prompts[:16], seeds[:16], args.steps, args.shift, args.device)
    result = {"rows": rows, "flops_per_call_per_video": per_row, "commitment": decided,
              "divergence": {"sigmas": curve.sigmas.tolist(), "rel_l2": curve.mean().tolist(),
                             "cosine": curve.mean("cosine").tolist(), "weighted": curve.mean("weighted").tolist()},
              "command": "python benchmarks/evaluate_pair.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())}
    (out / "pair_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = ["feature_sim", "frechet", "digit_acc", "direction_acc", "frame_agreement", "centroid_accel", "sharpness",
            "grain", "gflops_per_video", "seconds_per_video"]
    lines = ["| row | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, report in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{report[k]:.3f}" if k in report else "" for k in keys) + " |")
    table = "\n".join(lines)
    (out / "pair_eval.md").write_text(table + "\n")
    print(table)
    print("\ndivergence along Large's trajectory (sigma: rel-L2, 1-cos):")
    for s, r, c in zip(curve.sigmas, curve.mean(), curve.mean("cosine")):
        print(f"  {s:.3f}: {r:.4f}  {c:.4f}")
    plot_steps(out / "large_steps.png", rows, args.steps, decided)
    print("\nLarge's clean-sample prediction vs its final video (sigma: feature similarity):")
    for s, f in zip(decided["sigmas"], decided["feature_sim"]):
        print(f"  {s:.3f}: {f:.4f}")
    small_videos = plans[f"Small, {args.steps} steps"][0]
    few_videos = plans[f"Large, {few} steps"][0]
    save_strip(out / "large_vs_small.png", {"Large": large[:6], "Small": small_videos[:6],
                                            f"Large {few} steps": few_videos[:6]}, prompts[:6])


if __name__ == "__main__":
    main()
