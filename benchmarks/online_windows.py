"""Per-prompt windows and the online controller against the best single pair window (issue #20).

    python benchmarks/online_windows.py --set sliding --shift 1 --out docs/online

The pair is :mod:`adaptive.toy.windowed`: exact Gaussian velocity, Small exact only inside a sigma
window that is part of the conditioning, off by a fixed vector elsewhere. Sets: ``issue`` (the
issue's windows and one prompt whose Small is never safe), ``sliding`` (windows of one width at
several places, and the never-safe prompt), ``shared`` (three prompts with one safe window: the pair
window already takes it, so the controller's probes cannot pay). It calibrates ``per_prompt=True`` on the prompts (4 seeds, ``--calibration-seeds``), then samples every prompt with
``--eval-seeds`` new seeds and compares, at the quality target (cosine to Large-only, same noise):

- the best single pair window: every window on the grid tried on these very samples (an oracle, so
  an upper bound for any one window), the cheapest whose mean quality meets the target;
- the calibrated pair window (``profile.schedule()``);
- per-prompt windows (the profile); the online controller (probes and checks counted).

Compute is a fraction of Large-only counted from the steps each sample ran (Small at its FLOP
ratio). It also prints how the hand-over rules compare on the calibration curves (the rule before
issue #20, a moving average with a threshold fitted to the mean hand-in error, against the raw
probe), and the controller's leave-one-prompt-out scores: held-out compute with every sample's probes,
the share of held-out samples that hand over and the share that would repay the probes against the
stored pair window (what "online" runs on an unseen prompt when the controller falls back). About
20 CPU seconds a set and shift.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from adaptive import calibrate, sample, sigmas
from adaptive.controller import ControllerConfig, thresholds, replay
from adaptive.metrics import cosine
from adaptive.schedule import Schedule
from adaptive.toy.windowed import safe_steps, window_conds, windowed_pair

SETS = {"issue": [(0.2, 0.6), (0.1, 0.35), (0.55, 0.9), (0.5, 0.5)],
        "sliding": [(0.1, 0.5), (0.3, 0.7), (0.5, 0.9), (0.2, 0.6), (0.5, 0.5)],
        "shared": [(0.3, 0.7), (0.31, 0.7), (0.29, 0.71)]}  # one safe window on the 20-step grid, shift 1


def lagged_rule(grid: list[float], curves: np.ndarray, starts: list[int]) -> ControllerConfig:
    """The hand-over rule before issue #20: a moving average (smoothing 0.5) and the threshold that
    minimises the mean |hand-in - best start| (never = n), with a return left open."""
    n = len(grid) - 1
    best, error = None, np.inf
    for t in thresholds(curves):
        config = ControllerConfig(threshold=t, smoothing=0.5, probe_budget=n)
        hand_in = replay(config, grid, curves).hand_in
        e = float(np.mean([abs((n if h is None else h) - s) for h, s in zip(hand_in, starts)]))
        if e < error:
            best, error = config, e
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", choices=sorted(SETS), default="sliding")
    parser.add_argument("--shift", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-seeds", type=int, default=8)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--calibration-seeds", type=int, default=4)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    windows = SETS[args.set]
    pair = windowed_pair(mu=0.3, std=0.5, offset=6.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = calibrate(pair, window_conds(windows), num_steps=args.steps, shift=args.shift, seeds=list(range(args.calibration_seeds)),
                            quality_target=args.target, n_trials=args.trials, store=tempfile.mkdtemp(), progress=False,
                            per_prompt=True, search_steps=False)
    notes = [str(w.message) for w in caught if "online controller" in str(w.message)]
    grid = sigmas(args.steps, args.shift)
    small_cost = profile.cost["small_cost_ratio"]
    config = ControllerConfig.from_dict(profile.controller)

    rows = [(k, 100 + s) for k in range(len(windows)) for s in range(args.eval_seeds)]
    noise = torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(seed)) for _, seed in rows])
    cond = torch.tensor([windows[k] for k, _ in rows])
    large = sample(pair, noise, grid, None, window=cond)

    def run(schedule: object) -> dict[str, float]:
        x, d = sample(pair, noise, grid, schedule, return_decisions=True, window=cond)
        q = cosine(x, large).numpy()
        outside, used = 0, []
        for r, (k, _) in enumerate(rows):
            safe = safe_steps(grid, windows[k])
            small = d.small_steps(r)
            outside += sum(1 for i in small if not safe or not safe[0] - 1 <= i <= safe[-1] + 1)
            if safe:
                used.append(len([i for i in small if i in safe]) / len(safe))
        return {"quality_mean": float(q.mean()), "quality_min": float(q.min()),
                "compute": float(np.mean(d.cost(small_cost))), "small_steps_outside": outside,
                "window_used": float(np.mean(used))}

    n = args.steps
    best, best_row = Schedule.large_only(), run(Schedule.large_only())
    for a in range(n):
        for b in range(a + 1, n + 1):
            schedule = Schedule.lsl(float(grid[a]), float(grid[b]) if b < n else 0.0)
            if schedule.small_steps(grid) != list(range(a, b)):
                continue
            cost = (n - (b - a) * (1 - small_cost)) / n
            if cost >= best_row["compute"]:
                continue
            result = run(schedule)
            if result["quality_mean"] >= args.target:
                best, best_row = schedule, result
    table = {"Large only": run(Schedule.large_only()),
             f"best single pair window (oracle, steps {best.small_steps(grid)})": best_row,
             f"calibrated pair window (steps {list(profile.small_steps)})": run(profile.schedule()),
             "per-prompt windows": run(profile)}
    if config.fallback:
        table["online controller (fallback: stored windows)"] = run(profile)
    else:
        table["online controller (probes, checks counted)"] = run(config)
    lines = [f"windows {windows}, {n} steps, shift {args.shift}, Small/Large FLOPs {small_cost:.3f}, target "
             f"{args.target}, {len(rows)} samples ({args.eval_seeds} new seeds per prompt)", "",
             "| method | quality mean | quality min | compute (x Large) | Small steps outside window | window used |",
             "|---|---|---|---|---|---|"]
    for name, r in table.items():
        lines.append(f"| {name} | {r['quality_mean']:.4f} | {r['quality_min']:.4f} | {r['compute']:.3f} | "
                     f"{r['small_steps_outside']} | {r['window_used']:.2f} |")
    fit = config.fit
    lines += ["", f"controller: threshold {config.threshold:.4g} on the raw probe, probes <= {config.probe_budget}, "
              f"Small span {config.small_span}, checks every {config.monitor_every or '-'}"
              + (f"; FALLBACK: {config.fallback}" if config.fallback else ""),
              "", "leave-one-prompt-out (each prompt held out, the rule fitted on the others; compute counts the "
              "probes of every held-out sample; to be used it must cost less than what \"online\" runs on an "
              f"unseen prompt without it, the stored pair window: {fit['fallback_cost']:.3f}):", "",
              "| span margin | checks | Small steps outside | samples below target | compute | samples handed over "
              "| hand-over rate that repays the probes | window used |",
              "|---|---|---|---|---|---|---|---|"]
    for r in fit["leave_one_prompt_out"]:
        need = r["break_even_rate"]
        lines.append(f"| {r['margin']} | {r['checks']} | {r['outside_steps']} | {r['below_target']} | "
                     f"{r['cost']:.3f} | {r['handover_rate']:.2f} | {'-' if need is None else f'{need:.2f}'} | "
                     f"{r['used_fraction']:.2f} |")
    lines += ["", f"chosen: {fit['chosen']}"] + [f"note: {m}" for m in notes]
    text = "\n".join(lines)
    print(text)
    rules = hand_over_table(pair, windows, args.shift, args.steps, config.threshold, args.calibration_seeds)
    print("\n" + rules)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{args.set}_shift{args.shift:g}"
        (out / f"{stem}.md").write_text(text + "\n\n" + rules + "\n")
        (out / f"{stem}.json").write_text(json.dumps({"args": vars(args), "table": table,
                                                      "controller": config.to_dict()}, indent=2) + "\n")


def hand_over_table(pair: object, windows: list[tuple[float, float]], shift: float, steps: int,
                    threshold: float, seeds: int = 4) -> str:
    """Hand-over of each rule on the probe curves of the prompts (``seeds`` each), probing every step:
    hand-in minus the first safe step (never = the step count)."""
    from adaptive.probing import run_probe

    curve, _ = run_probe(pair, window_conds(windows), steps, list(range(seeds)), shift, None, None, False)
    curves, grid = curve.rel_l2.T, sigmas(steps, shift).tolist()
    truth = []
    for w in windows:
        safe = safe_steps(grid, w)
        truth += [safe[0] if safe else steps] * seeds
    raw = ControllerConfig(threshold=threshold, smoothing=1.0, probe_budget=steps)
    lines = ["hand-over rules on the calibration curves (hand-in minus the first safe step; never = n):", "",
             f"| rule | threshold | per prompt (mean of {seeds} seeds) | samples handed over > 1 step early |",
             "|---|---|---|---|"]
    for name, rule in (("moving average 0.5, threshold fitted to the mean hand-in error (before #20)",
                        lagged_rule(grid, curves, truth)), ("raw probe (smoothing 1.0, this fit's threshold)", raw)):
        d = replay(rule, grid, curves)
        errors = [(steps if h is None else h) - t for h, t in zip(d.hand_in, truth)]
        per_prompt = [round(float(np.mean(errors[seeds * k:seeds * (k + 1)])), 2) for k in range(len(windows))]
        early = sum(1 for e, h in zip(errors, d.hand_in) if h is not None and e < -1)
        lines.append(f"| {name} | {rule.threshold:.3g} | {per_prompt} | {early} of {len(errors)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
