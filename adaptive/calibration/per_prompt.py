"""Per-prompt calibration: a window per calibration prompt (the cheapest candidate that keeps the
quality target on that prompt's samples, keyed by :func:`~adaptive.profiles.prompt_key`), and the
online controller fitted to those windows.

Candidates cost nothing new where the study or this process already measured them: the
:class:`~adaptive.calibration.evaluation.Evaluator` keeps every window's quality per sample.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import optuna

from adaptive.calibration.evaluation import Evaluator, PlanQuality, StepSearch
from adaptive.calibration.search import best_window, spending
from adaptive.detect import Boundaries, ChangePointDetector, boundaries_from_steps
from adaptive.probing import DivergenceCurve, Reference
from adaptive.profiles import Profile
from adaptive.records import PerPrompt, Window


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
    known = [w for w in evaluator.values if w[0] < w[1]]  # judged by the study on some samples
    windows: dict[str, Window] = {}
    starts: list[int | None] = []
    stops: list[int | None] = []
    ledger = evaluator.ledger
    found = [[(0, 0, 1.0, 1.0)] for _ in rows_of]
    searches = [_prompt_search(evaluator, rows, target, (start, stop), proposals[k], known, found[k])
                for k, rows in enumerate(rows_of)]
    bar = tqdm(desc="per-prompt windows", disable=not progress, leave=False)
    with ledger.phase("per-prompt"):
        while searches:  # the prompts take turns, one candidate each
            searches = [s for s in searches if next(s, StopIteration) is not StopIteration]
            bar.update()
    bar.close()
    for k, rows in enumerate(rows_of):
        best = found[k][0]
        chosen = boundaries_from_steps(curve.grid, best[0], best[1])
        key = prompt_key(select_rows(reference.cond, batch, [rows[0]]))
        windows[key] = Window(best[0], best[1], chosen.sigma_in, chosen.sigma_out, best[2], best[3])
        starts += [best[0] if best[0] < best[1] else None] * num_seeds
        stops += [best[1] if best[0] < best[1] else None] * num_seeds
    prompts = [k for k in range(num_conds) for _ in range(num_seeds)]
    # On an unseen prompt "online" without the controller runs the pair window: the controller must cost less.
    with ledger.phase("controller"):
        controller = fit_controller(curve.grid.tolist(), curve.rel_l2.T, starts, stops, prompts, evaluator.small_cost,
                                    quality=PlanQuality(evaluator), target=target,
                                    fallback_cost=evaluator.cost(start, stop))
    if controller.fallback:
        warnings.warn(f"the online controller is not used: {controller.fallback}. schedule='online' runs the "
                      "stored per-prompt windows (the pair window for prompts not calibrated) instead; calibrate "
                      "on more prompts to fit one", stacklevel=3)
    mean_cost = float(np.mean([w.cost for w in windows.values()]))
    candidates = tuple(sorted(w for w in evaluator.values if w[0] < w[1]))  # every window judged, on some samples
    per_prompt = PerPrompt(windows, candidates, mean_cost, "pair-level window for prompts not calibrated")
    spent = dataclasses.replace(profile.cost, **spending(search))
    return dataclasses.replace(profile, per_prompt=per_prompt, controller=controller, cost=spent)


PAIR_OFFSETS = (-6, -4, -2, 2, 4, 6)  # the pair window's ends moved by these many steps are candidates too


def _prompt_search(evaluator: Evaluator, rows: list[int], target: float, pair: tuple[int, int],
                   proposal: Boundaries | None, known: Sequence[tuple[int, int]],
                   best: list[tuple[int, int, float, float]]) -> Iterator[None]:
    """Search one prompt's window, judged on its samples only, one candidate per step of the
    generator (so prompts take turns and a budget is shared fairly); ``best[0]`` holds the cheapest
    window found to meet ``target`` (Large alone, ``(0, 0, 1.0, 1.0)``, when none does).

    Candidates: every window already judged on these samples (free), the prompt's own change-point
    proposal, the pair window, the pair window with either end moved by :data:`PAIR_OFFSETS` steps
    (cheapest first), then the study's other windows on the full grid, best judged first; each only
    while it is cheaper than the best found. A candidate the budget
    cannot pay for is skipped (counted by the ledger)."""
    n = evaluator.n

    def judge(a: int, b: int) -> None:
        a, b = max(0, a), min(n, b)
        cost = evaluator.cost(a, b)
        if a >= b or cost >= best[0][3]:
            return
        if not evaluator.judged(a, b)[rows].all() and not evaluator.ledger.affords(evaluator.price(a, b, rows), 1):
            evaluator.ledger.skip()
            return
        quality = float(evaluator.qualities(a, b, rows).mean())
        if quality >= target:
            best[0] = (a, b, quality, cost)

    for a, b in known:  # free: judged on these samples already
        if evaluator.judged(a, b)[rows].all():
            judge(a, b)
    for a, b in ([(proposal.start, proposal.stop)] if proposal is not None else []) + [pair]:
        judge(a, b)
        yield
    start, stop = pair
    if start < stop:
        moved = {(start, min(n, max(start + 1, stop + d))) for d in PAIR_OFFSETS}
        moved |= {(min(stop - 1, max(0, start + d)), stop) for d in PAIR_OFFSETS}
        for a, b in sorted(moved, key=lambda w: (evaluator.cost(*w), w)):
            judge(a, b)
            yield
    # The study's other windows, most promising first: the best mean over the samples that judged
    # them (a window that missed the target on average can meet it on one prompt).
    def evidence(w: tuple[int, int]) -> float:
        seen = evaluator.known[w]
        return float(evaluator.values[w][seen].mean()) if seen.any() else -math.inf

    for a, b in sorted(known, key=lambda w: (-evidence(w), evaluator.cost(*w))):
        judge(a, b)
        yield


__all__ = ["PAIR_OFFSETS", "with_per_prompt"]
