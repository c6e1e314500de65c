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

import numpy as np
import optuna
import torch

from adaptive.calibration.evaluation import Evaluator, StepSearch, optimistic
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
    ledger = search.ledger

    def objective(trial: optuna.Trial) -> float:
        if n_trials is not None and _over_budget(trial, n_trials):
            trial.set_user_attr("record", "n_trials reached")  # not a search trial: not counted as one
            trial.study.stop()  # other workers' trials filled the budget: do no model work
            raise optuna.TrialPruned(f"{n_trials} trials are complete")
        trial.set_user_attr("worker_pid", os.getpid())
        # Grids with fewer steps than Large alone was measured to need are not searched: a Small
        # there only loses more.
        steps = trial.suggest_int("steps", min(search.least_steps, n), n) if search_steps else n
        start = trial.suggest_int("start", 0, n - 1)
        length = trial.suggest_int("length", 0, n)
        stop = min(n, start + length)
        first, last = search.window_on(steps, start, stop)
        evaluator = search.at(steps)
        cost = evaluator.cost(first, last)
        trial.set_user_attr("stop", stop)
        trial.set_user_attr("steps", steps)
        trial.set_user_attr("window", [first, last])  # Small's steps on the grid of `steps`
        trial.set_user_attr("cost", cost)
        if cost >= _best_cost(trial.study, target, n, full_grid=steps == n) - 1e-12:
            trial.set_user_attr("skipped", "cannot beat the best plan measured")
            raise optuna.TrialPruned("costs as much as a plan already known to meet the target")
        before = ledger.total
        # Reported as the shortfall of the optimistic bound (lower is better, as the study minimizes):
        # the ThresholdPruner prunes a positive one, and TPE ranks pruned trials by it the right way.
        quality, seen, cut = evaluator.screen(first, last, target, keep_going=lambda bound, step: (
            trial.report(target - bound, step), not trial.should_prune())[1], budgeted=True)
        trial.set_user_attr("spent", ledger.total - before)  # Large calls per calibration sample
        if seen:
            trial.set_user_attr("quality", quality)
            trial.set_user_attr("samples", seen)
            trial.set_user_attr("of", evaluator.samples)
        if cut:
            ledger.skip()
            trial.set_user_attr("skipped", "budget")
            trial.study.stop()
            raise optuna.TrialPruned("the calibration budget is spent")
        if seen < evaluator.samples:
            raise optuna.TrialPruned("misses the target on the samples seen")
        return _value(quality, cost, target)

    return objective


def _best_cost(study: optuna.Study, target: float, num_steps: int, full_grid: bool) -> float:
    """The least cost of a plan judged on every sample that meets ``target``: among windows on the
    full grid (``full_grid``: what a caller who fixes the step count runs) or among all plans."""
    if full_grid:
        return best_window(study, target, num_steps)[3]
    return best_plan(study, target, num_steps).cost


def _trials_done(study: optuna.Study, running: bool = False) -> int:
    """Search trials that are over (complete or pruned; ``running``: also those under way), not
    counting the step-count records :func:`_fewer_steps` adds."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) + (
        (optuna.trial.TrialState.RUNNING,) if running else ())
    return sum("record" not in t.user_attrs for t in study.get_trials(deepcopy=False, states=states))


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
    heartbeat = is_heartbeat_enabled(study._storage)  # no heartbeat (journal files): finished trials only
    while True:
        trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                     optuna.trial.TrialState.PRUNED,
                                                                     optuna.trial.TrialState.RUNNING))
                  if "record" not in t.user_attrs]
        complete = sum(t.state != optuna.trial.TrialState.RUNNING for t in trials)
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
    """Every distinct plan the study measured, cheapest first: judged on every sample, or screened out
    on some (``samples`` says how many); of several measurements of one plan, the one on most samples."""
    plans: dict[tuple[int, int, int], Plan] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                      optuna.trial.TrialState.PRUNED)):
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
        seen, of = t.user_attrs.get("samples"), t.user_attrs.get("of")
        partial = seen is not None and of is not None and int(seen) < int(of)
        if (t.state == optuna.trial.TrialState.PRUNED and not partial) or (seen is not None and int(seen) < 1):
            continue  # stopped before any sample, or by another worker's budget
        plan = Plan(steps, first, last, float(quality), float(cost), samples=int(seen) if partial else None)
        earlier = plans.get((steps, first, last))
        def judged(p: Plan) -> float:
            return math.inf if p.samples is None else p.samples

        if earlier is None or judged(earlier) <= judged(plan):
            plans[(steps, first, last)] = plan
    return sorted(plans.values(), key=lambda p: (p.cost, -p.quality))


def best_plan(study: optuna.Study, target: float, num_steps: int) -> Plan:
    """The cheapest plan judged on every sample that meets ``target`` (ties: the better one); Large
    with all ``num_steps`` steps when none does."""
    best = Plan(num_steps, 0, 0, 1.0, 1.0)
    for plan in measured_plans(study):
        steps = num_steps if plan.steps == -1 else plan.steps
        if plan.samples is None and plan.quality >= target and (plan.cost, -plan.quality) < (best.cost, -best.quality):
            best = dataclasses.replace(plan, steps=steps)
    return best


def best_window(study: optuna.Study, target: float, num_steps: int | None = None) -> tuple[int, int, float, float]:
    """The cheapest window on the full grid of ``num_steps`` judged on every sample that meets
    ``target`` (per-prompt windows start from it); plans on coarser grids and Large alone are skipped."""
    best = (0, 0, 1.0, 1.0)  # Large only: always feasible
    for plan in measured_plans(study):
        if num_steps is not None and plan.steps not in (num_steps, -1):
            continue
        if (not plan.is_large_only and plan.samples is None and plan.quality >= target
                and (plan.cost, -plan.quality) < (best[3], -best[2])):
            best = (plan.start, plan.stop, plan.quality, plan.cost)
    return best


def refine(evaluator: Evaluator | StepSearch, proposal: Boundaries | None, quality_target: float, n_trials: int,
           storage: Any, study_name: str, progress: bool = True, seed: int | None = 0,
           search_steps: bool = False, study: optuna.Study | None = None) -> optuna.Study:
    """Run (or join) the Optuna study seeded with the detector's proposal, within the budget of the
    evaluator's :class:`~adaptive.calibration.evaluation.Ledger`.

    The proposal is judged first; with ``search_steps`` (give a :class:`StepSearch`) the least step
    count with which Large alone meets the target is then pinned down (:func:`_fewer_steps`, recorded
    in the study), and the step count is a parameter of the trials that follow, from that count up.
    Every trial is judged on a group of samples first and pruned (Optuna's ``ThresholdPruner`` on an
    optimistic bound of its quality) as soon as it cannot meet the target; a trial that costs as
    much as a plan already known to meet it is pruned before any model call. ``n_trials`` counts
    every trial (``0`` runs nothing); the search also stops when the ledger's budget is spent.
    ``study``: one already made by :func:`make_study` (calibrate opens it before any model call).
    """
    search = evaluator if isinstance(evaluator, StepSearch) else StepSearch(evaluator, shift=1.0)
    if search_steps and not isinstance(evaluator, StepSearch):
        raise CalibrationError("search_steps=True needs a StepSearch (it knows the grid's shift)")
    n = search.full.n
    full = {"steps": n} if search_steps else {}
    study = study if study is not None else make_study(storage, study_name, seed)
    study.pruner = optuna.pruners.ThresholdPruner(upper=0.0)  # on target - optimistic quality
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search.least_steps = 1 if search_steps else n
    objective = _objective(search, quality_target, search_steps, n_trials)
    ledger = search.ledger

    def run(count: int) -> None:
        count = min(count, n_trials - _trials_done(study))
        if count > 0:
            study.optimize(objective, n_trials=count, callbacks=[_StopAt(n_trials)], show_progress_bar=progress)

    if n_trials > 0 and not study.trials and proposal is not None and not proposal.is_large_only:
        study.enqueue_trial({**full, "start": proposal.start, "length": proposal.stop - proposal.start})
        with ledger.phase("window trials"):
            run(1)  # a window that meets the target bounds what the step counts must beat
    if n_trials > 0 and search_steps:
        with ledger.phase("fewer steps"):
            search.least_steps = _fewer_steps(study, search, quality_target)
    with ledger.phase("window trials"):
        run(n_trials)
    search.trials_not_run = max(0, n_trials - _trials_done(study))
    return study


class _StopAt:
    """Stop the study once ``n_trials`` search trials are over (Optuna's MaxTrialsCallback counts
    one state; here complete and pruned trials count, the step-count records do not)."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _trials_done(study) >= self.n_trials:
            study.stop()


def _record(study: optuna.Study, search: StepSearch, steps: int, quality: float, samples: int, target: float,
            outcome: str) -> None:
    """Add Large alone with ``steps`` steps, judged on ``samples`` samples, to the study: a complete
    trial when judged on all of them, a pruned one otherwise. ``outcome``: ``pass``/``fail`` (of the
    optimistic reading of the samples judged, what the search decided on) or ``budget`` (cut short)."""
    if samples < 1:
        return
    n, of = search.full.n, search.full.samples
    cost = search.at(steps).cost(0, 0)
    complete = samples >= of
    study.add_trial(optuna.trial.create_trial(
        params={"steps": steps, "start": 0, "length": 0},
        distributions={"steps": optuna.distributions.IntDistribution(1, n),
                       "start": optuna.distributions.IntDistribution(0, n - 1),
                       "length": optuna.distributions.IntDistribution(0, n)},
        value=_value(quality, cost, target) if complete else None,
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED,
        user_attrs={"worker_pid": os.getpid(), "stop": 0, "steps": steps, "window": [0, 0], "quality": quality,
                    "cost": cost, "samples": samples, "of": of, "record": "fewer steps", "outcome": outcome}))


def _fewer_steps(study: optuna.Study, search: StepSearch, target: float) -> int:
    """Pin down the least step count with which Large alone meets ``target`` among those cheaper than
    the best plan known; return the least step count not measured to fail.

    Step counts are screened on the first group of samples: between the most steps that fail and
    the fewest that pass, the next count tried is where the error of the last one measured, scaled as
    Euler's error is (by ``k_last / k``), predicts the target is met (halving when that prediction
    does not narrow the bracket), until the two are adjacent. The least passing count is then judged
    on every sample (and the next one, if it fails there). Quality is taken to rise with steps; a
    non-finite quality fails; every measurement is recorded in the study."""
    n = search.full.n
    ledger = search.ledger
    group = search.full.chunks[0]
    best = best_plan(study, target, n).cost
    cap = min(n - 1, math.ceil(best * n - 1e-9) - 1)  # more steps cost as much as a known plan
    passed: set[int] = set()
    failed: set[int] = set()
    for t in study.get_trials(deepcopy=False):  # this study's earlier step counts (another worker's, a re-run's)
        steps, outcome = t.user_attrs.get("steps"), t.user_attrs.get("outcome")
        if t.user_attrs.get("record") == "fewer steps" and steps is not None and 0 < steps < n:
            if outcome == "pass":
                passed.add(int(steps))
            elif outcome == "fail":
                failed.add(int(steps))
    for plan in measured_plans(study):  # Large alone judged in full by any trial
        if plan.is_large_only and 0 < plan.steps < n and plan.samples is None:
            (passed if plan.quality >= target else failed).add(plan.steps)
    measured: list[int] = []
    while True:
        low = max(failed | {0})
        high = min([k for k in passed if k > low] + [cap + 1])
        if high - low <= 1:
            break
        steps = _guess(search, target, low, high, measured, group)
        evaluator = search.at(steps)
        if not ledger.affords(evaluator.price(0, 0, group), 1):
            ledger.skip()
            break
        bound = optimistic(evaluator.qualities(0, 0, group))
        outcome = "pass" if bound >= target else "fail"
        _record(study, search, steps, float(np.mean(evaluator.qualities(0, 0, group))), len(group), target, outcome)
        (passed if outcome == "pass" else failed).add(steps)
        measured.append(steps)
    steps = min([k for k in passed if k > max(failed | {0})] + [cap + 1])
    while steps <= cap:  # confirm on every sample
        evaluator = search.at(steps)
        quality, seen, cut = evaluator.screen(0, 0, target, budgeted=True)
        met = seen == evaluator.samples and quality >= target
        _record(study, search, steps, quality, seen, target, "budget" if cut else "pass" if met else "fail")
        if cut:
            ledger.skip()
            break
        if met:
            break
        failed.add(steps)
        steps += 1
    return max(failed | {0}) + 1


def _guess(search: StepSearch, target: float, low: int, high: int, measured: list[int], group: list[int]) -> int:
    """The next step count to screen in ``(low, high)``.

    The first is the most steps that could still beat the best plan known (when a plan is known, one
    measurement may settle it), else the middle. After that: Euler's error shrinks as a power of the
    step count, so the last measured error, scaled by ``(k_last / k) ** p``, predicts each count's
    quality (``p`` fitted to the last two measurements' error sizes, 1 after one); the least count
    predicted to meet the target is tried (one below the bracket's top when none is: if it fails, the
    count is pinned)."""
    if not measured:
        return high - 1 if high <= search.full.n - 1 else (low + high) // 2
    last = measured[-1]
    evaluator = search.at(last)
    index = torch.as_tensor(group, dtype=torch.long).to(evaluator.target.device)
    reference = evaluator.target[index]
    error = evaluator.path.at(last, group) - reference
    power = 1.0
    if len(measured) > 1 and measured[-2] != last:
        before = search.at(measured[-2]).path.at(measured[-2], group) - reference
        ratio = float(before.norm() / error.norm().clamp_min(1e-30))
        if math.isfinite(ratio) and ratio > 0:
            power = min(4.0, max(0.5, math.log(ratio) / math.log(last / measured[-2])))

    def predicted(k: int) -> float:
        x = reference + error * (last / k) ** power
        return float(np.mean(evaluator.metric(x, reference).detach().float().cpu().numpy()))

    lo, hi = low, high  # least k in (lo, hi] predicted to pass, by halving (prediction rises with k)
    while hi - lo > 1:
        k = (lo + hi) // 2
        if predicted(k) >= target:
            hi = k
        else:
            lo = k
    if hi >= high:  # none predicted to pass: the count just below the fewest known to pass pins it,
        # unless that was just tried (and passed): then halve, not walk down one count at a time
        return high - 1 if measured[-1] != high else (low + high) // 2
    return hi if hi > low + 1 else low + 1


def spending(search: StepSearch) -> dict[str, Any]:
    """The ledger's account for the profile's :class:`~adaptive.records.Cost`: Large calls per sample
    in all, Large passes per sample by phase, the budget, and what the budget left unexplored."""
    ledger = search.ledger
    left = [f"{count} {phase} candidate(s)" for phase, count in ledger.skipped.items()]
    if search.trials_not_run:
        left.append(f"{search.trials_not_run} search trial(s) not run")
    unexplored = ("the budget of {:g} Large passes per sample left unexplored: {}; a larger --budget explores "
                  "them".format(ledger.budget, ", ".join(left))) if left and ledger.budget is not None else None
    return {"calibration_large_equivalents_per_sample": ledger.total, "budget_passes": ledger.budget,
            "passes_by_phase": tuple(ledger.breakdown().items()), "unexplored": unexplored}


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


__all__ = ["BUDGET_POLL_SECONDS", "Plan", "best_plan", "best_window", "default_storage", "make_study",
           "measured_plans", "refine", "spending", "sweep", "windows_table"]
