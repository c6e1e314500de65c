"""Detector proposal and Optuna refinement vs the exhaustive-sweep oracle on the embedded pair.

    python scripts/oracle.py --steps 20 --prompts 4 --seeds 2 --trials 24 --out docs

All three use the same calibration set, metric (the toy encoder's feature similarity to Large-only)
and quality target; compute is counted in Large-call equivalents per sample (Small calls weighted by
the measured FLOP ratio), probe included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna

from adaptive import ChangePointDetector
from adaptive.calibration import Evaluator, best_window, refine, small_cost_ratio, sweep
from adaptive.detect import boundaries_from_steps
from adaptive.probing import run_probe
from adaptive.toy import load_pair, prompt_conds, prompt_for
from adaptive.toy.harness import Harness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pair, _ = load_pair()
    prompts = [prompt_for((3 * i + 1) % 10, (5 * i) % 8) for i in range(args.prompts)]
    conds = prompt_conds(prompts)
    seeds = list(range(100, 100 + args.seeds))
    started = time.perf_counter()
    curve, reference = run_probe(pair, conds, args.steps, seeds, args.shift)
    probe_seconds = time.perf_counter() - started
    metric = Harness().similarity
    proposal = ChangePointDetector().fit(curve).predict()
    small_cost = small_cost_ratio(pair, reference)
    probe_cost = args.steps + args.steps * small_cost

    started = time.perf_counter()
    refined_eval = Evaluator(pair, reference, metric, small_cost)
    with tempfile.TemporaryDirectory() as tmp:
        study = refine(refined_eval, proposal, args.target, args.trials, f"sqlite:///{tmp}/s.db", "oracle-check",
                       progress=True)
        refined = best_window(study, args.target)
    refine_seconds = time.perf_counter() - started

    started = time.perf_counter()
    oracle_eval = Evaluator(pair, reference, metric, small_cost)
    oracle = sweep(oracle_eval, args.target)
    sweep_seconds = time.perf_counter() - started

    def distance(a: tuple[int, int], b: tuple[int, int]) -> int:
        return max(abs(a[0] - b[0]), abs(a[1] - b[1]))

    prop = (proposal.start, proposal.stop) if proposal is not None else (0, 0)
    report = {
        "command": "python scripts/oracle.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "small_cost_ratio": small_cost,
        "divergence": {"sigmas": curve.sigmas.tolist(), "rel_l2": curve.mean().tolist(),
                       "weighted": curve.mean("weighted").tolist()},
        "proposal": {"start": prop[0], "stop": prop[1],
                     "quality": refined_eval.quality(*prop) if prop[1] > prop[0] else 1.0,
                     "cost_fraction": refined_eval.cost(*prop), "steps_from_oracle": distance(prop, oracle[:2])},
        "refined": {"start": refined[0], "stop": refined[1], "quality": refined[2], "cost_fraction": refined[3],
                    "steps_from_oracle": distance(refined[:2], oracle[:2]), "trials": args.trials},
        "oracle": {"start": oracle[0], "stop": oracle[1], "quality": oracle[2], "cost_fraction": oracle[3],
                   **{k: v for k, v in zip(("sigma_in", "sigma_out"),
                                           (lambda b: (b.sigma_in, b.sigma_out))(
                                               boundaries_from_steps(curve.grid, oracle[0], oracle[1])))}},
        "compute_large_equivalents_per_sample": {
            "probe": probe_cost, "refinement": refined_eval.large_equivalents,
            "sweep": oracle_eval.large_equivalents,
            "detector_share_of_sweep": probe_cost / oracle_eval.large_equivalents,
            "calibration_share_of_sweep": (probe_cost + refined_eval.large_equivalents) / oracle_eval.large_equivalents},
        "seconds": {"probe": probe_seconds, "refinement": refine_seconds, "sweep": sweep_seconds},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("proposal", "refined", "oracle", "compute_large_equivalents_per_sample",
                                             "seconds")}, indent=2))


if __name__ == "__main__":
    main()
