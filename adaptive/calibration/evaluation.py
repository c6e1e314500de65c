"""Judging candidate plans on the final sample: :class:`Evaluator` (Large-Small-Large windows on one
grid, restarting from Large's cached states, on any subset of the calibration samples),
:class:`PlanQuality` (any per-step plan, for the online controller's fit), :class:`StepSearch` (every
grid a step-count search visits) and :class:`Ledger` (what all of it cost, by phase, against a budget).

Every replay steps with the calibration's sampler (:mod:`adaptive.samplers`: Euler, or a multistep
scheduler whose history is replayed from the recorded steps, no model call), from Large's states, which
are computed once per grid and row and only as far as a candidate needs them: the probe's trajectory
on the full grid, a coarser grid's as its windows reach into it. A candidate can be judged on a few
samples first (:meth:`Evaluator.screen`): it stops as soon as even an optimistic reading of the
samples seen cannot meet the target, so a hopeless plan costs a fraction of one.

Example:
    >>> import torch
    >>> from adaptive import ModelPair
    >>> from adaptive.metrics import LatentSimilarity
    >>> from adaptive.probing import run_probe
    >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -x)          # Small == Large
    >>> _, reference = run_probe(pair, [{}], 6, [0], shape=(4,), progress=False)
    >>> evaluator = Evaluator(pair, reference, LatentSimilarity(), small_cost=0.25)
    >>> round(evaluator.quality(1, 4), 4), evaluator.cost(1, 4)
    (1.0, 0.625)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from adaptive.denoisers import select_rows
from adaptive.detect import boundaries_from_steps
from adaptive.metering import flops_per_row
from adaptive.metrics import Metric
from adaptive.pair import ModelPair
from adaptive.probing import DivergenceCurve, Reference
from adaptive.samplers import Run, Sampler, path, run_on, sampler_for

_FALLBACK_SMALL_COST = 0.5
CHUNKS = 4  # a screened candidate sees the calibration samples in this many interleaved groups
Z_SCREEN = 2.0  # a candidate is dropped when mean + Z_SCREEN standard errors of its samples misses the target


class Ledger:
    """What a calibration spent, in Large calls per calibration sample, by phase, against an optional
    ``budget`` in Large passes per sample (one pass: ``steps`` Large calls on every sample).

    Example:
        >>> ledger = Ledger(samples=4, steps=10, budget=2.0)
        >>> with ledger.phase("probe"):
        ...     ledger.charge(10, rows=4)        # one Large pass over every sample
        >>> ledger.charge(10, rows=2)            # half the samples, in the default phase
        >>> ledger.passes, ledger.breakdown(), ledger.affords(30, rows=2)
        (1.5, {'probe': 1.0, 'search': 0.5}, False)
    """

    def __init__(self, samples: int, steps: int, budget: float | None = None) -> None:
        self.samples, self.steps, self.budget = int(samples), int(steps), budget
        self.spent: dict[str, float] = {}
        self.current = "search"
        self.skipped: dict[str, int] = {}  # what the budget left out, by phase
        self.reserve = 0.0  # passes per sample the search leaves for the phases in RESERVED (per-prompt)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Ledger]:
        previous, self.current = self.current, name
        try:
            yield self
        finally:
            self.current = previous

    def charge(self, calls: float, rows: int) -> None:
        """``calls`` Large-call equivalents on each of ``rows`` samples."""
        self.spent[self.current] = self.spent.get(self.current, 0.0) + float(calls) * rows / self.samples

    @property
    def total(self) -> float:
        """Large calls per sample in all."""
        return sum(self.spent.values())

    @property
    def passes(self) -> float:
        return self.total / self.steps

    def breakdown(self) -> dict[str, float]:
        """Large passes per sample, by phase."""
        return {name: value / self.steps for name, value in self.spent.items()}

    RESERVED = ("per-prompt", "controller")

    def affords(self, calls: float, rows: int) -> bool:
        """Whether ``calls`` more on each of ``rows`` samples stay within the budget (less the
        ``reserve`` outside the phases it is kept for)."""
        if self.budget is None:
            return True
        limit = self.budget - (0.0 if self.current in self.RESERVED else self.reserve)
        return self.total + float(calls) * rows / self.samples <= limit * self.steps + 1e-9

    def skip(self) -> None:
        """Count a candidate of the current phase that the budget did not pay for."""
        self.skipped[self.current] = self.skipped.get(self.current, 0) + 1


def chunks(samples: int, count: int = CHUNKS, seeds: int = 1) -> list[list[int]]:
    """Interleaved groups of the calibration samples, at least two a group (one sample decides
    nothing). Rows are cond-major (``prompt * seeds + seed``); the sample of prompt ``c`` and seed
    ``s`` goes to group ``(c + s) % k``, so a group mixes prompts and seeds: samples that share a
    noise seed tend to err alike, and a group of one seed would judge a plan on one draw of noise.

    Example:
        >>> chunks(8), chunks(1)
        ([[0, 4], [1, 5], [2, 6], [3, 7]], [[0]])
        >>> chunks(4, seeds=2)   # 2 prompts x 2 seeds: each group has both prompts and both seeds
        [[0, 3], [1, 2]]
    """
    k = max(1, min(count, samples // 2))
    groups: list[list[int]] = [[] for _ in range(k)]
    for r in range(samples):
        groups[(r // seeds + r % seeds) % k].append(r)
    return groups


def optimistic(values: np.ndarray, z: float = Z_SCREEN) -> float:
    """The mean of the samples seen plus ``z`` standard errors (the mean alone for one sample); NaN
    when a value is not finite.

    Example:
        >>> optimistic(np.array([0.9])), round(optimistic(np.array([0.9, 0.94])), 4)
        (0.9, 0.96)
    """
    if not np.all(np.isfinite(values)):
        return float("nan")
    if len(values) < 2:
        return float(np.mean(values))
    return float(np.mean(values) + z * np.std(values, ddof=1) / math.sqrt(len(values)))


class LargePath:
    """Large's states on one grid for every calibration sample, computed per sample only as far as
    asked (a probe's full trajectory is given; a coarser grid's starts from the noise). On a
    multistep ``sampler`` Large's velocities are kept too: a run restarted at step ``i`` replays the
    scheduler on the steps before it (:meth:`run_at`)."""

    def __init__(self, pair: ModelPair, grid: Sequence[float], cond: dict, start: torch.Tensor, ledger: Ledger,
                 states: Sequence[torch.Tensor] | None = None, sampler: Sampler | None = None,
                 velocities: Sequence[torch.Tensor] | None = None) -> None:
        self.pair, self.grid, self.cond, self.ledger, self.sampler = pair, list(grid), cond, ledger, sampler
        self.samples = len(start)
        self.stateless = run_on(sampler, self.grid).stateless
        if not self.stateless and states is not None and (velocities is None or len(velocities) < len(states) - 1):
            raise ValueError(f"a path on {sampler} needs Large's velocity at every step (Reference.velocities)")
        if states is not None:
            self.states: list[torch.Tensor | None] = list(states)
            self.velocities: list[torch.Tensor | None] = list(velocities or [None] * (len(self.grid) - 1))
            self.depth = np.full(self.samples, len(self.grid))
        else:
            self.states = [start] + [None] * (len(self.grid) - 1)
            self.velocities = [None] * (len(self.grid) - 1)
            self.depth = np.ones(self.samples, dtype=int)  # states 0 .. depth - 1 are known, per sample

    def run_at(self, i: int, rows: Sequence[int], after: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
               ) -> Run:
        """A run that has taken Large's steps ``0 .. i - 1`` for ``rows`` (then the recorded steps
        ``after``: states and velocities of the steps that followed), ready for the next step."""
        run = run_on(self.sampler, self.grid)
        if run.stateless:
            return run
        index = torch.as_tensor(list(rows), dtype=torch.long)
        states = [self._rows(self.states[j], index) for j in range(i)]
        velocities = [self._rows(self.velocities[j], index) for j in range(i)]
        return run.replay(states + after[0], velocities + after[1])

    @staticmethod
    def _rows(value: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
        assert value is not None
        return value[index.to(value.device)]

    def at(self, i: int, rows: Sequence[int]) -> torch.Tensor:
        """Large's state at ``grid[i]`` for ``rows``, stepping the samples that have not got there."""
        rows = list(rows)
        behind = [r for r in rows if self.depth[r] <= i]
        for depth in sorted({int(self.depth[r]) for r in behind}):
            group = [r for r in behind if self.depth[r] == depth]
            index = torch.as_tensor(group, dtype=torch.long)
            known = self.states[depth - 1]
            assert known is not None
            states, velocities = path(self.pair.large, self._rows(known, index), self.run_at(depth - 1, group), depth - 1, i,
                          keep_velocities=not self.stateless, **select_rows(self.cond, self.samples, group))
            for j, state in enumerate(states[1:], start=depth):
                self._put(self.states, j, index, state)
            for j, v in enumerate(velocities, start=depth - 1):
                self._put(self.velocities, j, index, v)
            self.depth[group] = i + 1
            self.ledger.charge(i + 1 - depth, len(group))
        state = self.states[i]
        assert state is not None
        return state[torch.as_tensor(rows, dtype=torch.long).to(state.device)]

    def _put(self, slots: list[torch.Tensor | None], j: int, index: torch.Tensor, value: torch.Tensor) -> None:
        slot = slots[j]
        if slot is None:
            slot = slots[j] = torch.full((self.samples, *value.shape[1:]), float("nan"), dtype=value.dtype,
                                         device=value.device)
        slot[index.to(value.device)] = value

    def calls_to(self, i: int, rows: Sequence[int]) -> int:
        """Large calls per sample, summed over ``rows``, still needed to reach ``grid[i]``."""
        return int(sum(max(0, i + 1 - int(self.depth[r])) for r in rows))


class Evaluator:
    """Final-sample quality and cost of Large-Small-Large windows, restarting from Large's states.

    Qualities are kept per sample (so per-prompt calibration reads them for free) and computed only
    for the samples asked; the Small run of the last window start is cached step by step, so windows
    that share a start share their Small prefix.
    """

    def __init__(self, pair: ModelPair, reference: Reference, metric: Metric, small_cost: float,
                 target: torch.Tensor | None = None, full_steps: int | None = None, ledger: Ledger | None = None,
                 path: LargePath | None = None, seeds: int = 1) -> None:
        self.pair, self.reference, self.metric, self.small_cost = pair, reference, metric, small_cost
        self.grid = list(reference.grid)
        self.n = len(self.grid) - 1
        # What every result is judged against (Large with all steps) and the steps compute is counted
        # in: for a coarser grid's evaluator these are the full grid's, not its own.
        self.target = reference.final if target is None else target
        self.samples = len(self.target)
        self.full_steps = self.n if full_steps is None else int(full_steps)
        self.ledger = ledger or Ledger(self.samples, self.full_steps)
        self.path = path or LargePath(pair, self.grid, reference.cond, reference.states[0], self.ledger,
                                      states=reference.states, sampler=reference.sampler,
                                      velocities=reference.velocities)
        self.values: dict[tuple[int, int], np.ndarray] = {}
        self.known: dict[tuple[int, int], np.ndarray] = {}
        self.chunks = chunks(self.samples, seeds=seeds)  # ``seeds``: noise seeds per prompt (cond-major rows)
        # the Small run of the last window start and rows: its states and velocities
        self._prefix: tuple[int, tuple[int, ...], list[torch.Tensor], list[torch.Tensor]] = (-1, (), [], [])

    @property
    def large_equivalents(self) -> float:
        """Calls spent so far by everything charged to this evaluator's ledger, per sample."""
        return self.ledger.total

    @property
    def cache(self) -> dict[tuple[int, int], tuple[np.ndarray, float]]:
        """Windows judged on every sample: their per-sample qualities and cost."""
        return {key: (self.values[key], self.cost(*key)) for key, known in self.known.items() if known.all()}

    def cost(self, start: int, stop: int) -> float:
        """Compute of the window on this grid as a fraction of Large-only with all steps (1.0)."""
        return (self.n - max(stop - start, 0) * (1.0 - self.small_cost)) / self.full_steps

    def price(self, start: int, stop: int, rows: Sequence[int]) -> float:
        """Large-call equivalents, summed over ``rows``, that judging the window on them would spend
        now (states already computed are free)."""
        rows = [r for r in rows if not self.judged(start, stop)[r]]
        if start >= stop:
            return float(self.path.calls_to(self.n, rows)) if self.full_steps != self.n else 0.0
        return self.path.calls_to(start, rows) + len(rows) * ((stop - start) * self.small_cost + self.n - stop)

    def judged(self, start: int, stop: int) -> np.ndarray:
        """Which samples the window (Large alone when ``start >= stop``) has been judged on."""
        if start >= stop:
            start = stop = 0
        return self.known.get((start, stop), np.zeros(self.samples, dtype=bool))

    def _small_until(self, start: int, stop: int, rows: list[int]) -> tuple[torch.Tensor, Run]:
        """Small's state at step ``stop`` from Large's state at ``start`` for ``rows``, and the run
        there (ready for step ``stop``), extending the cached Small run of this start and rows."""
        if self._prefix[:2] != (start, tuple(rows)):
            self._prefix = (start, tuple(rows), [self.path.at(start, rows)], [])
        states, velocities = self._prefix[2], self._prefix[3]
        done = start + len(states) - 1  # the step Small's cached run has reached
        if done < stop:
            more = path(self.pair.small, states[-1],
                        self.path.run_at(start, rows, (states[:-1], velocities)), done, stop,
                        keep_velocities=not self.path.stateless,
                        **select_rows(self.reference.cond, self.samples, rows))
            states += more[0][1:]
            velocities += more[1]
            self.ledger.charge((stop - done) * self.small_cost, len(rows))
        k = stop - start
        run = self.path.run_at(start, rows, (states[:k], velocities[:k]))
        return states[k], run

    @torch.no_grad()
    def qualities(self, start: int, stop: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """Per-sample metric of the blended result (Large alone on this grid when ``start >= stop``)
        against Large-only with all steps, for ``rows`` (default: every sample; cached per sample)."""
        rows = list(range(self.samples)) if rows is None else [int(r) for r in rows]
        if start >= stop:
            if self.full_steps == self.n:
                return np.ones(len(rows))
            start = stop = 0
        key = (start, stop)
        values = self.values.setdefault(key, np.full(self.samples, np.nan))
        known = self.known.setdefault(key, np.zeros(self.samples, dtype=bool))
        missing = [r for r in rows if not known[r]]
        if missing:
            if start < stop:
                x, run = self._small_until(start, stop, missing)
                if stop < self.n:
                    x = path(self.pair.large, x, run, stop, self.n,
                             **select_rows(self.reference.cond, self.samples, missing))[0][-1]
                    self.ledger.charge(self.n - stop, len(missing))
            else:
                x = self.path.at(self.n, missing)  # Large alone on this grid: its own trajectory's end
            index = torch.as_tensor(missing, dtype=torch.long).to(self.target.device)
            values[missing] = self.metric(x, self.target[index]).detach().float().cpu().numpy().astype(float)
            known[missing] = True
        return values[rows]

    def quality(self, start: int, stop: int) -> float:
        """Mean metric of the blended result against Large-only, over every sample."""
        return float(self.qualities(start, stop).mean())

    def screen(self, start: int, stop: int, target: float, keep_going: Callable[[float, int], bool] | None = None,
               budgeted: bool = False) -> tuple[float, int, bool]:
        """Judge the window group by group of samples (:data:`CHUNKS` interleaved groups) and stop as
        soon as the optimistic reading (:func:`optimistic`) of the samples seen misses ``target``, or
        ``keep_going(bound, group)`` says no (an Optuna trial's pruner), or (``budgeted``) the next
        group would overrun the ledger's budget. Returns the mean quality over the samples judged (NaN
        for none), how many they were (all of them: the plan was judged in full) and whether the
        budget cut it short."""
        seen: list[int] = []
        for i, group in enumerate(self.chunks):
            if budgeted and not self.ledger.affords(self.price(start, stop, group), 1):
                return (float(np.mean(self.qualities(start, stop, seen))) if seen else float("nan")), len(seen), True
            self.qualities(start, stop, group)
            seen += group
            bound = optimistic(self.qualities(start, stop, seen))
            go = bound >= target if keep_going is None else keep_going(bound, i)
            if not go and len(seen) < self.samples:
                break
        return float(np.mean(self.qualities(start, stop, seen))), len(seen), False


class PlanQuality:
    """Final-sample quality of one calibration sample run with any per-step plan (a list of model
    names, as :class:`~adaptive.controller.Decisions` records), restarting from Large's cached state
    at the plan's first non-Large step; cached per (sample, plan). The online controller's fit scores
    its held-out decisions with it. Its calls are charged to the ledger but not capped by its budget:
    the controller's validation is bounded by its fit (a dozen candidate rules on the held-out samples)
    and cutting it short would reject a controller for want of evidence."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.cache: dict[tuple[int, tuple[str, ...]], float] = {}

    @torch.no_grad()
    def __call__(self, row: int, models: Sequence[str]) -> float:
        plan = tuple(models)
        if (row, plan) not in self.cache:
            ev = self.evaluator
            first = next((i for i, m in enumerate(plan) if m != "large"), len(plan))
            x = ev.path.at(first, [row])
            cond = select_rows(ev.reference.cond, ev.samples, [row])
            run = ev.path.run_at(first, [row])
            for a, b in _runs(plan, first):  # one run per stretch of one model, the solver's history carried on
                x = path(ev.pair.models[plan[a]], x, run, a, b, **cond)[0][-1]
                ev.ledger.charge((b - a) * (1.0 if plan[a] == "large" else ev.small_cost), 1)
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
    of ``sigmas(n, shift)`` (Large's states on it are computed per sample as far as a candidate needs:
    at most ``n`` Large calls per sample), and every candidate is judged against Large with all
    ``full.n`` steps, its compute counted in them. Every grid charges the full grid's :class:`Ledger`.

    A window is named on the full grid (``start``, ``stop``) and placed on a coarser grid by sigma,
    as a stored profile is: Small takes the steps whose sigma lies in the window.
    """

    def __init__(self, full: Evaluator, shift: float | Sampler | None = None) -> None:
        own = full.reference.sampler
        self.sampler = shift if isinstance(shift, Sampler) else own if own is not None else sampler_for(None, shift)
        if own is not None and own != self.sampler:
            raise ValueError(f"the reference was run on {own}, not {self.sampler}")
        self.full, self.shift = full, self.sampler.shift
        self.evaluators: dict[int, Evaluator] = {full.n: full}
        self.least_steps = 1  # step counts below it were measured to fail with Large alone (refine sets it)
        self.trials_not_run = 0  # search trials the budget left out (refine sets it)
        self.curve: DivergenceCurve | None = None  # the probe's divergence, which predicts windows (calibrate sets it)
        self._replayed: dict[int, float] = {}
        self._slopes: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # the probe's, on the first group
        self.divergence_sums: dict[int, np.ndarray] = {}  # per grid: the probe's divergence summed over each window

    @property
    def ledger(self) -> Ledger:
        return self.full.ledger

    def at(self, steps: int) -> Evaluator:
        if steps not in self.evaluators:
            full = self.full
            grid = self.sampler.grid(steps)
            reference = Reference(grid, [full.reference.states[0]], full.reference.cond, sampler=self.sampler)
            path = LargePath(full.pair, grid, full.reference.cond, full.reference.states[0], full.ledger,
                             sampler=self.sampler)
            self.evaluators[steps] = Evaluator(full.pair, reference, full.metric, full.small_cost,
                                               target=full.reference.final, full_steps=full.n, ledger=full.ledger,
                                               path=path)
            self.evaluators[steps].chunks = full.chunks
        return self.evaluators[steps]

    def window_on(self, steps: int, start: int, stop: int) -> tuple[int, int]:
        """The full grid's window ``start .. stop - 1`` placed on the grid of ``steps`` by sigma."""
        if start >= stop:
            return 0, 0
        if steps == self.full.n:
            return start, stop
        window = boundaries_from_steps(self.full.reference.grid, start, stop)
        grid = self.sampler.grid(steps)
        small = [i for i in range(steps) if window.sigma_out < grid[i] <= window.sigma_in]
        return (small[0], small[-1] + 1) if small else (0, 0)

    def replayed_quality(self, steps: int) -> float:
        """Large alone's quality with ``steps`` steps predicted at no model call: an Euler run on that grid
        whose velocities are Large's along the probe's path (recovered from its states, interpolated
        in sigma), judged against Large with all steps on the first group of samples. It misses the
        feedback of the coarse path's own states, so it is a guess to start from (close on smooth
        flows), never a measurement.

        Example:
            >>> import torch
            >>> from adaptive import ModelPair
            >>> from adaptive.calibration import Evaluator
            >>> from adaptive.probing import Reference
            >>> from adaptive.solvers import trajectory
            >>> from adaptive.schedule import sigmas
            >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -x)
            >>> grid = sigmas(8).tolist()
            >>> x = torch.ones(2, 3)
            >>> ref = Reference(grid, trajectory(pair.large, x, grid), {})
            >>> search = StepSearch(Evaluator(pair, ref, lambda a, b: -(a - b).flatten(1).norm(dim=1), 0.5), 1.0)
            >>> search.replayed_quality(8), search.replayed_quality(4) < 0
            (0.0, True)
        """
        if steps not in self._replayed:
            full = self.full
            rows = torch.as_tensor(full.chunks[0], dtype=torch.long).to(full.target.device)
            grid = torch.as_tensor(full.grid, dtype=torch.float64)
            if self._slopes is None:  # the probe's states and slopes on the first group, once
                states = [state[rows] for state in full.reference.states]
                self._slopes = (states, [(b - a) / (grid[i + 1] - grid[i]).item()
                                         for i, (a, b) in enumerate(zip(states, states[1:]))])
            states, velocities = self._slopes
            coarse = torch.as_tensor(self.sampler.grid(steps), dtype=torch.float64)
            x = states[0]
            for j in range(steps):
                sigma = float(coarse[j])
                # the fine steps i, i + 1 around sigma (descending grid): v interpolated linearly between them
                i = min(max(int(torch.searchsorted(-grid[:-1], torch.tensor(-sigma), right=True)) - 1, 0), full.n - 1)
                if i + 1 < full.n:
                    w = (float(grid[i]) - sigma) / float(grid[i] - grid[i + 1])
                    v = (1 - w) * velocities[i] + w * velocities[i + 1]
                else:
                    v = velocities[i]
                x = x + (float(coarse[j + 1]) - sigma) * v
            values = full.metric(x, full.target[rows]).detach().float().cpu().numpy()
            self._replayed[steps] = float(np.mean(values))
        return self._replayed[steps]

    @property
    def large_equivalents(self) -> float:
        """Calls spent by every grid's evaluator (and whatever else the ledger was charged), in Large
        calls per sample."""
        return self.ledger.total


def small_cost_ratio(pair: ModelPair, reference: Reference | torch.Tensor, **cond: Any) -> float:
    """Small's FLOPs per call relative to Large's on the reference's first state (or on the latent ``x`` given
    with its ``cond``)."""
    if isinstance(reference, torch.Tensor):
        x = reference
    else:
        x, cond = reference.states[0], reference.cond
    flops = flops_per_row(pair, x, **cond)
    return flops["small"] / flops["large"] if flops.get("large") else _FALLBACK_SMALL_COST


__all__ = ["CHUNKS", "Evaluator", "LargePath", "Ledger", "PlanQuality", "StepSearch", "Z_SCREEN", "chunks",
           "optimistic", "small_cost_ratio"]
