"""Per-prompt calibration and the online controller vs the fixed pair profile (issue: per-prompt).

    python benchmarks/per_prompt_eval.py --out docs/per_prompt --store /tmp/pp_store

1. Calibrates the embedded pair with ``per_prompt=True`` on ``--calib-prompts`` prompts x 2 seeds
   (writes the profile, with its per-prompt windows and online controller, to ``--store``: a scratch
   store, a temporary folder by default; the shipped profiles/ is refused, it is made by
   ``flowblend calibrate --per-prompt --num-prompts 12 --seeds 2 --trials 32``).
2. Seen prompts, new seeds (``--seen-seeds`` per calibrated prompt): Large only, the fixed pair
   profile, per-prompt calibration and the online controller.
3. Unseen prompts (every prompt not calibrated, one new seed each): Large only, the fixed profile and
   the online controller (per-prompt calibration falls back to the fixed profile there by design).

Compute is counted from the model calls actually made (probes included) times FLOPs per call;
time is wall time of each method on the same chunks, interleaved. Writes results.json and
results.md to ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adaptive import Meter, Schedule, calibrate, flops_per_row, sample, sigmas
from adaptive.metering import interleaved
from adaptive.controller import ControllerConfig
from adaptive.toy import load_pair, prompt_conds, prompt_for, seeded_noise
from adaptive.toy.data import DIRECTION_NAMES, encode_prompts
from adaptive.toy.harness import Harness
from adaptive.toy.pair import NUM_STEPS, SHIFT, pair_harness

SHIPPED_STORE = Path(__file__).resolve().parent.parent / "profiles"


def all_prompts() -> list[tuple[int, int]]:
    return [(d, m) for d in range(10) for m in range(len(DIRECTION_NAMES))]


def evaluate(meter: Meter, per_row: dict[str, int], methods: dict[str, object], prompts: list[tuple[int, int]],
             seeds: list[int], harness: Harness, chunk: int, steps: int = NUM_STEPS) -> dict[str, dict[str, float]]:
    """Run every method on the same (prompt, seed) list in interleaved chunks; quality and cost."""
    grid = sigmas(steps, SHIFT)
    texts = [prompt_for(d, m) for d, m in prompts]
    outputs: dict[str, list[torch.Tensor]] = {k: [] for k in methods}
    seconds = dict.fromkeys(methods, 0.0)
    flops = dict.fromkeys(methods, 0.0)
    plans: dict[str, list[str]] = {k: [] for k in methods}
    for lo in range(0, len(texts), chunk):
        noise = seeded_noise(seeds[lo:lo + chunk])
        cond = encode_prompts(texts[lo:lo + chunk])
        runs = {name: functools.partial(sample, meter.pair, noise, grid, schedule, return_decisions=True,
                                        encoder_hidden_states=cond) for name, schedule in methods.items()}
        measured = interleaved(runs, meter=meter, per_row=per_row)
        for name in methods:
            x, decisions = measured.outputs[name]
            seconds[name] += measured.total(name)
            flops[name] += measured.flops[name]
            outputs[name].append(x)
            plans[name] += ["".join("S" if m == "small" else "L" for m in row) for row in decisions.models]
    digits = np.array([d for d, _ in prompts])
    directions = np.array([m for _, m in prompts])
    large = torch.cat(outputs["Large only"])
    rows = {}
    for name in methods:
        videos = torch.cat(outputs[name])
        report = harness.report(videos, digits, directions, reference=large)
        report.update(gflops_per_video=flops[name] / len(texts) / 1e9, seconds_per_video=seconds[name] / len(texts),
                      small_steps_mean=float(np.mean([p.count("S") for p in plans[name]])),
                      distinct_plans=len(set(plans[name])))
        rows[name] = report
    large_flops = rows["Large only"]["gflops_per_video"]
    for report in rows.values():
        report["compute_fraction"] = report["gflops_per_video"] / large_flops
        report["time_fraction"] = report["seconds_per_video"] / rows["Large only"]["seconds_per_video"]
    return rows


def table(rows: dict[str, dict[str, float]]) -> str:
    keys = ["feature_sim", "frechet", "digit_acc", "direction_acc", "frame_agreement", "centroid_accel",
            "compute_fraction", "time_fraction", "small_steps_mean", "distinct_plans"]
    lines = ["| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, report in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{report[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calib-prompts", type=int, default=12)
    parser.add_argument("--seen-seeds", type=int, default=6)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--steps", type=int, default=NUM_STEPS, help="Euler steps (the pair's default grid)")
    parser.add_argument("--chunk", type=int, default=24)
    parser.add_argument("--unseen-limit", type=int, default=64, help="unseen prompts evaluated (0: all)")
    parser.add_argument("--pair", default=None, help="an embedded pair's name or a weights folder (default: the shipped)")
    parser.add_argument("--store", help="scratch profile store (default: a temporary folder; never profiles/)")
    parser.add_argument("--out", default="docs/per_prompt")
    args = parser.parse_args(argv)
    if args.store and Path(args.store).resolve() == SHIPPED_STORE:
        parser.error(f"--store {args.store} is the shipped store; it is made by `flowblend calibrate --per-prompt "
                     "--num-prompts 12 --seeds 2 --trials 32` (README, Profiles): give a scratch folder")
    store = args.store or tempfile.mkdtemp(prefix="per_prompt_store.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    pair, _ = load_pair(args.pair)
    harness = pair_harness(args.pair)
    rng = np.random.default_rng(11)
    every = all_prompts()
    order = rng.permutation(len(every))
    seen = [every[i] for i in order[:args.calib_prompts]]
    unseen = [every[i] for i in order[args.calib_prompts:]][:args.unseen_limit or None]

    started = time.perf_counter()
    profile = calibrate(pair, prompt_conds([prompt_for(d, m) for d, m in seen]), num_steps=args.steps,
                        seeds=[0, 1], shift=SHIFT, quality_target=args.target, n_trials=args.trials,
                        store=store, per_prompt=True)
    calibration_seconds = time.perf_counter() - started
    print(f"calibrated in {calibration_seconds:.0f}s: pair window steps {list(profile.small_steps)}")
    print(json.dumps(profile.controller.to_dict() if profile.controller else {}, indent=1))

    per_row = flops_per_row(pair, seeded_noise([0]), encoder_hidden_states=encode_prompts(["a 1 moving up"]))
    meter = Meter(pair)
    fixed = profile.schedule()
    controller = ControllerConfig.from_dict(profile.controller)
    # A controller that failed its leave-one-prompt-out validation is not run: "online" runs the
    # stored windows then (the profile), and the row says so.
    online: object = profile if controller.fallback else controller
    # A validated controller is measured alone, on every prompt: under schedule="online" a calibrated
    # prompt would run its stored window instead (the per-prompt row).
    online_name = "online controller" + (" (fallback: stored windows)" if controller.fallback else " alone")
    if controller.fallback:
        print(f"online controller not used: {controller.fallback}")
    methods_seen = {"Large only": Schedule.large_only(), "fixed pair profile": fixed, "per-prompt calibration": profile,
                    online_name: online}
    seen_prompts = [p for p in seen for _ in range(args.seen_seeds)]
    seen_seeds = [100 + k for _ in seen for k in range(args.seen_seeds)]
    seen_rows = evaluate(meter, per_row, methods_seen, seen_prompts, seen_seeds, harness, args.chunk,
                         args.steps)
    print("\nseen prompts, new seeds\n" + table(seen_rows))
    methods_unseen = {"Large only": Schedule.large_only(), "fixed pair profile": fixed, online_name: online}
    unseen_rows = evaluate(meter, per_row, methods_unseen, unseen, [200] * len(unseen), harness, args.chunk,
                           args.steps)
    print("\nunseen prompts\n" + table(unseen_rows))

    result = {"command": "python benchmarks/per_prompt_eval.py " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                                           for k, v in vars(args).items()),
              "calibration_seconds": calibration_seconds, "seen_prompts": [prompt_for(*p) for p in seen],
              "profile": profile.to_dict(), "seen": seen_rows, "unseen": unseen_rows,
              "videos": {"seen": len(seen_prompts), "unseen": len(unseen)}}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(f"Seen prompts ({len(seen)}) x {args.seen_seeds} new seeds = {len(seen_prompts)} "
                                    f"videos\n\n{table(seen_rows)}\n\nUnseen prompts, one new seed each = "
                                    f"{len(unseen)} videos\n\n{table(unseen_rows)}\n")


if __name__ == "__main__":
    main()
