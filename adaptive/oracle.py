"""The oracle check: how close the cheap ways of finding a window come to the exhaustive sweep.

On one calibration set, metric and quality target, :func:`check_oracle` compares three ways of
choosing the Small window of a Large-Small-Large plan: the change-point proposal (the probe's
divergence curve alone), the Optuna refinement seeded with it, and the oracle, which measures every
window of the grid and keeps the cheapest that meets the target. Each is reported with its window,
quality, compute and its own cost in Large calls per sample (``flowblend oracle``; ``flowblend
bench --oracle`` adds the oracle's window to the comparison table).

Example:
    >>> from adaptive import ModelPair
    >>> exact = ModelPair(lambda x, s: x - 0.5, lambda x, s: x - 0.5, sample_shape=(4,))  # Small exact
    >>> report = check_oracle(exact, [{}], num_steps=4, seeds=[0], trials=3, progress=False)
    >>> (report.oracle.start, report.oracle.stop), round(report.oracle.quality, 4), report.distance(report.refined)
    ((0, 4), 1.0, 0)
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from adaptive.calibration import Evaluator, Ledger, best_window, refine, small_cost_ratio, sweep
from adaptive.detect import ChangePointDetector, boundaries_from_steps
from adaptive.metrics import LatentStructure, Metric
from adaptive.pair import ModelPair
from adaptive.probing import DivergenceCurve, run_probe
from adaptive.profiles import atomic_write


@dataclasses.dataclass(frozen=True)
class Window:
    """Small on steps ``start .. stop - 1`` (Large alone when ``start == stop``), its mean quality
    against Large with all steps and its compute as a fraction of Large with all steps."""

    start: int
    stop: int
    quality: float
    cost: float


@dataclasses.dataclass(frozen=True)
class OracleReport:
    """What :func:`check_oracle` measured. ``large_equivalents`` is each method's own cost in
    Large calls per sample (``probe``, ``refinement``, ``sweep``); ``seconds`` its wall time."""

    curve: DivergenceCurve
    small_cost: float
    proposal: Window
    refined: Window
    oracle: Window
    trials: int
    large_equivalents: Mapping[str, float]
    seconds: Mapping[str, float]
    command: str = ""

    def distance(self, window: Window) -> int:
        """How many steps either end of ``window`` lies from the oracle's."""
        return max(abs(window.start - self.oracle.start), abs(window.stop - self.oracle.stop))

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout ``flowblend bench --oracle`` reads (the oracle's sigmas under ``oracle``)."""
        probe, sweep_cost = self.large_equivalents["probe"], self.large_equivalents["sweep"]
        refinement = self.large_equivalents["refinement"]
        found = boundaries_from_steps(self.curve.grid, self.oracle.start, self.oracle.stop)

        def entry(window: Window) -> dict[str, Any]:
            return {"start": window.start, "stop": window.stop, "quality": window.quality, "cost_fraction": window.cost}

        return {
            "command": self.command,
            "small_cost_ratio": self.small_cost,
            "divergence": {"sigmas": self.curve.sigmas.tolist(), "rel_l2": self.curve.mean().tolist(),
                           "weighted": self.curve.mean("weighted").tolist()},
            "proposal": {**entry(self.proposal), "steps_from_oracle": self.distance(self.proposal)},
            "refined": {**entry(self.refined), "steps_from_oracle": self.distance(self.refined),
                        "trials": self.trials},
            "oracle": {**entry(self.oracle), "sigma_in": found.sigma_in, "sigma_out": found.sigma_out},
            "compute_large_equivalents_per_sample": {
                "probe": probe, "refinement": refinement, "sweep": sweep_cost,
                "detector_share_of_sweep": probe / sweep_cost,
                "calibration_share_of_sweep": (probe + refinement) / sweep_cost},
            "seconds": dict(self.seconds),
        }

    def save(self, path: Path | str) -> Path:
        return atomic_write(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


@torch.no_grad()
def check_oracle(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int = 20,
                 seeds: Sequence[int] = (0, 1), shift: float = 1.0, metric: Metric | None = None,
                 target: float = 0.95, trials: int = 24, progress: bool = True, command: str = "",
                 budget: float | None = 3.0, sampler: Any = None) -> OracleReport:
    """Proposal, refinement and oracle for ``pair`` on ``sigmas(num_steps, shift)`` (see the module doc),
    or on ``sampler``'s grid and steps (:class:`~adaptive.samplers.Sampler`: ``"unipc"``, ``"dpm++"``...).

    Args:
        conds, seeds: the calibration set (every cond with every seed), as in :func:`~adaptive.calibrate`.
        metric: quality against Large with all steps (default: the pair's metric, else latent cosine).
        target: the least mean quality a window must keep.
        trials: Optuna trials of the refinement (a throw-away SQLite study, TPE seed 0).
        budget: the refinement's budget in Large passes per sample, probe included, as
            :func:`~adaptive.calibrate`'s (None: no limit); the sweep has none.

    The sweep measures all ``n (n + 1) / 2`` windows: on a 20-step grid about 1350 Large calls per
    sample, some 60 times a calibration's probe and refinement.
    """
    metric = metric or pair.metric or LatentStructure()
    started = time.perf_counter()
    curve, reference = run_probe(pair, conds, num_steps, seeds, shift, progress=progress, sampler=sampler)
    probe_seconds = time.perf_counter() - started
    proposal = ChangePointDetector().fit(curve).predict()
    small_cost = small_cost_ratio(pair, reference)

    started = time.perf_counter()
    ledger = Ledger(len(reference.final), num_steps, budget)
    probe_cost = num_steps + num_steps * small_cost
    with ledger.phase("probe"):
        ledger.charge(probe_cost, len(reference.final))
    refined_eval = Evaluator(pair, reference, metric, small_cost, ledger=ledger, seeds=len(seeds))
    with tempfile.TemporaryDirectory() as tmp:
        study = refine(refined_eval, proposal, target, trials, f"sqlite:///{tmp}/s.db", "oracle-check",
                       progress=progress)
        refined = Window(*best_window(study, target))
    refinement_cost = ledger.total - probe_cost  # before the proposal is judged in full for the report
    refine_seconds = time.perf_counter() - started

    started = time.perf_counter()
    oracle_eval = Evaluator(pair, reference, metric, small_cost)
    oracle = Window(*sweep(oracle_eval, target, progress=progress))
    sweep_seconds = time.perf_counter() - started

    start, stop = (proposal.start, proposal.stop) if proposal is not None else (0, 0)
    # the proposal is judged by the refinement's evaluator (it is the study's first trial: no new calls)
    proposed = Window(start, stop, refined_eval.quality(start, stop) if stop > start else 1.0,
                      refined_eval.cost(start, stop))
    return OracleReport(curve=curve, small_cost=small_cost, proposal=proposed, refined=refined, oracle=oracle,
                        trials=trials, command=command,
                        large_equivalents={"probe": probe_cost,
                                           "refinement": refinement_cost,
                                           "sweep": oracle_eval.large_equivalents},
                        seconds={"probe": probe_seconds, "refinement": refine_seconds, "sweep": sweep_seconds})


__all__ = ["OracleReport", "Window", "check_oracle"]
