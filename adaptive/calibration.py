"""Automatic stage boundaries: probe -> change-point proposal -> Optuna refinement -> Profile.

The refinement judges what matters, the *final* sample: each trial is a Large-Small-Large run whose
quality is measured against Large-only output for the same noise and prompt. Trials restart from the
cached Large state at the window's first step, so the shared prefix is never recomputed. The study
is an ordinary Optuna study (``create_study(storage=..., load_if_exists=True)``), so several workers
can share it through SQLite, PostgreSQL or a JournalFile storage.

Example:
    >>> import tempfile
    >>> from adaptive import ModelPair, calibrate
    >>> pair = ModelPair(lambda x, s: x, lambda x, s: x)           # Small == Large
    >>> profile = calibrate(pair, [{}], num_steps=8, seeds=[0], shape=(4,), n_trials=4,
    ...                     store=tempfile.mkdtemp(), progress=False)
    >>> (profile.sigma_in, profile.sigma_out)
    (1.0, 0.0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from adaptive.detect import Boundaries, ChangePointDetector, boundaries_from_steps
from adaptive.errors import CalibrationError
from adaptive.metering import flops_per_row
from adaptive.metrics import LatentSimilarity, Metric
from adaptive.pair import ModelPair
from adaptive.probing import DivergenceCurve, Reference, run_probe
from adaptive.schedule import sigmas
from adaptive.solvers import euler
from adaptive.solvers import trajectory as euler_states
from adaptive.storage import open_storage, storage_errors
from adaptive.profiles import Profile, ProfileStore, fingerprint, safe_key, sampler_signature

DEFAULT_QUALITY_TARGET = 0.95
DEFAULT_TRIALS = 24
_FALLBACK_SMALL_COST = 0.5


class Evaluator:
    """Final-sample quality and cost of Large-Small-Large windows, restarting from cached states.

    Qualities are kept per sample (so per-prompt calibration reads them for free); the Small run of
    the last window start is cached step by step, so windows that share a start share their Small
    prefix.
    """

    def __init__(self, pair: ModelPair, reference: Reference, metric: Metric, small_cost: float,
                 target: torch.Tensor | None = None, full_steps: int | None = None) -> None:
        self.pair, self.reference, self.metric, self.small_cost = pair, reference, metric, small_cost
        self.n = len(reference.grid) - 1
        # What every result is judged against (Large with all steps) and the steps compute is counted
        # in: for a coarser grid's evaluator these are the full grid's, not its own.
        self.target = reference.final if target is None else target
        self.full_steps = self.n if full_steps is None else int(full_steps)
        self.cache: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
        self.large_equivalents = 0.0  # calls actually spent, in Large-call units per sample
        self._prefix: tuple[int, list[torch.Tensor]] = (-1, [])

    def cost(self, start: int, stop: int) -> float:
        """Compute of the window on this grid as a fraction of Large-only with all steps (1.0)."""
        return (self.n - max(stop - start, 0) * (1.0 - self.small_cost)) / self.full_steps

    def _small_until(self, start: int, stop: int) -> torch.Tensor:
        """Small's state at step ``stop`` from Large's cached state at ``start``, extending the
        cached Small run of this start (one Euler run over the steps not yet taken)."""
        if self._prefix[0] != start:
            self._prefix = (start, [self.reference.states[start]])
        states = self._prefix[1]
        done = start + len(states) - 1  # the step Small's cached run has reached
        if done < stop:
            states += euler_states(self.pair.small, states[-1], self.reference.grid[done:stop + 1],
                                   **self.reference.cond)[1:]
            for _ in range(stop - done):  # summed call by call, as counted before
                self.large_equivalents += self.small_cost
        return states[stop - start]

    @torch.no_grad()
    def qualities(self, start: int, stop: int) -> np.ndarray:
        """Per-sample metric of the blended result (Large alone on this grid when ``start >= stop``)
        against Large-only with all steps (cached per window)."""
        if start >= stop:
            if self.full_steps == self.n:
                return np.ones(len(self.reference.final))
            start = stop = 0
        key = (start, stop)
        if key not in self.cache:
            x = self.reference.final  # Large alone on this grid: its own trajectory's end
            if start < stop:
                x = self._small_until(start, stop)
                if stop < self.n:
                    x = euler(self.pair.large, x, self.reference.grid[stop:], **self.reference.cond)
                self.large_equivalents += self.n - stop
            values = self.metric(x, self.target).detach().float().cpu().numpy().astype(float)
            self.cache[key] = (values, self.cost(start, stop))
        return self.cache[key][0]

    def quality(self, start: int, stop: int) -> float:
        """Mean metric of the blended result against Large-only."""
        return float(self.qualities(start, stop).mean())


class PlanQuality:
    """Final-sample quality of one calibration sample run with any per-step plan (a list of model
    names, as :class:`~adaptive.controller.Decisions` records), restarting from Large's cached state
    at the plan's first non-Large step; cached per (sample, plan). The online controller's fit scores
    its held-out decisions with it."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.cache: dict[tuple[int, tuple[str, ...]], float] = {}

    @torch.no_grad()
    def __call__(self, row: int, models: Sequence[str]) -> float:
        from adaptive.denoisers import select_rows

        plan = tuple(models)
        if (row, plan) not in self.cache:
            ev = self.evaluator
            first = next((i for i, m in enumerate(plan) if m != "large"), len(plan))
            x = ev.reference.states[first][row:row + 1]
            cond = select_rows(ev.reference.cond, len(ev.reference.final), [row])
            grid = ev.reference.grid
            for a, b in _runs(plan, first):  # one Euler run per stretch of one model
                x = euler(ev.pair.models[plan[a]], x, grid[a:b + 1], **cond)
            ev.large_equivalents += (len(plan) - first) / len(ev.reference.final)
            self.cache[(row, plan)] = float(ev.metric(x, ev.target[row:row + 1]).float().mean())
        return self.cache[(row, plan)]


def _runs(models: Sequence[str], first: int) -> list[tuple[int, int]]:
    """The stretches ``[a, b)`` of steps from ``first`` on that one model takes in a row.

    Example:
        >>> _runs(["large", "small", "small", "large"], 1)
        [(1, 3), (3, 4)]
    """
    runs: list[tuple[int, int]] = []
    for i in range(first, len(models)):
        if runs and models[i] == models[runs[-1][0]]:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class StepSearch:
    """The candidates of a calibration on every grid it visits: ``at(n)`` is the :class:`Evaluator`
    of ``sigmas(n, shift)`` (Large's trajectory on it runs once: ``n`` Large calls per sample), and
    every candidate is judged against Large with all ``full.n`` steps, its compute counted in them.

    A window is named on the full grid (``start``, ``stop``) and placed on a coarser grid by sigma,
    as a stored profile is: Small takes the steps whose sigma lies in the window.
    """

    def __init__(self, full: Evaluator, shift: float) -> None:
        self.full, self.shift = full, float(shift)
        self.evaluators: dict[int, Evaluator] = {full.n: full}

    def at(self, steps: int) -> Evaluator:
        if steps not in self.evaluators:
            full = self.full
            grid = sigmas(steps, self.shift)
            states = euler_states(full.pair.large, full.reference.states[0], grid.tolist(), **full.reference.cond)
            reference = Reference(grid.tolist(), states, full.reference.cond)
            evaluator = Evaluator(full.pair, reference, full.metric, full.small_cost, target=full.reference.final,
                                  full_steps=full.n)
            evaluator.large_equivalents = float(steps)
            self.evaluators[steps] = evaluator
        return self.evaluators[steps]

    def window_on(self, steps: int, start: int, stop: int) -> tuple[int, int]:
        """The full grid's window ``start .. stop - 1`` placed on the grid of ``steps`` by sigma."""
        if start >= stop:
            return 0, 0
        if steps == self.full.n:
            return start, stop
        window = boundaries_from_steps(self.full.reference.grid, start, stop)
        grid = self.at(steps).reference.grid
        small = [i for i in range(steps) if window.sigma_out < grid[i] <= window.sigma_in]
        return (small[0], small[-1] + 1) if small else (0, 0)

    @property
    def large_equivalents(self) -> float:
        """Calls spent by every grid's evaluator, in Large calls per sample."""
        return sum(e.large_equivalents for e in self.evaluators.values())


def _check_inputs(conds: Sequence[Mapping[str, Any]], num_steps: int, seeds: Sequence[int],
                  quality_target: float, n_trials: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 2:
        raise CalibrationError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if not isinstance(quality_target, (int, float)) or not (0.0 < quality_target <= 1.0):
        raise CalibrationError(f"quality_target is a similarity to Large-only in (0, 1], got {quality_target!r}")
    if not isinstance(n_trials, int) or n_trials < 0:
        raise CalibrationError(f"n_trials must be a non-negative integer, got {n_trials!r}")
    if not isinstance(conds, Sequence) or len(conds) == 0:
        raise CalibrationError("conds must be a non-empty list of dicts, e.g. [{'encoder_hidden_states': emb}]")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or \
            not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise CalibrationError(f"seeds must be a list of integer noise seeds, e.g. seeds=[0, 1, 2], got {seeds!r}"
                               + (f"; for {seeds} seeds write seeds=range({seeds})" if isinstance(seeds, int) else ""))
    if len(seeds) == 0:
        raise CalibrationError("seeds must name at least one noise seed")


def small_cost_ratio(pair: ModelPair, reference: Reference) -> float:
    flops = flops_per_row(pair, reference.states[0], **reference.cond)
    return flops["small"] / flops["large"] if flops.get("large") else _FALLBACK_SMALL_COST


def _calibration_key(conds: Sequence[Mapping[str, Any]], seeds: Sequence[int], target: float, metric: str,
                     search_steps: bool = False) -> str:
    # A step-search study and a fixed-grid one measure different candidates: never join one for the other.
    h = hashlib.sha256(json.dumps([list(map(int, seeds)), target, metric] + (["steps"] if search_steps else []))
                       .encode())
    for cond in conds:
        for key in sorted(cond):
            value = cond[key]
            h.update(key.encode())
            h.update(value.detach().float().cpu().numpy().tobytes() if isinstance(value, torch.Tensor)
                     else repr(value).encode())
    return h.hexdigest()[:12]


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


@dataclasses.dataclass(frozen=True)
class Plan:
    """One measured candidate: Small on steps ``start .. stop - 1`` of ``sigmas(steps, shift)``
    (Large alone when ``start == stop``), its compute as a fraction of Large with all steps, and its
    mean quality against that."""

    steps: int
    start: int
    stop: int
    quality: float
    cost: float

    @property
    def is_large_only(self) -> bool:
        return self.start >= self.stop


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


def calibrate(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int = 30,
              seeds: Sequence[int] = (0, 1, 2, 3), shift: float = 1.0, shape: Sequence[int] | None = None,
              quality_target: float = DEFAULT_QUALITY_TARGET, n_trials: int = DEFAULT_TRIALS,
              metric: Metric | None = None, storage: Any = None, study_name: str | None = None,
              store: ProfileStore | str | Path | None = None, detector: ChangePointDetector | None = None,
              probe_steps: Sequence[int] | None = None, progress: bool = True, save: bool = True,
              per_prompt: bool = False, search_steps: bool = True, force: bool = False) -> Profile:
    """Find the cheapest plan that keeps Large's quality for this pair and sampler grid: a
    Large-Small-Large window where a blend pays, Large with fewer steps where they do; return (and
    store) the Profile.

    Args:
        pair: the Large/Small pair (guidance already applied if the pipeline uses it).
        conds: one dict of model keyword arguments per calibration prompt.
        num_steps, shift: the Euler grid (``adaptive.sigmas(num_steps, shift)``).
        seeds: noise seeds; every cond runs with every seed.
        quality_target: least mean similarity to Large-only output a window must keep (default 0.95,
            on the pair's ``metric`` — for the embedded pair the worse of the toy encoder's
            feature cosine and per-frame SSIM, latent cosine for pairs without one).
        n_trials: Optuna trials in all (shared by every worker of the study).
        storage: an Optuna storage (SQLAlchemy URL, ``JournalStorage``...); default SQLite in the store.
        store: the :class:`ProfileStore` (or its directory) the profile is written to.
        per_prompt: also choose a window per prompt (keyed by :func:`~adaptive.profiles.prompt_key`
            of its conditioning; unseen prompts fall back to the pair-level window) and fit the
            online controller (``sample(..., schedule="online")``) from those windows. Per-prompt
            windows and the controller are for the full grid of ``num_steps``.
        force: replace a stored profile even when this one is weaker (fewer trials, a costlier plan);
            otherwise the stored one is kept and this one is written beside it with a warning.
        search_steps: also search the step count ``n <= num_steps``: Large alone with fewer steps
            and blends on coarser grids ``sigmas(n, shift)`` are candidates like any window, all
            judged against Large with ``num_steps``. The profile's ``plan`` is the cheapest that
            meets the target (``steps``: its ``n``; ``plan_schedule()``: its stages), ``frontier``
            keeps every measured plan, and ``sigma_in``/``sigma_out``/``schedule()`` stay the best
            window on the full grid, for callers who fix ``num_steps``.

    A quality target no plan meets gives a Large-only profile whose ``note`` says so. With
    ``progress`` the decision is printed in words (``Profile.decision``).

    Example:
        >>> import tempfile, torch
        >>> from adaptive import ModelPair
        >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -0.5 * x)    # Small far off: no safe window
        >>> p = calibrate(pair, [{}], num_steps=6, seeds=[0], shape=(4,), n_trials=3, quality_target=0.999,
        ...               store=tempfile.mkdtemp(), progress=False)  # doctest: +SKIP
    """
    _check_inputs(conds, num_steps, seeds, quality_target, n_trials)
    if per_prompt and probe_steps is not None:
        raise CalibrationError("per_prompt=True fits the online controller on every step's divergence; "
                               "leave probe_steps=None")
    store = store if isinstance(store, ProfileStore) else ProfileStore(store)
    metric = metric or pair.metric or LatentSimilarity()
    metric_name = getattr(metric, "name", type(metric).__name__)
    signature = sampler_signature("euler", num_steps, shift)
    fp = fingerprint(pair)
    name = study_name or safe_key(f"{fp}__{signature}__{_calibration_key(conds, seeds, quality_target, metric_name, search_steps)}")
    # Where results go is checked before any model call: the profile store is writable, and the
    # study opens (folder, driver, write access). The worker that creates the study samples with a
    # fixed seed (reproducible); each worker that joins it gets a seed of its own (make_study).
    if save or storage is None:
        store.check_writable()
    study = make_study(storage or default_storage(store), name, seed=0)
    curve, reference = run_probe(pair, conds, num_steps, seeds, shift, shape, probe_steps, progress)
    proposal = (detector or ChangePointDetector()).fit(curve).predict()
    evaluator = Evaluator(pair, reference, metric, small_cost_ratio(pair, reference))
    search = StepSearch(evaluator, shift)
    study = refine(search, proposal, quality_target, n_trials, None, name, progress, search_steps=search_steps,
                   study=study)
    profile = _profile(pair, fp, signature, num_steps, shift, curve, proposal, study, search, quality_target,
                       metric_name, conds, seeds, name)
    if per_prompt:
        profile = _with_per_prompt(profile, search, study, curve, reference, len(conds), len(seeds),
                                   quality_target, detector or ChangePointDetector(), progress)
    if profile.note:
        warnings.warn(profile.note, stacklevel=2)
    if progress:
        print(profile.decision)
    if save and (_finished_here(study) or not store.path_for(fp, signature).exists()):
        store.save(profile, force=force)
    return profile


def _finished_here(study: optuna.Study) -> bool:
    """True for the worker that finds a shared study done (no trial still running in another worker,
    so its profile counts every trial), and for a re-run that found the study already finished."""
    return not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def _profile(pair: ModelPair, fp: str, signature: str, num_steps: int, shift: float, curve: DivergenceCurve,
             proposal: Boundaries | None, study: optuna.Study, search: StepSearch, target: float,
             metric_name: str, conds: Sequence[Any], seeds: Sequence[int], study_name: str) -> Profile:
    """The profile: the best window on the full grid (what a caller who fixes ``num_steps`` runs)
    and, from the step search, the recommended plan and every measured candidate."""
    start, stop, quality, cost = best_window(study, target, num_steps)
    window = boundaries_from_steps(curve.grid, start, stop)
    plan = best_plan(study, target, num_steps)
    plan_window = boundaries_from_steps(search.at(plan.steps).reference.grid, plan.start, plan.stop)
    note = ""
    if plan.is_large_only and plan.steps == num_steps:
        tried = [p.quality for p in measured_plans(study) if (p.steps, p.start, p.stop) != (num_steps, 0, 0)]
        best_tried = max(tried) if tried else float("nan")
        note = (f"no plan cheaper than Large with all {num_steps} steps met quality_target={target} (best tried: "
                f"{best_tried:.4f}); the profile runs Large only. Lower the target or give more trials.")
    small_cost = search.full.small_cost
    probe_cost = curve.cost["large_calls"] + curve.cost["small_calls"] * small_cost
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    frontier = [{"steps": num_steps if p.steps == -1 else p.steps, "start": p.start, "stop": p.stop,
                 "quality": p.quality, "cost": p.cost} for p in measured_plans(study) if math.isfinite(p.quality)]
    return Profile(
        pair_fingerprint=fp, sampler=signature, num_steps=num_steps, shift=float(shift),
        sigma_in=window.sigma_in, sigma_out=window.sigma_out, small_steps=tuple(range(start, stop)),
        plan={"steps": plan.steps, "start": plan.start, "stop": plan.stop, "sigma_in": plan_window.sigma_in,
              "sigma_out": plan_window.sigma_out, "quality": plan.quality, "cost": plan.cost},
        frontier=frontier,
        pair_name=pair.name,
        proposal={} if proposal is None else {"sigma_in": proposal.sigma_in, "sigma_out": proposal.sigma_out,
                                              "start": proposal.start, "stop": proposal.stop,
                                              "score": proposal.score if math.isfinite(proposal.score) else None},
        curve={"sigmas": curve.sigmas.tolist(), "steps": curve.steps.tolist(),
               "rel_l2": curve.mean("rel_l2").tolist(), "cosine": curve.mean("cosine").tolist(),
               "weighted": curve.mean("weighted").tolist()},
        quality={"metric": metric_name, "target": target, "achieved": quality},
        cost={"fraction_of_large": cost, "small_cost_ratio": small_cost,
              "large_calls": num_steps - (stop - start), "small_calls": stop - start,
              "calibration_large_equivalents_per_sample": probe_cost + search.large_equivalents,
              "probe_large_equivalents_per_sample": probe_cost},
        calibration={"num_conds": len(conds), "seeds": [int(s) for s in seeds], "n_trials": len(complete),
                     "study_name": study_name, "samples": int(curve.cost["samples"])},
        note=note,
    )


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


def _with_per_prompt(profile: Profile, search: StepSearch, study: optuna.Study, curve: DivergenceCurve,
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
    windows: dict[str, dict[str, Any]] = {}
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
        windows[key] = {"start": best[0], "stop": best[1], "sigma_in": chosen.sigma_in,
                        "sigma_out": chosen.sigma_out, "quality": best[2], "cost": best[3]}
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
    mean_cost = float(np.mean([w["cost"] for w in windows.values()]))
    per_prompt = {"windows": windows, "candidates": [list(w) for w in candidates], "mean_cost": mean_cost,
                  "fallback": "pair-level window for prompts not calibrated"}
    spent = dict(profile.cost, calibration_large_equivalents_per_sample=(
        profile.cost.get("probe_large_equivalents_per_sample", 0.0) + search.large_equivalents))
    return dataclasses.replace(profile, per_prompt=per_prompt, controller=controller.to_dict(), cost=spent)


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


__all__ = ["DEFAULT_QUALITY_TARGET", "Evaluator", "Plan", "StepSearch", "best_plan", "best_window", "calibrate", "measured_plans", "default_storage", "make_study", "refine", "small_cost_ratio", "sweep",
           "windows_table"]
