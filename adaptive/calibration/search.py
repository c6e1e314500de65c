"""The Optuna search over plans: the study (shared by every worker that names it), its objective
(least compute that keeps the quality target), the proposal and Large-alone ladder it starts from,
the bisection of Large-alone step counts, the plans predicted from the probe and confirmed cheapest
first, and what is read back from it (measured plans, the best plan and window). :func:`sweep` is the
exhaustive oracle the search is checked against (and :mod:`adaptive.toy.exact` the known-answer suite).

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
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch

from adaptive.calibration.evaluation import Evaluator, StepSearch, optimistic
from adaptive.detect import Boundaries
from adaptive.errors import CalibrationError
from adaptive.profile_store import ProfileStore
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

    The proposal is judged first (unless it saves less than Large alone with the fewest steps the
    probe's replay predicts). With ``search_steps`` (give a :class:`StepSearch`), cheapest first: the
    least step count with which Large alone meets the target is screened on a group of samples
    (:func:`_fewer_steps`, starting where the probe's replay predicts); the plans predicted from the
    probe's divergence and what was measured are judged cheapest first until one meets the target
    (:func:`_predicted_plans`); Large alone with that count is judged on every sample only if still
    the cheapest; the step count is a parameter of the trials that follow, from that count up, and
    their measurements predict plans once more at the end. Every measurement is recorded in the study.
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

    if n_trials > 0 and not study.trials and proposal is not None and not proposal.is_large_only and \
            not (search_steps and search.full.cost(proposal.start, proposal.stop) >= _replayed_least(search, quality_target) / n):
        # (a proposal that saves less than Large with the fewer steps the probe's replay predicts is not worth its run)
        study.enqueue_trial({**full, "start": proposal.start, "length": proposal.stop - proposal.start})
        with ledger.phase("window trials"):
            run(1)  # a window that meets the target bounds what the step counts must beat
    if n_trials > 0 and search_steps:
        with ledger.phase("fewer steps"):
            search.least_steps = _fewer_steps(study, search, quality_target)
        # Cheapest first: the plans predicted from the probe and what was measured, then Large alone with
        # the fewest steps that passed their screening, confirmed on every sample only if still the cheapest.
        with ledger.phase("predicted plans"):
            _predicted_plans(study, search, quality_target)
        with ledger.phase("fewer steps"):
            _confirm_fewer_steps(study, search, quality_target)
    with ledger.phase("window trials"):
        run(n_trials)
    if n_trials > 0 and search_steps:
        with ledger.phase("predicted plans"):
            _predicted_plans(study, search, quality_target)
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
    _record_plan(study, search, steps, (0, 0), (0, 0), quality, samples, target, "fewer steps", outcome=outcome)


def _counts(study: optuna.Study, n: int, target: float) -> tuple[set[int], set[int]]:
    """The step counts below ``n`` with which Large alone was measured to pass and to fail (screened on a
    group by :func:`_fewer_steps`, or judged on every sample by any trial)."""
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
    return passed, failed


def _fewer_steps(study: optuna.Study, search: StepSearch, target: float) -> int:
    """Pin down, on the first group of samples, the least step count with which Large alone meets
    ``target`` among those cheaper than the best plan known; return the least step count not measured
    to fail. :func:`_confirm_fewer_steps` judges it on every sample, once cheaper plans had their turn.

    Between the most steps that fail and the fewest that pass, the next count screened is the least
    one predicted to pass (:func:`_guess`: the probe's replay, scaled by the last count measured), until
    the two are adjacent. Quality is taken to rise with steps; a non-finite quality fails; every
    measurement is recorded in the study."""
    n = search.full.n
    ledger = search.ledger
    group = search.full.chunks[0]
    best = best_plan(study, target, n).cost
    cap = min(n - 1, math.ceil(best * n - 1e-9) - 1)  # more steps cost as much as a known plan
    passed, failed = _counts(study, n, target)
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
    return max(failed | {0}) + 1


def _confirm_fewer_steps(study: optuna.Study, search: StepSearch, target: float) -> None:
    """Judge on every sample the least step count that passed its screening (and the next ones, while
    they fail there), when it is cheaper than the best plan known."""
    n = search.full.n
    passed, failed = _counts(study, n, target)
    cap = min(n - 1, math.ceil(best_plan(study, target, n).cost * n - 1e-9) - 1)
    steps = min([k for k in passed if k > max(failed | {0})] + [cap + 1])
    # The search's answer comes before the phases the reserve is kept for (the guidance interval, per-prompt
    # windows): they refine the recommended plan, which is worth refining only once it is confirmed.
    ledger = search.ledger
    kept, ledger.reserve = ledger.reserve, 0.0
    try:
        while steps <= cap:
            evaluator = search.at(steps)
            quality, seen, cut = evaluator.screen(0, 0, target, budgeted=True)
            met = seen == evaluator.samples and quality >= target
            _record(study, search, steps, quality, seen, target, "budget" if cut else "pass" if met else "fail")
            if cut:
                ledger.skip()
                return
            if met:
                return
            steps += 1
    finally:
        ledger.reserve = kept


PREDICTED_MISSES = 4  # predicted plans that miss the target before the phase gives up


def _large_losses(study: optuna.Study, n: int) -> dict[int, float]:
    """Large alone's measured loss (1 - mean quality on the samples judged) per step count; 0 at ``n``."""
    losses = {n: 0.0}
    for plan in measured_plans(study):
        if plan.is_large_only and 0 < plan.steps < n and math.isfinite(plan.quality):
            losses[plan.steps] = 1.0 - plan.quality
    return losses


def predicted_large_loss(search: StepSearch, k: int, losses: dict[int, float]) -> float:
    """Large alone's loss (1 - quality) with ``k`` steps: measured, else its replay's
    (:meth:`StepSearch.replayed_quality`) scaled by how the measured count nearest to ``k`` compared
    with its own replay (unscaled before any count is measured).
    """
    if k in losses:
        return losses[k]
    n = search.full.n
    near = min((j for j in losses if j < n), key=lambda j: abs(j - k), default=None)
    replayed = 1.0 - search.replayed_quality(k)
    if near is None:
        return replayed
    replayed_near = 1.0 - search.replayed_quality(near)
    if not replayed_near > 1e-12:
        return replayed
    return max(0.0, replayed * losses[near] / replayed_near)


def _window_divergence(search: StepSearch, steps: int) -> np.ndarray:
    """``U[a, b]``: Small's divergence from Large summed over steps ``a .. b - 1`` of the grid of ``steps``
    (each step's sigma span times ``||v_small - v_large|| / ||x_final||``, the probe's ``weighted``
    divergence per unit sigma, interpolated in sigma from the probed steps), mean over samples: to
    first order, the error a window adds to the final sample, relative to its size."""
    if steps in search.divergence_sums:
        return search.divergence_sums[steps]
    curve = search.curve
    assert curve is not None
    spans = np.abs(np.diff(curve.grid))[curve.steps]
    density = curve.weighted.mean(axis=1) / np.maximum(spans, 1e-12)
    order = np.argsort(curve.sigmas)
    grid = np.asarray(search.at(steps).grid, float)
    per_step = np.abs(np.diff(grid)) * np.interp(grid[:-1], curve.sigmas[order], density[order])
    total = np.concatenate([[0.0], np.cumsum(per_step)])
    search.divergence_sums[steps] = np.maximum(total[None, :] - total[:, None], 0.0)
    return search.divergence_sums[steps]


def _divergence_scale(study: optuna.Study, search: StepSearch, large: dict[int, float]) -> float:
    """How much of a window's summed divergence shows as loss: the median ratio of a measured window's
    loss (less Large alone's on its grid) to its divergence (1 before any window is measured; each
    predicted plan that misses adds its own, larger ratio)."""
    n = search.full.n
    ratios = []
    for plan in measured_plans(study):
        if plan.is_large_only or not math.isfinite(plan.quality):
            continue
        steps = n if plan.steps == -1 else plan.steps
        divergence = _window_divergence(search, steps)[plan.start, plan.stop]
        if divergence > 0:
            ratios.append(max(0.0, 1.0 - plan.quality - predicted_large_loss(search, steps, large)) / divergence)
    return float(np.median(ratios)) if ratios else 1.0


def _predictions(study: optuna.Study, search: StepSearch, target: float) -> list[tuple[float, float, int, int, int]]:
    """``(cost, predicted quality, steps, start, stop)`` of every window on every grid from
    ``search.least_steps`` up that is predicted to meet ``target``, is cheaper than the best plan known
    and has not been measured, cheapest first."""
    n = search.full.n
    passed, failed = _counts(study, n, target)
    screened = [k for k in passed if k > max(failed | {0})]  # Large alone's least passing count, if screened
    best = best_plan(study, target, n).cost
    if screened:
        best = min(best, search.at(min(screened)).cost(0, 0))
    large = _large_losses(study, n)
    scale = _divergence_scale(study, search, large)
    measured = {(n if p.steps == -1 else p.steps, p.start, p.stop) for p in measured_plans(study)}
    found = []
    for k in range(max(1, search.least_steps), n + 1):
        evaluator = search.at(k)
        room = 1.0 - target - predicted_large_loss(search, k, large)
        if not room > 0 or evaluator.cost(0, k) >= best - 1e-12:
            continue
        divergence = _window_divergence(search, k)
        starts, stops = np.nonzero(np.triu(scale * divergence <= room, 1))
        for a, b in zip(starts.tolist(), stops.tolist()):
            cost = evaluator.cost(a, b)
            if cost < best - 1e-12 and (k, a, b) not in measured:
                found.append((cost, target + room - scale * float(divergence[a, b]), k, a, b))
    return sorted(found, key=lambda c: (c[0], -c[1]))


def _predicted_plans(study: optuna.Study, search: StepSearch, target: float) -> None:
    """Predict every plan's quality from what was measured and confirm the cheapest predicted to pass.

    A plan's loss is predicted as Large alone's on its grid (measured, or scaled from the nearest
    count measured, :func:`predicted_large_loss`) plus its window's divergence from the probe
    (:func:`_window_divergence`) times the median ratio of loss to divergence the measured windows
    showed (:func:`_divergence_scale`). The cheapest plan predicted to meet the target is judged
    group by group; a miss raises the ratio and the predictions are made again, until a plan meets
    the target on every sample. Its neighbours are then tried (:func:`_neighbours`), cheapest first,
    moving to each that meets it, until :data:`PREDICTED_MISSES` plans missed or the budget is spent. Each plan
    judged is recorded in the study. Nothing runs without the probe's curve (``search.curve``)."""
    if search.curve is None:
        return
    n = search.full.n
    misses = 0
    confirmed: tuple[int, int, int] | None = None
    while misses < PREDICTED_MISSES:
        if confirmed is None:
            predictions = [p[2:] for p in _predictions(study, search, target)]
        else:  # one step more for Small, or one step fewer in all, while that still meets the target
            predictions = _neighbours(study, search, target, *confirmed)
        if not predictions:
            return
        k, first, last = predictions[0]
        evaluator = search.at(k)
        quality, seen, cut = evaluator.screen(first, last, target, budgeted=True)
        _record_plan(study, search, k, _full_grid_window(search, k, first, last), (first, last), quality, seen,
                     target, "predicted")
        if cut:
            search.ledger.skip()
            return
        if seen == evaluator.samples and quality >= target:
            confirmed = (k, first, last)
        else:
            misses += 1


def _neighbours(study: optuna.Study, search: StepSearch, target: float, steps: int, first: int, last: int
                ) -> list[tuple[int, int, int]]:
    """The plans next to a confirmed one that are cheaper than the best known and not measured, cheapest
    first: Small one step earlier or later, or the same window in sigma on one step fewer."""
    best = best_plan(study, target, search.full.n).cost
    measured = {(p.steps, p.start, p.stop) for p in measured_plans(study)}
    found = {(steps, first - 1, last), (steps, first, last + 1)}
    if steps > max(1, search.least_steps):
        full = _full_grid_window(search, steps, first, last)
        found.add((steps - 1, *search.window_on(steps - 1, *full)))
    found = {(k, a, b) for k, a, b in found if 0 <= a < b <= k and (k, a, b) not in measured
             and search.at(k).cost(a, b) < best - 1e-12}
    return sorted(found, key=lambda p: search.at(p[0]).cost(p[1], p[2]))


def _full_grid_window(search: StepSearch, steps: int, first: int, last: int) -> tuple[int, int]:
    """The full grid's steps whose sigmas lie in the window ``first .. last - 1`` of the grid of ``steps``
    (the trial parameters that place it back there by sigma)."""
    if first >= last:
        return 0, 0
    grid = search.at(steps).grid
    full = search.full.grid
    sigma_in, sigma_out = grid[first], grid[last]
    inside = [i for i in range(search.full.n) if sigma_out < full[i] <= sigma_in]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)


def _record_plan(study: optuna.Study, search: StepSearch, steps: int, window: tuple[int, int],
                 on_grid: tuple[int, int], quality: float, samples: int, target: float, record: str,
                 outcome: str | None = None) -> None:
    """Add a plan judged outside the Optuna trials (full-grid ``window``, placed on the grid of ``steps``
    at ``on_grid``) to the study: complete when judged on every sample, pruned otherwise; ``record``
    says what judged it, ``outcome`` (Large alone) what the step search decided on it."""
    if samples < 1:
        return
    n, of = search.full.n, search.full.samples
    cost = search.at(steps).cost(*on_grid)
    complete = samples >= of
    study.add_trial(optuna.trial.create_trial(
        params={"steps": steps, "start": window[0], "length": window[1] - window[0]},
        distributions={"steps": optuna.distributions.IntDistribution(1, n),
                       "start": optuna.distributions.IntDistribution(0, n - 1),
                       "length": optuna.distributions.IntDistribution(0, n)},
        value=_value(quality, cost, target) if complete else None,
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED,
        user_attrs={"worker_pid": os.getpid(), "stop": window[1], "steps": steps, "window": list(on_grid),
                    "quality": quality, "cost": cost, "samples": samples, "of": of, "record": record,
                    **({"outcome": outcome} if outcome is not None else {})}))


def _least_passing(low: int, high: int, passes: Callable[[int], bool]) -> int:
    """The least ``k`` in ``(low, high]`` with ``passes(k)``, by halving (``passes`` taken to rise with
    ``k``); ``high`` when none below it passes.

    Example:
        >>> _least_passing(0, 30, lambda k: k >= 17), _least_passing(0, 30, lambda k: False)
        (17, 30)
    """
    lo, hi = low, high
    while hi - lo > 1:
        k = (lo + hi) // 2
        if passes(k):
            hi = k
        else:
            lo = k
    return hi


def _replayed_least(search: StepSearch, target: float) -> int:
    """The least step count whose replayed quality (:meth:`StepSearch.replayed_quality`) meets ``target``;
    the full count when none below it does."""
    return _least_passing(0, search.full.n, lambda k: search.replayed_quality(k) >= target)


def _guess(search: StepSearch, target: float, low: int, high: int, measured: list[int], group: list[int]) -> int:
    """The next step count to screen in ``(low, high)``: the least count whose predicted quality meets
    the target. Before any count is measured the prediction is the probe's replay
    (:meth:`StepSearch.replayed_quality`); after, the replay's loss scaled by how the last count measured
    compared with its own replay. When no count in the bracket is predicted to pass, the one just
    below its top (if that fails, the count is pinned)."""
    losses = {}
    if measured:
        last = measured[-1]
        evaluator = search.at(last)
        index = torch.as_tensor(group, dtype=torch.long).to(evaluator.target.device)
        values = evaluator.metric(evaluator.path.at(last, group), evaluator.target[index])
        losses[last] = 1.0 - float(np.mean(values.detach().float().cpu().numpy()))

    hi = _least_passing(low, high, lambda k: 1.0 - predicted_large_loss(search, k, losses) >= target)
    if hi >= high:  # none predicted to pass: the count just below the fewest known to pass pins it,
        # unless that was just tried (and passed): then halve, not walk down one count at a time
        return high - 1
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
