"""Detector proposal and Optuna refinement vs the exhaustive-sweep oracle on the embedded pair, on
the calibration set and metric of docs/oracle/oracle.json (the measurement is ``adaptive.oracle``).

    python benchmarks/oracle.py --steps 20 --prompts 4 --seeds 2 --trials 24 --budget 3 --out docs/oracle

All three use the same calibration set, metric (the toy encoder's feature similarity to Large-only)
and quality target; compute is counted in Large-call equivalents per sample (Small calls weighted by
the measured FLOP ratio), probe included. ``flowblend oracle`` runs the same check on any pair with
the pair's own metric; this script keeps the prompts, seeds and metric of the documented run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from adaptive.oracle import check_oracle
from adaptive.toy import load_pair, prompt_conds, prompt_for
from adaptive.toy.harness import Harness


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--budget", default="3", help="the refinement's budget in Large passes per sample, probe "
                                                       "included ('none': no limit)")
    parser.add_argument("--out", default="docs/oracle")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pair, _ = load_pair()
    prompts = [prompt_for((3 * i + 1) % 10, (5 * i) % 8) for i in range(args.prompts)]
    report = check_oracle(pair, prompt_conds(prompts), args.steps, seeds=list(range(100, 100 + args.seeds)),
                          shift=args.shift, metric=Harness().similarity, target=args.target, trials=args.trials,
                          budget=None if args.budget.lower() == "none" else float(args.budget),
                          command="python benchmarks/oracle.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()))
    report.save(Path(args.out) / "oracle.json")
    summary = report.to_dict()
    print(json.dumps({k: summary[k] for k in ("proposal", "refined", "oracle", "compute_large_equivalents_per_sample",
                                              "seconds")}, indent=2))


if __name__ == "__main__":
    main()
