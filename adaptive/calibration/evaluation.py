"""Judging candidate plans on the final sample: :class:`Evaluator` (Large-Small-Large windows on one
grid, restarting from Large's cached states), :class:`PlanQuality` (any per-step plan, for the
online controller's fit) and :class:`StepSearch` (every grid a step-count search visits).

Every replay steps with the solver loop (:func:`adaptive.solvers.euler`), from the states of the
probe's Large trajectory, so the shared Large prefix is never recomputed.

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

from collections.abc import Sequence

import numpy as np
import torch

from adaptive.detect import boundaries_from_steps
from adaptive.metering import flops_per_row
from adaptive.metrics import Metric
from adaptive.pair import ModelPair
from adaptive.probing import Reference
from adaptive.schedule import sigmas
from adaptive.solvers import euler
from adaptive.solvers import trajectory as euler_states

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


def small_cost_ratio(pair: ModelPair, reference: Reference) -> float:
    flops = flops_per_row(pair, reference.states[0], **reference.cond)
    return flops["small"] / flops["large"] if flops.get("large") else _FALLBACK_SMALL_COST


__all__ = ["Evaluator", "PlanQuality", "StepSearch", "small_cost_ratio"]
