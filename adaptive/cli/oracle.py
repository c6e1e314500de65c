"""``flowblend oracle``: the change-point proposal and the Optuna refinement against the exhaustive
sweep of every window, as JSON (``flowblend bench --oracle`` adds its window to the table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adaptive.cli.options import add_common, add_pair_options, budget_arg, pair_and_conds, replay_command, solver_of


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("oracle", help="the change-point proposal and the Optuna refinement against the "
                       "exhaustive sweep of every window: JSON")
    add_common(p, schedule=False, out="outputs/oracle")
    add_pair_options(p)
    p.add_argument("--trials", type=int, default=24, help="Optuna trials of the refinement (default 24)")
    p.add_argument("--budget", type=budget_arg, default=3.0,
                   help="the refinement's budget in Large passes per sample, probe included, as calibrate's "
                        "(default 3; 'none': no limit)")
    p.add_argument("--target", type=float, default=0.95, help="least similarity to Large-only (default 0.95)")
    return p


def run(args: argparse.Namespace) -> int:
    """The change-point proposal and the Optuna refinement against the exhaustive sweep: JSON."""

    import optuna

    from adaptive.oracle import check_oracle

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pair, conds = pair_and_conds(args)
    windows = args.steps * (args.steps + 1) // 2
    print(f"proposal, {args.trials} refinement trials and all {windows} windows on {len(conds)} prompts x "
          f"{args.seeds} seeds ({pair.name or 'pair'}, {args.steps} steps, shift {args.shift}, target {args.target})")
    command = replay_command(args, f"--trials {args.trials} --target {args.target} --budget "
                      f"{'none' if args.budget is None else format(args.budget, 'g')}")
    report = check_oracle(pair, conds, args.steps, seeds=list(range(args.seeds)), shift=args.shift,
                          target=args.target, trials=args.trials, command=command, budget=args.budget,
                          sampler=solver_of(args))
    path = report.save(Path(args.out) / "oracle.json")
    summary = report.to_dict()
    print(json.dumps({k: summary[k] for k in ("proposal", "refined", "oracle", "compute_large_equivalents_per_sample",
                                              "seconds")}, indent=2))
    print(f"wrote {path} (flowblend bench --oracle {path} adds the oracle's window to the table)")
    return 0
