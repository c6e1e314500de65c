"""Plans over a pool of denoisers, every boundary found the same way: a probe along the current
plan, a proposal from it, an Optuna refinement judged on final quality.

A plan starts as the reference (``"large"`` every step, or Wan 2.2's ``high``/``low`` experts) and
each :class:`Axis` places one window on it, cheapest change first as the caller orders them: the
guidance interval (:data:`GUIDANCE`: guidance runs inside the window, the conditional-only variant
outside), a Small window (``window("small")``: Small inside), a Medium window, Small inside
Medium's... For an axis the probe runs the current plan on the calibration samples and, at every
step the axis could change, the cheaper model on the same state: the relative velocity divergence
per step. The proposal is the longest run of steps the divergence calls safe (for guidance: the
steps outside the first and last that are not); an Optuna study seeded with it and its one-step
neighbours (``enqueue_trial``) then searches the window's two edges, each trial judged by running
the plan to the end from the cached state where it first differs and comparing the result with the
reference's. The cheapest plan that meets ``target`` wins; a trial that cannot be cheaper than the
best known is pruned before any model call.

Every result is compared at equal compute with the two obvious alternatives: the reference plan
with fewer steps (Large-fewer) and, for a guided pool, no guidance at all with more steps.

Example:
    >>> import torch
    >>> from adaptive import ModelPair
    >>> from adaptive.pool import Pool
    >>> bump = lambda s: ((s > 0.3) & (s <= 0.7)).float().view(-1, 1)       # guidance matters in (0.3, 0.7]
    >>> model = lambda x, s, c: -x + c * bump(s)
    >>> pool = Pool.of(ModelPair(model, model).guided(4.0, {"c": torch.zeros(1, 1)}), costs={"large": 1, "small": 1})
    >>> found = find_plan(pool, [{"c": torch.ones(1, 1)}], [GUIDANCE], num_steps=10, shape=(4,), target=0.999,
    ...                   n_trials=6)
    >>> found.windows["guidance"], found.schedule.step_models(found.grid)[:4]
    ((3, 7), ['large:cond', 'large:cond', 'large:cond', 'large'])
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from adaptive.calibration.evaluation import Ledger
from adaptive.detect import boundaries_from_steps
from adaptive.errors import CalibrationError
from adaptive.metrics import LatentStructure, Metric, rel_l2
from adaptive.pool import Pool
from adaptive.probing import batch_conditions
from adaptive.samplers import Run, Sampler, run_on, sampler_for
from adaptive.schedule import Schedule, sigmas, unguided

THRESHOLD = 0.05  # the probe's relative divergence below which a step is proposed safe


@dataclass(frozen=True)
class Axis:
    """One window the search places on a plan: ``rename`` (a mapping of model names, or a function)
    turns the current model into the cheaper one; ``inside``: the cheaper model runs inside the
    window (a Small window), else outside it (guidance runs inside its window)."""

    name: str
    rename: Mapping[str, str] | Callable[[str], str]
    inside: bool = True

    def applied(self, plan: Schedule, grid: Sequence[float], start: int, stop: int,
                pool: Mapping[str, Any] | None = None) -> Schedule:
        """``plan`` with this axis's window over steps ``start .. stop - 1`` of ``grid`` (a model whose
        cheaper name is not in ``pool``, e.g. an unguided Small on the guidance axis, stays as it is)."""
        window = boundaries_from_steps(list(grid), start, stop)
        rename = (lambda name: self.cheaper(name, pool))  # noqa: E731
        if self.inside:
            return plan.relabel(window.sigma_in, window.sigma_out, inside=rename)
        return plan.relabel(window.sigma_in, window.sigma_out, outside=rename)

    def cheaper(self, name: str, pool: Mapping[str, Any] | None = None) -> str:
        """The model this axis puts in place of ``name`` (``name`` itself where it changes nothing, or
        where ``pool`` lacks the cheaper one)."""
        other = self.rename(name) if callable(self.rename) else self.rename.get(name, name)
        return name if pool is not None and other not in pool else other


GUIDANCE = Axis("guidance", unguided, inside=False)
"""Guidance only inside the window; the conditional-only variant (one call, not two) elsewhere."""


def window(model: str, replaces: Sequence[str] = ("large",)) -> Axis:
    """The axis of a window where ``model`` replaces the models ``replaces`` (and their
    conditional-only variants) — ``window("small")`` is FlowBlending's Small window,
    ``window("small", replaces=("medium",))`` a Small window inside Medium's."""
    names = {r: model for r in replaces}
    names.update({unguided(r): unguided(model) for r in replaces})
    return Axis(model, names, inside=True)


@dataclass(frozen=True)
class FoundPlan:
    """The cheapest plan found that meets ``target``, with what it costs and the alternatives.

    ``cost`` and ``reference_cost`` are per sample in calls of the reference model (guidance
    included); ``windows`` maps each axis to the steps of its window on ``grid``; ``alternatives``
    the obvious ones at equal compute (``"large_fewer"``, ``"no_guidance"``: steps, cost, quality).
    """

    schedule: Schedule
    num_steps: int
    shift: float
    cost: float
    reference_cost: float
    quality: float
    target: float
    windows: dict[str, tuple[int, int]]
    trials: int
    alternatives: dict[str, dict[str, float]] = field(default_factory=dict)
    sampler: Sampler | None = None  # the solver it was judged on (None: Euler at ``shift``)

    @property
    def grid(self) -> list[float]:
        return sigmas(self.num_steps, self.shift).tolist() if self.sampler is None else self.sampler.grid(self.num_steps)

    @property
    def fraction(self) -> float:
        """The plan's cost as a share of the reference plan's on the calibrated grid."""
        return self.cost / self.reference_cost

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "num_steps": self.num_steps, "shift": self.shift,
                "cost": self.cost, "reference_cost": self.reference_cost, "quality": self.quality,
                "target": self.target, "windows": {k: list(v) for k, v in self.windows.items()},
                "trials": self.trials, "alternatives": self.alternatives,
                **({} if self.sampler is None else {"sampler": self.sampler.to_dict()})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FoundPlan:
        """The record :meth:`to_dict` wrote; a negative or non-finite cost or quality is refused."""
        for key in ("cost", "reference_cost", "quality", "target"):
            value = data.get(key) if isinstance(data, Mapping) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                    value < 0 or (key == "reference_cost" and value == 0):
                raise CalibrationError(f"a found plan's {key} must be a non-negative finite number"
                                       + (" (positive)" if key == "reference_cost" else "") + f", got {value!r}")
        return cls(Schedule.from_dict(data["schedule"]), int(data["num_steps"]), float(data["shift"]),
                   float(data["cost"]), float(data["reference_cost"]), float(data["quality"]),
                   float(data["target"]), {k: (int(v[0]), int(v[1])) for k, v in data["windows"].items()},
                   int(data["trials"]), {k: dict(v) for k, v in data.get("alternatives", {}).items()},
                   Sampler.from_dict(data["sampler"]) if data.get("sampler") else None)


class _Runs:
    """Plans run on the calibration batch, restarted from the cached trajectory of the plan that
    shares their longest prefix of per-step models (the reference's and the current plan's), on
    ``solver``'s steps (None: Euler on any grid). On a multistep solver a restart replays the
    scheduler on the cached steps before it, so the cached runs keep their velocities too."""

    def __init__(self, pool: Pool, noise: torch.Tensor, cond: dict[str, Any], metric: Metric,
                 ledger: Ledger | None = None, solver: Sampler | None = None) -> None:
        self.pool, self.noise, self.cond, self.metric, self.ledger = pool, noise, cond, metric, ledger
        self.solver = None if solver is None or solver.is_euler else solver
        self.cached: dict[tuple[tuple[float, ...], tuple[str, ...]], list[torch.Tensor]] = {}
        self.slopes: dict[tuple[tuple[float, ...], tuple[str, ...]], list[torch.Tensor]] = {}
        self.target_final: torch.Tensor | None = None
        self.judged: dict[tuple[tuple[float, ...], tuple[str, ...]], float] = {}
        self.calls = 0.0  # reference-model calls spent, per sample

    def grid(self, steps: int, shift: float) -> list[float]:
        """The sigmas of ``steps`` steps: the solver's own, or Euler's at ``shift``."""
        return sigmas(steps, shift).tolist() if self.solver is None else self.solver.grid(steps)

    def keep(self, grid: Sequence[float], names: Sequence[str], states: list[torch.Tensor],
             velocities: Sequence[torch.Tensor] = ()) -> None:
        """Cache a run computed elsewhere (its states, and on a multistep solver its velocities: a
        restart can only start where they are known)."""
        key = (tuple(grid), tuple(names))
        self.cached[key] = list(states)
        if self.solver is not None:
            self.slopes[key] = list(velocities)

    def affords(self, plan: Schedule, grid: list[float]) -> bool:
        """Whether the ledger's budget pays for ``plan``'s result on every sample (from the cached
        state where it starts to differ from a plan already run)."""
        if self.ledger is None:
            return True
        names = plan.step_models(grid)
        start = self._restart(tuple(grid), tuple(names))[0]
        return self.ledger.affords(sum(self.pool.costs[n] for n in names[start:]), len(self.noise))

    def _restart(self, grid: tuple[float, ...], names: tuple[str, ...]
                 ) -> tuple[int, list[torch.Tensor], list[torch.Tensor]]:
        """The first step a run of ``names`` must compute, and the cached states (and velocities) it
        shares up to there (``states[start]`` is where it starts; just the noise when nothing is shared)."""
        start, shared, slopes = 0, [self.noise], []
        for key, states in self.cached.items():
            if key[0] != grid:
                continue
            common = next((i for i, (a, b) in enumerate(zip(names, key[1])) if a != b), len(names))
            if self.solver is not None:  # a multistep restart replays the velocities before it
                common = min(common, len(self.slopes.get(key, [])))
            if common > start:
                start, shared, slopes = common, states, self.slopes.get(key, [])
        return start, shared, slopes

    def _run(self, grid: list[float], states: list[torch.Tensor], slopes: list[torch.Tensor], start: int) -> Run:
        """A run of the solver on ``grid`` that has taken the recorded steps before ``start``."""
        return run_on(self.solver, grid).replay(states, slopes[:start])

    def _step(self, name: str, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls += self.pool.costs[name]
        if self.ledger is not None:
            self.ledger.charge(self.pool.costs[name], x.shape[0])
        return self.pool[name](x, torch.full((x.shape[0],), sigma, device=x.device), **self.cond)

    def trajectory(self, plan: Schedule, grid: list[float], velocities: bool = False
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every state of ``plan`` on ``grid``, cached (computed from the longest cached prefix), and
        with ``velocities`` every step's velocity too (then computed from the first step)."""
        names = tuple(plan.step_models(grid))
        start, shared, known = (0, [self.noise], []) if velocities else self._restart(tuple(grid), names)
        run = self._run(grid, shared, known, start)
        states, slopes = list(shared[:start + 1]), list(known[:start])
        for i in range(start, len(names)):
            v = self._step(names[i], states[-1], run.sigma(i))
            slopes.append(v)
            states.append(run.step(states[-1], v, i))
        self.keep(grid, names, states, slopes)
        return states, slopes[start:]

    def final(self, plan: Schedule, grid: list[float]) -> torch.Tensor:
        """``plan``'s result, restarted from the longest cached prefix on this grid."""
        names = tuple(plan.step_models(grid))
        start, shared, known = self._restart(tuple(grid), names)
        run, x = self._run(grid, shared, known, start), shared[start]
        for i in range(start, len(names)):
            x = run.step(x, self._step(names[i], x, run.sigma(i)), i)
        return x

    def model_sigma(self, grid: list[float], i: int) -> float:
        """The sigma the model is asked about at step ``i`` of ``grid``."""
        return grid[i] if self.solver is None else self.solver.model_sigmas(len(grid) - 1)[i]

    def quality(self, plan: Schedule, grid: list[float]) -> float:
        """``plan``'s mean quality against the target (each plan's run once per grid)."""
        assert self.target_final is not None
        key = (tuple(grid), tuple(plan.step_models(grid)))
        if key not in self.judged:
            self.judged[key] = float(self.metric(self.final(plan, grid), self.target_final).float().mean())
        return self.judged[key]


def _proposal(divergence: list[float | None], inside: bool, threshold: float) -> tuple[int, int]:
    """The window the probe proposes: ``inside``, the longest run of steps whose divergence is at most
    ``threshold``; else the span from the first to the last step above it (where the current model
    must stay). ``None``: a step the axis cannot change."""
    n = len(divergence)
    if not inside:
        needed = [i for i, d in enumerate(divergence) if d is not None and d > threshold]
        fixed = [i for i, d in enumerate(divergence) if d is None]
        keep = needed + fixed if needed else []
        return (min(keep), max(keep) + 1) if keep else (0, 0)
    known = [(d, i) for i, d in enumerate(divergence) if d is not None]
    anchor = min(known)[1] if known else 0
    best, run = (anchor, anchor), None  # no safe run: an empty window where the cheaper model is closest
    for i, d in enumerate(divergence + [None]):
        if d is not None and d <= threshold:
            run = i if run is None else run
            continue
        if run is not None and i - run > best[1] - best[0]:
            best = (run, i)
        run = None
    return best if best[1] <= n else (best[0], n)


def _probe(runs: _Runs, plan: Schedule, grid: list[float], axis: Axis) -> list[float | None]:
    """Per step of ``plan``'s trajectory, ``||v_cheaper - v|| / ||v||`` (mean over samples) where the
    axis changes the step's model, None where it does not."""
    states, velocities = runs.trajectory(plan, grid, velocities=True)
    out: list[float | None] = []
    for i, name in enumerate(plan.step_models(grid)):
        cheaper = axis.cheaper(name, runs.pool)
        if cheaper == name:
            out.append(None)
            continue
        v = runs._step(cheaper, states[i], runs.model_sigma(grid, i))
        out.append(float(rel_l2(v, velocities[i]).float().mean()))
    return out


def _refine(runs: _Runs, plan: Schedule, grid: list[float], axis: Axis, proposal: tuple[int, int], target: float,
            n_trials: int, storage: Any, study_name: str | None, seed: int
            ) -> tuple[Schedule, tuple[int, int], int, float]:
    """The Optuna study over the axis's window edges: the cheapest plan meeting ``target``.

    Its first trials are enqueued: the proposal, then each edge moved by bisection towards more
    savings while the plan keeps the target (quality falls as a window of the cheaper model grows,
    so a bisection finds an edge in ~log2(steps) trials); TPE spends the trials left."""
    n = len(grid) - 1
    unchanged = (0, 0) if axis.inside else (0, n)
    best: dict[str, Any] = {"cost": runs.pool.cost(plan, grid), "window": unchanged, "plan": plan, "quality": None}

    def objective(trial: optuna.Trial) -> float:
        a, b = trial.suggest_int("start", 0, n), trial.suggest_int("stop", 0, n)
        start, stop = min(a, b), max(a, b)
        candidate = axis.applied(plan, grid, start, stop, runs.pool)
        cost = runs.pool.cost(candidate, grid)
        trial.set_user_attr("cost", cost)
        if cost >= best["cost"]:
            raise optuna.TrialPruned()  # cannot beat a plan known to meet the target: no model call
        if not runs.affords(candidate, grid):
            assert runs.ledger is not None
            runs.ledger.skip()
            raise optuna.TrialPruned()  # the budget is spent
        quality = runs.quality(candidate, grid)
        trial.set_user_attr("quality", quality)
        if quality >= target:
            best.update(cost=cost, window=(start, stop), plan=candidate, quality=quality)
            return cost
        return best["cost"] + (target - quality)  # infeasible: worse than any plan that meets the target

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial drowns the result, as in refine
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed))
    spent = [0]

    def meets(start: int, stop: int) -> bool:
        """Run (or look up) the trial of this window; True when it is the best plan so far."""
        if spent[0] >= n_trials:
            return False
        spent[0] += 1
        study.enqueue_trial({"start": start, "stop": stop})
        study.optimize(objective, n_trials=1)
        return best["window"] == (start, stop)

    def bisect(fixed: int, low: int, high: int, moving_start: bool, towards_high: bool) -> None:
        """Move one edge between ``low`` and ``high`` (inclusive) as far towards savings as keeps the target."""
        ok, bad = (low, high + 1) if towards_high else (high, low - 1)
        while abs(bad - ok) > 1:
            mid = (ok + bad) // 2
            window = (mid, fixed) if moving_start else (fixed, mid)
            if window[0] > window[1]:
                bad = mid
                continue
            ok, bad = (mid, bad) if meets(*window) else (ok, mid)

    start, stop = proposal
    if start < stop and (start, stop) != unchanged:
        meets(start, stop)
    if best["window"] != (start, stop):  # the proposal fails (or changes nothing): grow from the unchanged plan
        start, stop = (proposal[0], proposal[0]) if axis.inside else proposal
        if not axis.inside and best["window"] != (start, stop):
            start, stop = unchanged
    if axis.inside:  # a wider window saves more: the start moves down, the stop up
        bisect(stop, 0, start, moving_start=True, towards_high=False)
        start = best["window"][0] if best["window"] != unchanged else start
        bisect(start, stop, n, moving_start=False, towards_high=True)
    else:  # a narrower interval of the expensive model saves more: the stop moves down (trials restart late,
        # from the cached states: cheap), then the start up (trials restart near the first step)
        bisect(start, start, stop, moving_start=False, towards_high=False)
        stop = best["window"][1] if best["window"] != unchanged else stop
        bisect(stop, start, stop, moving_start=True, towards_high=True)
    left = n_trials - spent[0]
    if left > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=left)
    return best["plan"], best["window"], len(study.trials), best["quality"]


@torch.no_grad()
def find_plan(pool: Pool, conds: Sequence[Mapping[str, Any]], axes: Sequence[Axis], *,
              num_steps: int | Sequence[int], shift: float = 1.0, seeds: Sequence[int] = (0, 1),
              shape: Sequence[int], reference: Schedule | None = None, metric: Metric | None = None,
              target: float = 0.95, n_trials: int = 12, threshold: float = THRESHOLD, storage: Any = None,
              seed: int = 0, sampler: Any = None) -> FoundPlan:
    """The cheapest plan over ``pool`` that keeps ``target`` quality against ``reference`` run on the
    first (the caller's) step count of ``num_steps``, placing one window per axis in order, on each
    step count of ``num_steps`` (several: searched jointly with the windows; the cheapest wins).

    ``reference`` defaults to the pool's reference model on every step (``"large"``, guided if it
    is). ``metric(generated, reference) -> per-sample quality`` defaults to
    :class:`~adaptive.metrics.LatentStructure`. ``n_trials`` Optuna trials per axis and step count
    (a trial that cannot beat the best known plan is pruned before any model call); ``storage`` an
    Optuna storage URL for the studies (one per axis and step count). ``sampler``: the solver every
    plan is run on (a name, a diffusers flow scheduler or a :class:`~adaptive.samplers.Sampler`; default
    Euler at ``shift``), multistep history carried across a model switch as the drop-in runs it.
    """
    try:
        solver = sampler_for(sampler, shift)
    except ValueError as err:
        raise CalibrationError(f"sampler: {err}") from err
    shift = solver.shift
    counts = [num_steps] if isinstance(num_steps, int) else list(num_steps)
    if not counts or not all(isinstance(k, int) and k >= 1 for k in counts):
        raise CalibrationError(f"num_steps must be a positive integer or a list of them, got {num_steps!r}")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not (0.0 < target <= 1.0):
        raise CalibrationError(f"target must be a quality in (0, 1], got {target!r}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise CalibrationError(f"n_trials must be a non-negative integer (Optuna trials per axis and step count), "
                               f"got {n_trials!r}")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape or \
            not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape):
        raise CalibrationError(f"shape is the latent of one sample as positive integers, e.g. (16, 21, 60, 104), "
                               f"got {shape!r}")
    reference = reference or Schedule.large_only(pool.reference)
    reference.check_models(pool)
    for axis in axes:
        if not any(pool.costs[axis.cheaper(n, pool)] < pool.costs[n] for n in pool):
            raise CalibrationError(f"axis {axis.name!r} changes no model of the pool {sorted(pool)}; "
                                   "a guidance axis needs a guided pool (ModelPair.guided), a window axis its model")
    device = next((v.device for c in (conds if isinstance(conds, Sequence) else ()) if isinstance(c, Mapping)
                   for v in c.values()
                   if isinstance(v, torch.Tensor)), torch.device("cpu"))
    noise, cond = batch_conditions(conds, seeds, shape, device)  # checks conds and seeds, before any model call
    pool.check(noise, **cond)
    runs = _Runs(pool, noise, cond, metric or LatentStructure(), solver=solver)
    caller = runs.grid(counts[0], shift)
    judged_on = None if solver.is_euler else solver
    with torch.no_grad():
        runs.target_final = runs.trajectory(reference, caller)[0][-1]
        reference_cost = pool.cost(reference, caller)
        found: FoundPlan | None = None
        for k in counts:
            grid = runs.grid(k, shift)
            plan, windows, trials = reference, {}, 0
            for axis in axes:
                proposal = _proposal(_probe(runs, plan, grid, axis), axis.inside, threshold)
                name = None if storage is None else f"segments-{axis.name}-{k}"
                plan, windows[axis.name], used, _ = _refine(runs, plan, grid, axis, proposal, target, n_trials,
                                                            storage, name, seed)
                trials += used
                runs.trajectory(plan, grid)  # the next axis restarts from this plan's states
            quality = runs.quality(plan, grid)
            cost = pool.cost(plan, grid)
            if quality >= target and (found is None or cost < found.cost):
                found = FoundPlan(plan, k, shift, cost, reference_cost, quality, target, windows, trials,
                                  sampler=judged_on)
        if found is None:  # no step count keeps the target, even unchanged: the caller's reference
            found = FoundPlan(reference, counts[0], shift, reference_cost, reference_cost, 1.0, target, {}, 0,
                              sampler=judged_on)
        alternatives = equal_compute(runs, pool, reference, found.cost, caller, shift)
        return FoundPlan(**{**found.__dict__, "alternatives": alternatives})


def equal_compute(runs: _Runs, pool: Pool, reference: Schedule, cost: float, caller: list[float], shift: float,
                  options: Sequence[str] = ("large_fewer", "no_guidance")) -> dict[str, dict[str, float]]:
    """The obvious alternatives at no more than ``cost``: the reference with fewer steps and, for a
    guided pool, the reference without guidance with as many steps as the cost buys (steps priced
    at the plan's mean cost per step on the caller's grid), on the grids of ``runs``' solver."""
    out: dict[str, dict[str, float]] = {}
    plans = {"large_fewer": reference}
    unguided_reference = reference.relabel(0.0, 0.0, outside=unguided)
    if all(m in pool for m in unguided_reference.models) and unguided_reference != reference:
        plans["no_guidance"] = unguided_reference
    for label, plan in plans.items():
        if label not in options:
            continue
        per_step = pool.cost(plan, caller) / (len(caller) - 1)
        steps = int(math.floor(cost / per_step + 1e-9))
        if steps < 1:
            continue
        grid = runs.grid(steps, shift)
        if not runs.affords(plan, grid):
            continue
        out[label] = {"steps": steps, "cost": pool.cost(plan, grid), "quality": runs.quality(plan, grid)}
    return out


__all__ = ["Axis", "FoundPlan", "GUIDANCE", "THRESHOLD", "equal_compute", "find_plan", "window"]
