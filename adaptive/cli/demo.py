"""``flowblend demo``: Large with all steps | the recommended plan | its obvious alternative at the
same compute, side by side on held-out prompts: one picture, the quality, the prompt alignment and the
speed measured in one run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

from adaptive.cli.options import (DEFAULT_WINDOW, add_common, configure, given_prompts, grid_of,
                                  stored_profile)
from adaptive.schedule import Schedule, base_of, is_unguided


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="sample the embedded pair Large-only vs blended and print the speed-up")
    add_common(p)
    p.add_argument("--num", type=int, default=8, help="videos per batch (default 8)")
    p.add_argument("--repeats", type=int, default=2, help="timing repeats (default 2)")
    return p


def run(args: argparse.Namespace) -> int:
    """Large with all steps | the recommended plan | its obvious alternative, side by side: one
    picture a person can judge, the quality on the pair's metric and the speed measured in one run."""
    import functools
    import warnings

    from adaptive.metering import interleaved
    from adaptive.toy import generate, load_pair, parse_prompt
    from adaptive.toy.pair import pair_harness
    from adaptive.toy.video import save_side_by_side

    if isinstance(args.schedule, str):
        raise SystemExit(f"demo compares fixed plans; for --schedule {args.schedule} run "
                         f"`flowblend sample --schedule {args.schedule}` (it prints every decision)")
    from adaptive.toy import heldout_prompts

    pair = configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    runs, why = _demo_runs(pair, args)
    if args.prompt:
        prompts, seeds, where = given_prompts(args, args.num), list(range(args.num)), "the prompts given, seeds 0.."
    else:
        prompts, seeds = heldout_prompts(args.num)
        where = "held-out prompts and seeds (no default calibration uses them)"
    print(f"pair: {args.pair} (Wan architecture, embedded); {args.num} videos of {where}, {args.sampler}, shift "
          f"{args.shift}")
    print(f"chosen (by calibration, on its own prompts): {why}")
    with warnings.catch_warnings():  # a 2-step warm-up skips stages of the plan: not the run's warning
        warnings.simplefilter("ignore", UserWarning)
        generate(pair, prompts[:1], seeds[:1], runs[1].schedule, num_steps=2, sampler=args.sampler)
    measured = interleaved({run.label: functools.partial(generate, pair, prompts, seeds, run.schedule,
                                                         num_steps=run.steps, shift=args.shift, sampler=args.sampler)
                            for run in runs},
                           rounds=args.repeats, device=args.device)  # so machine noise hits every run alike
    videos = measured.outputs
    seconds = {run.label: measured.total(run.label) for run in runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_side_by_side(out / "demo.png", {r.label: videos[r.label][:8] for r in runs},
                      [f"{p} (seed {s})" for p, s in zip(prompts[:8], seeds[:8])])
    reference = videos[runs[0].label]
    metric = pair.metric
    harness = pair_harness(args.pair)  # what users check first: does it draw what was asked?
    labels = [parse_prompt(p) for p in prompts]
    digits, directions = [d for d, _ in labels], [m for _, m in labels]
    print(f"{'':34s} {'s/batch':>8s} {'speed-up':>8s} {'compute':>8s} {'prompt digit/direction':>22s} "
          f"{getattr(metric, 'name', 'quality')}")
    for run in runs:
        parts = metric.parts(videos[run.label], reference) if hasattr(metric, "parts") else {}
        quality = float(metric(videos[run.label], reference).mean())
        detail = ", ".join(f"{k} {float(v.mean()):.3f}" for k, v in parts.items())
        digit, direction = harness.alignment(videos[run.label], digits, directions)
        print(f"{run.label + ':':34s} {seconds[run.label] / args.repeats:8.2f} "
              f"{seconds[runs[0].label] / seconds[run.label]:7.2f}x {run.cost:8.2f} "
              f"{f'{digit:.2f} / {direction:.2f}':>22s} {quality:.3f}" + (f"  ({detail})" if detail else ""))
    bound = 1 / runs[1].cost if runs[1].cost > 0 else float("inf")
    speedup = seconds[runs[0].label] / seconds[runs[1].label]
    caveat = "" if speedup <= bound * 1.05 else \
        f" (above its FLOP bound {bound:.2f}x: timing noise on {args.num} videos, {args.repeats} repeats)"
    print(f"speed-up: {speedup:.2f}x for the chosen plan (same run, interleaved, {args.repeats} repeats){caveat}; "
          f"quality is against {runs[0].label}, same noise and prompt, measured on these {args.num} videos; prompt "
          "digit/direction: the share of videos whose prompted digit and direction the pair's encoder reads")
    if len(runs) > 2:
        print("verdict: " + _verdict(metric, videos, runs))
    for name in _other_pairs(args.pair):
        print(f"the other embedded pair, {name}: {_stored_decision(name, args)}")
    print(f"wrote {out / 'demo.png'}")
    return 0


def _verdict(metric, videos, runs: list[_Run]) -> str:
    """The chosen plan against the third run (its obvious alternative) on every metric part,
    paired by video, in words: beats / ties / loses beyond two standard errors."""
    import math

    reference, plan, other = (videos[r.label] for r in runs[:3])
    scores = {getattr(metric, "name", "quality"): (metric(plan, reference), metric(other, reference))}
    if hasattr(metric, "parts"):
        a, b = metric.parts(plan, reference), metric.parts(other, reference)
        scores.update({k: (a[k], b[k]) for k in a})
    parts, wins = [], []
    for name, (x, y) in scores.items():
        diff = (x.float() - y.float()).cpu()
        se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        mean = float(diff.mean())
        word = "n/a (one video)" if not math.isfinite(se) else \
            "beats" if mean > 2 * se else "loses" if mean < -2 * se else "ties"
        wins.append(word == "beats")
        parts.append(f"{name} {mean:+.3f} ± {se:.3f} ({word})")
    head = (f"the chosen plan beats {runs[2].label} on every metric" if all(wins) else
            f"the chosen plan does not beat {runs[2].label} on every metric")
    return f"{head} (paired difference ± 1 standard error over {len(reference)} videos: {'; '.join(parts)})"


def _other_pairs(current: str) -> list[str]:
    from adaptive.toy.pair import PAIRS

    return [name for name in PAIRS if name != current]


def _stored_decision(name: str, args: argparse.Namespace) -> str:
    """What calibration decided for another embedded pair (its stored profile), in one line."""
    from adaptive.toy import load_pair

    pair = load_pair(name, device=args.device, dtype=args.dtype)[0]
    profile = stored_profile(pair, args, args.steps)
    if profile is None:
        return f"no stored profile for {args.steps} steps (`flowblend calibrate --pair {name}`)"
    kind = "fewer Large steps pay here" if profile.plan is not None and profile.plan.is_large_only else \
        "a blend pays here"
    return f"{kind}: {profile.decision}"


class _Run(NamedTuple):
    label: str
    steps: int
    schedule: Schedule | None
    cost: float  # compute as a fraction of Large with all steps


def _demo_runs(pair, args: argparse.Namespace) -> tuple[list[_Run], str]:
    """Large with all steps, the plan to show (the stored profile's recommendation, else --schedule
    or the uncalibrated default window) and its obvious alternative at the same compute, with why."""
    import math

    from adaptive.bench import plan_fraction, plan_label

    n = args.steps
    full = _Run(f"Large, {n} steps", n, None, 1.0)
    profile = stored_profile(pair, args, n)
    small_cost = profile.cost.get("small_cost_ratio", 0.1) if profile is not None else _toy_small_cost(pair)
    if args.schedule is not None or profile is None:
        schedule = args.schedule or Schedule.lsl(*DEFAULT_WINDOW)
        why = ("--schedule as given" if args.schedule is not None else
               f"no stored profile for {n} steps: the uncalibrated window lsl:{DEFAULT_WINDOW[0]},{DEFAULT_WINDOW[1]}")
        plan = _Run("chosen: " + plan_label(schedule, n), n, schedule, plan_fraction(schedule, n, n, args.shift,
                                                                                         small_cost, args.sampler))
    else:
        from adaptive.auto import warn_if_other_metric

        warn_if_other_metric(profile, pair)
        # A profile stored for another grid (ProfileStore.find says so) maps by sigma onto this one.
        steps = profile.steps if profile.num_steps == n else n
        schedule = profile.plan_schedule() if profile.num_steps == n else profile.schedule_for_steps(n)
        why = profile.decision if profile.num_steps == n else f"the stored window on {n} steps (see the warning)"
        plan = _Run("chosen: " + plan_label(schedule, steps), steps, schedule,
                    plan_fraction(schedule, steps, n, args.shift, small_cost, args.sampler))
    # a blend, or guidance skipped on some steps: the obvious alternative is Large with the steps its compute buys
    if plan.schedule is not None and any(base_of(m) == "small" or is_unguided(m) for m in plan.schedule.models):
        k = max(1, math.floor(plan.cost * n + 1e-9))
        return [full, plan, _Run(f"Large, {k} steps (the same compute)", k, None, k / n)], why
    target = profile.quality.get("target", 0.0) if profile is not None else 0.0
    frontier = profile.frontier if profile is not None and profile.num_steps == n else []
    blends = [p for p in frontier if p["stop"] > p["start"] and p["cost"] <= plan.cost + 1e-9 and
              p["quality"] >= target]
    missed = not blends
    if missed:  # none met the target: show the best blend at that compute all the same, and say so
        blends = [p for p in frontier if p["stop"] > p["start"] and p["cost"] <= plan.cost + 1e-9]
    if not blends:
        return [full, plan], why
    best = max(blends, key=lambda p: p["quality"])
    grid = grid_of(args, best["steps"])
    schedule = Schedule.from_steps(grid, ["small" if best["start"] <= i < best["stop"] else "large"
                                          for i in range(best["steps"])])
    label = (f"best calibrated blend at <= {plan.cost:.2f}: Small {best['start']}-{best['stop'] - 1} of {best['steps']} "
             f"({float(best['cost']):.2f})" + (", misses the target" if missed else ""))
    return [full, plan, _Run(label, best["steps"], schedule, float(best["cost"]))], why


def _toy_small_cost(pair) -> float:
    from adaptive.metering import flops_per_row
    from adaptive.toy import seeded_noise
    from adaptive.toy.data import encode_prompts

    device = next(m for m in pair.modules().values() if m is not None).device
    flops = flops_per_row(pair, seeded_noise([0], device=device), encoder_hidden_states=encode_prompts([""]).to(device))
    return flops["small"] / flops["large"]
