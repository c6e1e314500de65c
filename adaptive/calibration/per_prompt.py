"""Per-prompt calibration: a window per calibration prompt (the cheapest candidate that keeps the
quality target on that prompt's samples, keyed by :func:`~adaptive.profiles.prompt_key`), and the
online controller fitted to those windows.

Candidates cost nothing new where the study or this process already measured them: the
:class:`~adaptive.calibration.evaluation.Evaluator` keeps every window's quality per sample.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import optuna

from adaptive.calibration.evaluation import Evaluator, PlanQuality, StepSearch
from adaptive.calibration.search import best_window
from adaptive.detect import Boundaries, ChangePointDetector, boundaries_from_steps
from adaptive.probing import DivergenceCurve, Reference
from adaptive.profiles import Profile
from adaptive.records import PerPrompt, Window


PER_PROMPT_OFFSETS = (-6, -4, -2, 2, 4, 6)


STUDY_WINDOWS_PER_PROMPT = 40


def _candidate_windows(evaluator: Evaluator, study: optuna.Study, start: int, stop: int,
                       proposals: Sequence[Boundaries | None]) -> list[tuple[int, int]]:
    """Windows judged per prompt: the pair window with either end moved, each prompt's change-point
    proposal, the study's windows (also those another worker or an earlier run evaluated: infeasible
    on average can be feasible for one prompt) and every window this process already evaluated
    (free: cached per sample)."""
    n = evaluator.n
    windows = set(evaluator.cache)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))[:STUDY_WINDOWS_PER_PROMPT]:
        a, b = int(t.params["start"]), int(t.user_attrs.get("stop", t.params["start"]))
        if a < b:
            windows.add((a, b))
    if start < stop:
        windows.add((start, stop))
        windows |= {(start, min(n, max(start + 1, stop + d))) for d in PER_PROMPT_OFFSETS}
        windows |= {(min(stop - 1, max(0, start + d)), stop) for d in PER_PROMPT_OFFSETS}
    windows |= {(p.start, p.stop) for p in proposals if p is not None and not p.is_large_only}
    return sorted(windows)


def with_per_prompt(profile: Profile, search: StepSearch, study: optuna.Study, curve: DivergenceCurve,
                     reference: Reference, num_conds: int, num_seeds: int, target: float,
                     detector: ChangePointDetector, progress: bool) -> Profile:
    """Per-prompt windows (cheapest candidate meeting the target on that prompt's samples) and the
    online controller fitted to them."""
    from tqdm.auto import tqdm

    from adaptive.controller import fit_controller
    from adaptive.denoisers import select_rows
    from adaptive.profiles import prompt_key

    evaluator = search.full
    batch = len(reference.final)
    rows_of = [list(range(k * num_seeds, (k + 1) * num_seeds)) for k in range(num_conds)]
    proposals = []
    for rows in rows_of:
        values = curve.rel_l2[:, rows].mean(axis=1)
        proposals.append(detector.fit(values, curve.grid).predict())
    start, stop, _, _ = best_window(study, target, evaluator.n)  # the pair-level window on the full grid
    candidates = _candidate_windows(evaluator, study, start, stop, proposals)
    for a, b in tqdm(candidates, desc="per-prompt windows", disable=not progress, leave=False):
        evaluator.qualities(a, b)
    windows: dict[str, Window] = {}
    starts: list[int | None] = []
    stops: list[int | None] = []
    for k, rows in enumerate(rows_of):
        best = (0, 0, 1.0, 1.0)
        for a, b in candidates:
            quality, cost = float(evaluator.qualities(a, b)[rows].mean()), evaluator.cost(a, b)
            if quality >= target and (cost, -quality) < (best[3], -best[2]):
                best = (a, b, quality, cost)
        chosen = boundaries_from_steps(curve.grid, best[0], best[1])
        key = prompt_key(select_rows(reference.cond, batch, [rows[0]]))
        windows[key] = Window(best[0], best[1], chosen.sigma_in, chosen.sigma_out, best[2], best[3])
        starts += [best[0] if best[0] < best[1] else None] * num_seeds
        stops += [best[1] if best[0] < best[1] else None] * num_seeds
    prompts = [k for k in range(num_conds) for _ in range(num_seeds)]
    # On an unseen prompt "online" without the controller runs the pair window: the controller must cost less.
    controller = fit_controller(curve.grid.tolist(), curve.rel_l2.T, starts, stops, prompts, evaluator.small_cost,
                                quality=PlanQuality(evaluator), target=target, fallback_cost=evaluator.cost(start, stop))
    if controller.fallback:
        warnings.warn(f"the online controller is not used: {controller.fallback}. schedule='online' runs the "
                      "stored per-prompt windows (the pair window for prompts not calibrated) instead; calibrate "
                      "on more prompts to fit one", stacklevel=3)
    mean_cost = float(np.mean([w.cost for w in windows.values()]))
    per_prompt = PerPrompt(windows, tuple(candidates), mean_cost, "pair-level window for prompts not calibrated")
    probe = profile.cost.probe_large_equivalents_per_sample
    spent = dataclasses.replace(profile.cost, calibration_large_equivalents_per_sample=(
        (0.0 if probe is None else probe) + search.large_equivalents))
    return dataclasses.replace(profile, per_prompt=per_prompt, controller=controller, cost=spent)


__all__ = ["PER_PROMPT_OFFSETS", "STUDY_WINDOWS_PER_PROMPT", "with_per_prompt"]
