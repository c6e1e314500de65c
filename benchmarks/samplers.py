"""Euler against UniPC (and DPM-Solver++) on the embedded pair: does the recommended plan change, and
does blending pay more or less against Large with fewer steps on a multistep solver? (issue #35)

For each sampler and step count: Large alone with every step count (its quality against Large with
all steps *on the same sampler*), the one-window blends of a window grid (``--stride``: every
``stride``-th start and stop; 1: all of them), how many blends beat Large with the steps their compute
buys beyond two paired standard errors (:meth:`adaptive.frontier.Frontier.winners`), and what
``calibrate`` recommends with its default budget on its own prompts. Frontier videos are held-out
prompts and seeds. Writes ``samplers.md`` (the table, with this command and the times) and
``samplers.json`` (every frontier) to ``--out``.

    python benchmarks/samplers.py --out docs/samplers                      # the table in docs/samplers
    python benchmarks/samplers.py --steps 4 --num-prompts 1 --seeds 1 --stride 2 --trials 2 --out /tmp/s
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


def _windows(steps: int, stride: int) -> list[tuple[int, int, int]]:
    """One-window blends on the grid of ``steps``: starts and stops every ``stride`` steps (the last
    step always a stop), Small-first and Small-last included."""
    cuts = sorted(set(range(0, steps, stride)) | {steps})
    return [(steps, a, b) for a in cuts for b in cuts if a < b and not (a == 0 and b == steps)]


def measure(sampler: str, steps: int, shift: float, num_prompts: int, seeds: int, stride: int, trials: int,
            budget: float | None) -> dict:
    """One row of the table: the frontier on held-out videos and the calibration on its own prompts."""
    import optuna

    from adaptive.calibration import calibrate
    from adaptive.frontier import measure_frontier
    from adaptive.samplers import Sampler
    from adaptive.toy import heldout_prompts, load_pair, prompt_conds
    from adaptive.toy.data import calibration_prompts

    pair = load_pair()[0]
    solver = Sampler.of(sampler, shift)
    prompts, _ = heldout_prompts(num_prompts)
    started = time.perf_counter()
    frontier = measure_frontier(pair, prompt_conds(prompts), steps, seeds=[1000 + s for s in range(seeds)],
                                blend_steps=[], extra=_windows(steps, stride), progress=False, sampler=solver,
                                command=f"stride {stride}")
    frontier_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile = calibrate(pair, prompt_conds(calibration_prompts(num_prompts)), steps,
                            seeds=list(range(seeds)), n_trials=trials, store=store, progress=False, budget=budget,
                            storage=optuna.storages.InMemoryStorage(), sampler=solver)
    calibrate_seconds = time.perf_counter() - started
    large = frontier.large_fewer()
    won = frontier.winners()
    return {"sampler": sampler, "steps": steps, "shift": shift,
            "large_fewer": {int(k): round(p.quality(frontier.metric), 4) for k, p in sorted(large.items())},
            "blends": len(frontier.blends()), "wins": len(won),
            "best_win": won[0].describe() if won else None,
            "plan": profile.decision, "plan_cost": round(profile.plan.cost, 4) if profile.plan else None,
            "plan_steps": profile.plan.steps if profile.plan else steps,
            "plan_window": [profile.plan.start, profile.plan.stop] if profile.plan else None,
            "passes": profile.cost.calibration_passes,
            "seconds": {"frontier": round(frontier_seconds, 1), "calibrate": round(calibrate_seconds, 1)},
            "frontier": frontier.to_dict()}


def table(rows: list[dict], command: str) -> str:
    """The Markdown table of :func:`measure`'s rows."""
    times = ", ".join("%s %d: %.0f s" % (r["sampler"], r["steps"], r["seconds"]["frontier"] + r["seconds"]["calibrate"])
                      for r in rows)
    lines = [f"`{command}` ({times} on this machine, {torch.get_num_threads()} threads)", "",
             "| sampler, steps | Large with 1/3, 1/2, 2/3 of the steps | blends beating Large-fewer | "
             "recommended plan (compute) | calibration passes |", "|---|---|---:|---|---:|"]
    for r in rows:
        n, fewer_at = r["steps"], r["large_fewer"]
        fewer = ", ".join("%d: %.3f" % (k, fewer_at[k]) for k in (max(1, n // 3), max(1, n // 2), max(1, 2 * n // 3)))
        window, best = r["plan_window"], r["best_win"]
        plan = ("Large %d/%d" % (r["plan_steps"], n) if not window or window[0] >= window[1] else
                "%d steps, Small %d-%d" % (r["plan_steps"], window[0], window[1] - 1))
        wins = "%d of %d" % (r["wins"], r["blends"]) + (f" (best: {best})" if best else "")
        lines.append(f"| {r['sampler']}, {n} | {fewer} | {wins} | {plan} ({r['plan_cost']:.3f}) | {r['passes']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="euler:30,unipc:30", help="sampler:steps, comma-separated")
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = [(name, int(steps)) for name, steps in (run.split(":") for run in args.runs.split(","))]
    command = "python benchmarks/samplers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for name, steps in runs:
        rows.append(measure(name, steps, args.shift, args.num_prompts, args.seeds, args.stride, args.trials,
                            args.budget))
        print(f"{name} {steps}: {rows[-1]['wins']} of {rows[-1]['blends']} blends win; plan: {rows[-1]['plan']} "
              f"({rows[-1]['seconds']})", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "samplers.json").write_text(json.dumps(rows) + "\n")
    (args.out / "samplers.md").write_text(table(rows, command))
    print(table(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
