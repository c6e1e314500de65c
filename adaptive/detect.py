"""Change-point detection of Small's safe window on a divergence curve (ruptures-like API).

An exact search over every split ``0 <= a <= b <= n`` fits three constant segments — outer
(Large), low (Small), outer (Large) — by least squares on ``log(d)``, and compares the best with one
constant segment through BIC. The low segment is a window only if it is convincingly lower than the
outer ones *and* its level is below ``threshold`` (so a pair whose Small is poor everywhere gets no
window). A curve below ``threshold`` everywhere means Small is as good as Large everywhere.

Example:
    >>> import numpy as np
    >>> from adaptive import sigmas
    >>> curve = np.r_[np.full(6, 0.3), np.full(12, 0.02), np.full(6, 0.3)]
    >>> b = ChangePointDetector(min_size=2).fit(curve, sigmas(24).numpy()).predict()
    >>> (b.start, b.stop)
    (6, 18)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adaptive.errors import CurveError
from adaptive.probing import DivergenceCurve
from adaptive.schedule import Schedule

_FLOOR = 1e-8


@dataclass(frozen=True)
class Boundaries:
    """Small runs the steps ``start .. stop - 1`` of the grid: sigmas in ``(sigma_out, sigma_in]``.

    ``sigma_in``/``sigma_out`` lie halfway between grid points (robust to float round trips);
    ``score`` is the BIC gain of the window over no window (higher is more convincing).
    """

    sigma_in: float
    sigma_out: float
    start: int = 0
    stop: int = 0
    score: float = 0.0

    def schedule(self) -> Schedule:
        return Schedule.lsl(self.sigma_in, self.sigma_out)

    @property
    def is_large_only(self) -> bool:
        return self.sigma_in == self.sigma_out


def boundaries_from_steps(grid: np.ndarray | list[float], start: int, stop: int, score: float = 0.0) -> Boundaries:
    """Boundaries that give Small exactly the steps ``start .. stop - 1`` of ``grid``."""
    grid = [float(g) for g in grid]
    n = len(grid) - 1
    if not 0 <= start <= stop <= n:
        raise ValueError(f"need 0 <= start <= stop <= {n}, got start={start}, stop={stop}")
    if start == stop:
        return Boundaries(0.0, 0.0, start, stop, score)
    sigma_in = 1.0 if start == 0 else (grid[start - 1] + grid[start]) / 2
    sigma_out = 0.0 if stop == n else (grid[stop - 1] + grid[stop]) / 2
    return Boundaries(sigma_in, sigma_out, start, stop, score)


def _check_curve(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim == 2 and values.size:
        values = values.mean(axis=1)
    if values.ndim != 1 or values.size == 0:
        raise CurveError("the divergence curve must be a non-empty 1-D array (one value per probed step)")
    if not np.all(np.isfinite(values)):
        raise CurveError("the divergence curve contains NaN or Inf: a model returned non-finite velocities; "
                         "check dtypes (fp16 overflow) and inputs")
    if np.any(values < 0):
        raise CurveError("divergences are non-negative; got negative values")
    return values


class ChangePointDetector:
    """Exact three-segment (high / low / high) change-point fit.

    Args:
        min_size: fewest probed steps in the low (Small) segment.
        penalty: BIC penalty multiplier; the window must gain more than ``penalty * 2 * log(n)``.
        threshold: largest mean divergence (``rel_l2``) Small may have inside its window.
        kind: which curve of a :class:`DivergenceCurve` to fit ("rel_l2", "cosine", "weighted").
    """

    def __init__(self, min_size: int = 2, penalty: float = 1.0, threshold: float = 0.1, kind: str = "rel_l2") -> None:
        if min_size < 1:
            raise ValueError("min_size must be >= 1")
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ValueError("threshold must be a positive number")
        self.min_size = min_size
        self.penalty = penalty
        self.threshold = threshold
        self.kind = kind
        self.signal_: np.ndarray | None = None

    def fit(self, curve: DivergenceCurve | np.ndarray | list[float], sigmas: np.ndarray | None = None
            ) -> ChangePointDetector:
        """Store the curve (a :class:`DivergenceCurve`, or per-step values with their sigma grid)."""
        if isinstance(curve, DivergenceCurve):
            values, grid, steps = curve.mean(self.kind), curve.grid, curve.steps
        else:
            values = _check_curve(np.asarray(curve, dtype=float))
            grid = np.asarray(sigmas, float) if sigmas is not None else np.linspace(1.0, 0.0, len(values) + 1)
            steps = np.arange(len(values))
        self.signal_ = _check_curve(values)
        if len(grid) < len(self.signal_) + 1 and not isinstance(curve, DivergenceCurve):
            raise CurveError(f"the grid has {len(grid)} sigmas for {len(self.signal_)} steps; pass num_steps + 1")
        self.grid_, self.steps_ = np.asarray(grid, float), np.asarray(steps, int)
        return self

    def _segments(self) -> tuple[int, int, float]:
        y = np.log(np.maximum(self.signal_, _FLOOR))
        n = len(y)
        csum, csq = np.r_[0.0, np.cumsum(y)], np.r_[0.0, np.cumsum(y * y)]

        def sse(a: int, b: int) -> float:
            if b <= a:
                return 0.0
            s = csum[b] - csum[a]
            return float(csq[b] - csq[a] - s * s / (b - a))

        def mean(a: int, b: int) -> float:
            return float((csum[b] - csum[a]) / (b - a))

        best = (0, 0, math.inf)
        for a in range(n + 1):
            for b in range(a + self.min_size, n + 1):
                low = mean(a, b)
                outer_ok = (a == 0 or mean(0, a) > low) and (b == n or mean(b, n) > low)
                if not outer_ok:
                    continue
                cost = sse(0, a) + sse(a, b) + sse(b, n)
                if cost < best[2]:
                    best = (a, b, cost)
        one = sse(0, n)
        a, b, three = best
        if not math.isfinite(three):
            return 0, 0, -math.inf
        # BIC with a shared noise variance: n log(SSE / n) + k log(n), k = number of levels + cuts.
        k_three = 1 + (a > 0) + (b < n) + (a > 0) + (b < n)
        var_one, var_three = max(one / n, 1e-12), max(three / n, 1e-12)
        gain = n * math.log(var_one / var_three) - self.penalty * k_three * math.log(max(n, 2))
        return a, b, gain

    def predict(self) -> Boundaries | None:
        """The window, ``Boundaries(1.0, 0.0)`` if Small is as good as Large everywhere, or ``None``
        if there is no safe window (run Large only)."""
        if self.signal_ is None:
            raise RuntimeError("call fit(curve) before predict()")
        signal, n_grid = self.signal_, len(self.grid_) - 1
        if float(signal.max()) <= self.threshold:
            return boundaries_from_steps(self.grid_, 0, n_grid, score=math.inf)
        a, b, gain = self._segments()
        if gain <= 0 or b - a < self.min_size or float(signal[a:b].mean()) > self.threshold:
            return None
        start = int(self.steps_[a])
        stop = int(self.steps_[b]) if b < len(self.steps_) else n_grid
        return boundaries_from_steps(self.grid_, start, stop, score=gain)
