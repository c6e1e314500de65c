"""The Optuna search over plans: the study (shared by every worker that names it), its objective
(least compute that keeps the quality target), the proposal and Large-alone ladder it starts from,
the bisection of Large-alone step counts, and what is read back from it (measured plans, the best
plan and window). :func:`sweep` is the exhaustive oracle the search is checked against.

Example:
    >>> _value(0.97, 0.4, target=0.75), _value(0.5, 0.4, target=0.75)  # feasible: its compute; else after 1.0
    (0.4, 1.25)
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import time
from typing import Any

import optuna

from adaptive.calibration.evaluation import Evaluator, StepSearch
from adaptive.detect import Boundaries
from adaptive.errors import CalibrationError
from adaptive.profiles import ProfileStore
from adaptive.records import MeasuredPlan
from adaptive.storage import open_storage, storage_errors


def default_storage(store: ProfileStore) -> str:
    """SQLite next to the profiles: ``sqlite:///<store>/studies.db``."""
    store.root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store.root / 'studies.db').resolve()}"


def make_study(storage: Any, study_name: str, seed: int | None = 0) -> optuna.Study:
    """The Optuna study of a calibration: shared by every worker that names it (see
    :func:`adaptive.storage.open_storage` for URLs, journal files and heartbeats).

    The worker that creates the study samples with ``seed`` (a fresh study is reproducible); a worker
    that joins an existing one gets a sampler seed of its own, or every worker of a shared study
    would propose the same windows.
    """
    url = storage
    storage = open_storage(storage)

    def sampler(value: int | None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=value, n_startup_trials=6)

    with storage_errors(url):  # e.g. a read-only database file: said now, not after the trials
        try:
            return optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                       load_if_exists=False, sampler=sampler(seed))
        except optuna.exceptions.DuplicatedStudyError:
            joined = None if seed is None else seed + 1 + secrets.randbelow(2**31 - 2)
            return optuna.load_study(storage=storage, study_name=study_name, sampler=sampler(joined))


def _objective(search: StepSearch, target: float, search_steps: bool, n_trials: int | None = None):
    n = search.full.n

    def objective(trial: optuna.Trial) -> float:
        if n_trials is not None and _over_budget(trial, n_trials):
            trial.study.stop()  # other workers' trials filled the budget: do no model work
            raise optuna.TrialPruned(f"{n_trials} trials are complete")
        trial.set_user_attr("worker_pid", os.getpid())
        steps = trial.suggest_int("steps", 1, n) if search_steps else n
        start = trial.suggest_int("start", 0, n - 1)
        length = trial.suggest_int("length", 0, n)
        stop = min(n, start + length)
        first, last = search.window_on(steps, start, stop)
        evaluator = search.at(steps)
        quality = evaluator.quality(first, last)
        cost = evaluator.cost(first, last)
        trial.set_user_attr("stop", stop)
        trial.set_user_attr("steps", steps)
        trial.set_user_attr("window", [first, last])  # Small's steps on the grid of `steps`
        trial.set_user_attr("quality", quality)
        trial.set_user_attr("cost", cost)
        return _value(quality, cost, target)

    return objective


BUDGET_POLL_SECONDS = 1.0


def _over_budget(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``n_trials`` are already complete, or would be once the trials other workers started
    before this one finish (MaxTrialsCallback counts complete trials only, so concurrent workers
    overshoot). Running trials are counted only on storages with heartbeats, where a dead worker's
    trial is failed and re-queued after the grace period; until the others finish, this worker waits
    (it does no model work) rather than run a trial past the budget."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled

    study = trial.study
    heartbeat = is_heartbeat_enabled(study._storage)  # no heartbeat (journal files): complete trials only
    while True:
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.RUNNING))
        complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        if complete >= n_trials:
            return True
        earlier = sum(t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number for t in trials)
        if not heartbeat or complete + earlier < n_trials:
            return False
        time.sleep(BUDGET_POLL_SECONDS)
        fail_stale_trials(study)  # a dead worker's trial: failed, re-queued, no longer counted


def _value(quality: float, cost: float, target: float) -> float:
    """Feasible plans rank by compute; infeasible ones (a non-finite quality too) after Large-only (1.0)."""
    if quality >= target:
        return cost
    return 1.0 + (target - quality if math.isfinite(quality) else 1.0)


Plan = MeasuredPlan  # one measured candidate (steps -1: a study from before step search, on the full grid)


def measured_plans(study: optuna.Study) -> list[Plan]:
    """Every distinct plan the study measured (the latest value of each), cheapest first."""
    plans: dict[tuple[int, int, int], Plan] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        quality, cost = t.user_attrs.get("quality"), t.user_attrs.get("cost")
        if quality is None or cost is None:
            continue
        steps = int(t.user_attrs.get("steps", t.params.get("steps", 0)) or 0)
        if "window" in t.user_attrs:
            first, last = (int(v) for v in t.user_attrs["window"])
        else:  # a study from before step search: windows on the full grid
            first, last = int(t.params["start"]), int(t.user_attrs["stop"])
            steps = steps or -1
        if first >= last:
            first = last = 0
        plans[(steps, first, last)] = Plan(steps, first, last, float(quality), float(cost))
    return sorted(plans.values(), key=lambda p: (p.cost, -p.quality))


def best_plan(study: optuna.Study, target: float, num_steps: int) -> Plan:
    """The cheapest measured plan that meets ``target`` (ties: the better one); Large with all
    ``num_steps`` steps when none does."""
    best = Plan(num_steps, 0, 0, 1.0, 1.0)
    for plan in measured_plans(study):
        steps = num_steps if plan.steps == -1 else plan.steps
        if plan.quality >= target and (plan.cost, -plan.quality) < (best.cost, -best.quality):
            best = dataclasses.replace(plan, steps=steps)
    return best


def best_window(study: optuna.Study, target: float, num_steps: int | None = None) -> tuple[int, int, float, float]:
    """The cheapest window on the full grid of ``num_steps`` that meets ``target`` (per-prompt
    windows start from it); plans on coarser grids and Large alone are skipped."""
    best = (0, 0, 1.0, 1.0)  # Large only: always feasible
    for plan in measured_plans(study):
        if num_steps is not None and plan.steps not in (num_steps, -1):
            continue
        if not plan.is_large_only and plan.quality >= target and (plan.cost, -plan.quality) < (best[3], -best[2]):
            best = (plan.start, plan.stop, plan.quality, plan.cost)
    return best


LADDER = (0.25, 0.5, 0.75)  # Large-only step counts tried first, as fractions of num_steps


def refine(evaluator: Evaluator | StepSearch, proposal: Boundaries | None, quality_target: float, n_trials: int,
           storage: Any, study_name: str, progress: bool = True, seed: int | None = 0,
           search_steps: bool = False, study: optuna.Study | None = None) -> optuna.Study:
    """Run (or join) the Optuna study seeded with the detector's proposal.

    With ``search_steps`` (give a :class:`StepSearch`) the step count is a parameter too: a new
    study is first given Large alone with a quarter, half and three quarters of the steps, and
    after the ``n_trials`` trials the least Large-only step count meeting the target is pinned down
    by bisection (each probe recorded in the study as one more trial; quality is taken to rise with
    steps), so "Large with fewer steps" is always measured. ``n_trials=0`` runs nothing. ``study``:
    one already made by :func:`make_study` (calibrate opens it before any model call).
    """
    search = evaluator if isinstance(evaluator, StepSearch) else StepSearch(evaluator, shift=1.0)
    if search_steps and not isinstance(evaluator, StepSearch):
        raise CalibrationError("search_steps=True needs a StepSearch (it knows the grid's shift)")
    n = search.full.n
    full = {"steps": n} if search_steps else {}
    study = study if study is not None else make_study(storage, study_name, seed)
    if n_trials > 0 and not study.trials and proposal is not None:
        window = (proposal.start, proposal.stop - proposal.start) if not proposal.is_large_only else (0, n)
        study.enqueue_trial({**full, "start": window[0], "length": window[1]})
    if n_trials > 0 and search_steps and len(study.trials) <= 1:
        for steps in sorted({max(1, round(n * f)) for f in LADDER} - {n}):
            study.enqueue_trial({"steps": steps, "start": 0, "length": 0})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if n_trials > done:
        stop_at = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,))
        study.optimize(_objective(search, quality_target, search_steps, n_trials), n_trials=n_trials - done,
                       callbacks=[stop_at], show_progress_bar=progress)
    if n_trials > 0 and search_steps:
        _bisect_large_only(study, search, quality_target)
    return study


def _record_large_only(study: optuna.Study, search: StepSearch, steps: int, target: float) -> float:
    """Measure Large alone with ``steps`` steps and add it to the study as a complete trial."""
    n = search.full.n
    evaluator = search.at(steps)
    quality, cost = evaluator.quality(0, 0), evaluator.cost(0, 0)
    study.add_trial(optuna.trial.create_trial(
        params={"steps": steps, "start": 0, "length": 0},
        distributions={"steps": optuna.distributions.IntDistribution(1, n),
                       "start": optuna.distributions.IntDistribution(0, n - 1),
                       "length": optuna.distributions.IntDistribution(0, n)},
        value=_value(quality, cost, target),
        user_attrs={"worker_pid": os.getpid(), "stop": 0, "steps": steps, "window": [0, 0], "quality": quality,
                    "cost": cost}))
    return quality


def _bisect_large_only(study: optuna.Study, search: StepSearch, target: float) -> None:
    """Pin down the least step count with which Large alone meets ``target``: between the most
    steps measured to fail and the fewest measured to pass (all ``n`` always pass), halve until
    they are adjacent. A non-finite quality fails; at most ``2 log2(n) + 2`` probes."""
    n = search.full.n
    measured = {p.steps: p.quality for p in measured_plans(study) if p.is_large_only and 0 < p.steps <= n}
    measured[n] = 1.0
    for _ in range(2 * max(n, 2).bit_length() + 2):
        high = min(steps for steps, quality in measured.items() if quality >= target)
        low = max((steps for steps, quality in measured.items() if not quality >= target and steps < high),
                  default=0)
        if high - low <= 1:
            return
        middle = (low + high) // 2
        measured[middle] = _record_large_only(study, search, middle, target)


def windows_table(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's complete trials as rows (start, stop, quality, cost), for reports."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        rows.append({"trial": t.number, "steps": t.user_attrs.get("steps"), "start": t.params["start"],
                     "stop": t.user_attrs.get("stop"), "window": t.user_attrs.get("window"),
                     "quality": t.user_attrs.get("quality"), "cost": t.user_attrs.get("cost"), "value": t.value})
    return rows


def sweep(evaluator: Evaluator, quality_target: float, progress: bool = True) -> tuple[int, int, float, float]:
    """The oracle: every window on the grid; the cheapest one that meets the target."""
    from tqdm.auto import tqdm

    n = evaluator.n
    best = (0, 0, 1.0, 1.0)
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n + 1)]
    for a, b in tqdm(pairs, desc="oracle sweep", disable=not progress):
        quality = evaluator.quality(a, b)
        cost = evaluator.cost(a, b)
        if quality >= quality_target and (cost, -quality) < (best[3], -best[2]):
            best = (a, b, quality, cost)
    return best


__all__ = ["BUDGET_POLL_SECONDS", "LADDER", "Plan", "best_plan", "best_window", "default_storage", "make_study",
           "measured_plans", "refine", "sweep", "windows_table"]
