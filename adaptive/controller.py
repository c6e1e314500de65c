"""The online controller: place the Large -> Small -> Large boundaries per sample, during sampling.

It starts with Large. At probe steps it also calls Small on the same state (one extra Small call)
and measures the velocity divergence ``||v_L - v_S|| / ||v_L||``; it smooths the probes (an
exponential moving average) and hands over to Small once the smoothed divergence has stayed at or
below ``threshold`` for ``patience`` probes in a row (hysteresis: one lucky probe does not switch).
At hand-over it predicts where to return to Large: the profile's ``sigma_out`` as a prior, corrected
by a linear model fitted at calibration time from what the probes saw (the mean log divergence and
the hand-over sigma) to each calibration prompt's best ``sigma_out``. Probes are budgeted; a row
whose budget runs out before it hands over stays on Large (no evidence, no risk).

Optionally (``monitor_every > 0``) Large is also called every few steps during the Small stage, and
the controller returns to Large early if the divergence there exceeds ``monitor_threshold``; those
calls count against ``large_probe_budget``. It is off by default: on the embedded pair the extra
Large calls cost more than they recover (see the README).

Everything the controller decides is recorded in :class:`Decisions` and returned with the sample.
The controller needs no model: :func:`replay` drives it with recorded divergences, which is how
calibration fits its threshold and how tests check it against known answers.

Example:
    >>> config = ControllerConfig(threshold=0.1, sigma_out=0.3, smoothing=1.0)
    >>> grid = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    >>> d = replay(config, grid, [[0.3, 0.05, 0.05, 0.05, 0.05]])
    >>> d.models[0], d.hand_in[0], d.back[0]
    (['large', 'large', 'small', 'small', 'large'], 2, 4)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptive.errors import CalibrationError

FEATURES = ("mean_log_divergence", "hand_in_sigma")
_FLOOR = 1e-8


@dataclass(frozen=True)
class ControllerConfig:
    """What the online controller needs; stored in ``Profile.controller`` as plain JSON.

    Args:
        threshold: hand over to Small when the smoothed divergence (``rel_l2``) is at or below this.
        sigma_out: prior sigma at which Small hands back to Large (steps with sigma <= it run Large).
        sigma_in_max: the earliest hand-over allowed: Small never runs a step with sigma above it.
        probe_from_sigma: probes start at the first step with sigma at or below this (earlier
            probes could not hand over yet; they would only spend the budget).
        smoothing: weight of the newest probe in the moving average (1.0: no smoothing).
        patience: consecutive probes at or below ``threshold`` before handing over.
        probe_budget: most extra Small calls (probes) per sample.
        regression: the linear correction of ``sigma_out``: ``{"features", "mean", "scale", "coef",
            "intercept"}`` (``sigma_out = prior + intercept + coef . (f - mean) / scale``); empty: prior only.
        monitor_every, monitor_threshold, large_probe_budget: optional Large checks during the Small stage.
    """

    threshold: float
    sigma_out: float = 0.0
    sigma_in_max: float = 1.0
    probe_from_sigma: float = 1.0
    smoothing: float = 0.5
    patience: int = 1
    probe_budget: int = 8
    regression: dict[str, Any] = field(default_factory=dict)
    monitor_every: int = 0
    monitor_threshold: float = math.inf
    large_probe_budget: int = 0
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.threshold >= 0 and math.isfinite(self.threshold)):
            raise CalibrationError(f"threshold must be a finite non-negative divergence, got {self.threshold!r}")
        for name in ("sigma_out", "sigma_in_max", "probe_from_sigma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CalibrationError(f"{name} is a sigma in [0, 1], got {value!r}")
        if not 0.0 < self.smoothing <= 1.0:
            raise CalibrationError(f"smoothing is the weight of the newest probe, in (0, 1], got {self.smoothing!r}")
        if self.patience < 1 or self.probe_budget < 0 or self.large_probe_budget < 0 or self.monitor_every < 0:
            raise CalibrationError("patience must be >= 1 and the budgets and monitor_every >= 0")
        if self.regression:
            missing = {"features", "mean", "scale", "coef", "intercept"} - set(self.regression)
            if missing:
                raise CalibrationError(f"controller regression lacks {sorted(missing)}; recalibrate")
            if tuple(self.regression["features"]) != FEATURES:
                raise CalibrationError(f"controller regression uses features {self.regression['features']}, "
                                       f"this library computes {list(FEATURES)}; recalibrate")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not math.isfinite(self.monitor_threshold):
            data["monitor_threshold"] = None  # JSON has no infinity
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControllerConfig:
        if not isinstance(data, Mapping) or "threshold" not in data:
            raise CalibrationError("the profile has no online controller; calibrate with "
                                   "adaptive.calibrate(..., per_prompt=True) or `flowblend calibrate --per-prompt`")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise CalibrationError(f"unknown controller fields {sorted(unknown)}")
        values = dict(data)
        if values.get("monitor_threshold") is None:
            values["monitor_threshold"] = math.inf
        return cls(**values)

    def predict_sigma_out(self, features: Sequence[float]) -> float:
        """The return sigma for these features (prior plus the fitted correction, clipped to [0, 1])."""
        value = self.sigma_out
        reg = self.regression
        if reg:
            z = (np.asarray(features, float) - np.asarray(reg["mean"], float)) / np.asarray(reg["scale"], float)
            value += float(reg["intercept"]) + float(np.dot(np.asarray(reg["coef"], float), z))
        return min(max(value, 0.0), 1.0)


@dataclass
class Decisions:
    """Why each sample ran which model: one entry per controlled row (one for a shared batch).

    ``models[r][i]`` is the model of step ``i``; ``probes[r]`` lists ``(step, sigma, divergence,
    smoothed)`` of Small probes during the Large head; ``hand_in[r]``/``back[r]`` the first Small step
    and the first step back on Large (None if never); ``predicted_sigma_out[r]`` the return sigma
    predicted at hand-over; ``reason[r]`` a sentence.
    """

    grid: list[float]
    models: list[list[str]]
    probes: list[list[tuple[int, float, float, float]]]
    monitors: list[list[tuple[int, float, float]]]
    hand_in: list[int | None]
    back: list[int | None]
    predicted_sigma_out: list[float | None]
    reason: list[str]
    shared: bool = False

    @property
    def extra_small_calls(self) -> list[int]:
        return [len(p) for p in self.probes]

    @property
    def extra_large_calls(self) -> list[int]:
        return [len(m) for m in self.monitors]

    def small_steps(self, row: int = 0) -> list[int]:
        return [i for i, m in enumerate(self.models[row]) if m == "small"]

    def cost(self, small_cost: float) -> list[float]:
        """Compute per row as a fraction of Large-only, probes and monitors included."""
        n = len(self.grid) - 1
        out = []
        for models, probes, monitors in zip(self.models, self.probes, self.monitors):
            small = sum(m == "small" for m in models) + len(probes)
            large = sum(m == "large" for m in models) + len(monitors)
            out.append((large + small * small_cost) / n)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line per row: the plan as a string of L/S and the reason."""
        lines = []
        for r, models in enumerate(self.models):
            plan = "".join("S" if m == "small" else "L" for m in models)
            lines.append(f"row {r}: {plan}  {self.reason[r]}")
        return "\n".join(lines)


def _ema(previous: float | None, value: float, smoothing: float) -> float:
    """The moving average the controller compares with its thresholds (the first probe as is)."""
    return value if previous is None else smoothing * value + (1 - smoothing) * previous


class OnlineController:
    """The controller's state for one sampling run of ``rows`` independently decided rows.

    A sampler asks :meth:`models_at` which model each row runs at step ``i``, :meth:`probe_rows`
    which rows also want a Small probe (and :meth:`monitor_rows` a Large check), and reports the
    measured divergences with :meth:`observe` / :meth:`observe_monitor` before moving to step ``i + 1``.
    """

    def __init__(self, config: ControllerConfig, grid: Sequence[float], rows: int, shared: bool = False) -> None:
        self.config, self.grid, self.rows, self.shared = config, [float(g) for g in grid], rows, shared
        self.n = len(self.grid) - 1
        self.phase = ["head"] * rows
        self.smoothed: list[float | None] = [None] * rows
        self.monitor_smoothed: list[float | None] = [None] * rows
        self.streak = [0] * rows
        self.log_divs: list[list[float]] = [[] for _ in range(rows)]
        self.decisions = Decisions(self.grid, [[] for _ in range(rows)], [[] for _ in range(rows)],
                                   [[] for _ in range(rows)], [None] * rows, [None] * rows, [None] * rows,
                                   ["Large only: the divergence never fell to the threshold"] * rows, shared)

    def models_at(self, i: int) -> list[str]:
        """The model of step ``i`` for every row (records it); call once per step, in order."""
        out = []
        for r in range(self.rows):
            predicted = self.decisions.predicted_sigma_out[r]
            if self.phase[r] == "small" and predicted is not None and self.grid[i] <= predicted:
                self._return(r, i, f"back to Large at the predicted sigma_out {predicted:.3f}")
            name = "small" if self.phase[r] == "small" else "large"
            self.decisions.models[r].append(name)
            out.append(name)
        return out

    def probe_rows(self, i: int) -> list[int]:
        """Rows that run a Small probe at step ``i`` (still on the Large head, budget left)."""
        budget = self.config.probe_budget
        if self.grid[i] > self.config.probe_from_sigma or i >= self.n - 1:
            return []  # too early to hand over, or too late for a hand-over to matter
        return [r for r in range(self.rows) if self.phase[r] == "head" and len(self.decisions.probes[r]) < budget]

    def monitor_rows(self, i: int) -> list[int]:
        """Rows on Small whose Large check is due at step ``i``."""
        c = self.config
        if c.monitor_every <= 0:
            return []
        return [r for r in range(self.rows) if self.phase[r] == "small" and len(self.decisions.monitors[r])
                < c.large_probe_budget and (i - (self.decisions.hand_in[r] or 0)) % c.monitor_every == 0]

    def observe(self, i: int, divergence: Mapping[int, float]) -> None:
        """Record the Small probes of step ``i`` (row -> rel_l2) and decide the hand-over."""
        c = self.config
        for r, value in divergence.items():
            value = float(value)
            prev = self.smoothed[r]
            smoothed = _ema(prev, value, c.smoothing)
            self.smoothed[r] = smoothed
            self.log_divs[r].append(math.log(max(value, _FLOOR)))
            self.decisions.probes[r].append((i, self.grid[i], value, smoothed))
            self.streak[r] = self.streak[r] + 1 if smoothed <= c.threshold else 0
            if i + 1 >= self.n or self.streak[r] < c.patience or self.grid[i + 1] > c.sigma_in_max:
                continue
            hand_in_sigma = self.grid[i + 1]
            predicted = c.predict_sigma_out([float(np.mean(self.log_divs[r])), hand_in_sigma])
            if predicted >= hand_in_sigma:
                continue  # no room for Small before the predicted return: keep probing
            self.phase[r] = "small"
            self.decisions.hand_in[r] = i + 1
            self.decisions.predicted_sigma_out[r] = predicted
            self.decisions.reason[r] = (f"Small from step {i + 1}: smoothed divergence {smoothed:.3f} <= "
                                        f"{c.threshold:.3f}; return predicted at sigma {predicted:.3f}")
        for r in range(self.rows):
            if self.phase[r] == "head" and len(self.decisions.probes[r]) >= c.probe_budget:
                self.phase[r] = "tail"
                self.decisions.reason[r] = f"Large only: probe budget ({c.probe_budget}) spent before the hand-over"

    def observe_monitor(self, i: int, divergence: Mapping[int, float]) -> None:
        """Record Large checks during the Small stage; return to Large early above ``monitor_threshold``."""
        c = self.config
        for r, value in divergence.items():
            prev = self.monitor_smoothed[r]
            smoothed = _ema(prev, float(value), c.smoothing)
            self.monitor_smoothed[r] = smoothed
            self.decisions.monitors[r].append((i, self.grid[i], float(value)))
            if smoothed > c.monitor_threshold and i + 1 < self.n:
                self._return(r, i + 1, f"back to Large early: monitored divergence {smoothed:.3f} > "
                                       f"{c.monitor_threshold:.3f}")

    def _return(self, r: int, step: int, why: str) -> None:
        self.phase[r] = "tail"
        self.decisions.back[r] = step
        self.decisions.reason[r] += f"; {why}"


def replay(config: ControllerConfig, grid: Sequence[float], divergences: Sequence[Sequence[float]]) -> Decisions:
    """Run the controller on recorded divergences (``divergences[r][i]`` for row ``r``, step ``i``).

    Exactly the decisions a sampler makes when Small's probes measure those values; used to fit the
    threshold at calibration time and to test the controller without models.
    """
    values = np.asarray(divergences, float)
    n = len(grid) - 1
    if values.ndim != 2 or values.shape[1] < n:
        raise CalibrationError(f"divergences must be (rows, >= {n} steps), got shape {values.shape}")
    controller = OnlineController(config, grid, values.shape[0])
    for i in range(n):
        controller.models_at(i)
        rows = controller.probe_rows(i)
        controller.observe(i, {r: values[r, i] for r in rows})
    return controller.decisions


def _threshold_candidates(head: np.ndarray, smoothing: float, most: int = 200) -> list[float]:
    """The probe values and their moving averages (every level the controller can compare), thinned
    to at most ``most`` quantiles."""
    smoothed = head.copy()
    for i in range(1, head.shape[1]):
        smoothed[:, i] = smoothing * head[:, i] + (1 - smoothing) * smoothed[:, i - 1]
    values = np.unique(np.r_[head.ravel(), smoothed.ravel()])
    if len(values) > most:
        values = values[np.linspace(0, len(values) - 1, most).round().astype(int)]
    return [float(v) for v in values]


def fit_controller(grid: Sequence[float], divergences: np.ndarray, starts: Sequence[int | None],
                   sigma_outs: Sequence[float | None], prior_sigma_out: float, smoothing: float = 0.5,
                   patience: int = 1, probe_budget: int | None = None) -> ControllerConfig:
    """Fit the hand-over threshold and the ``sigma_out`` correction on calibration samples.

    ``divergences`` is ``(samples, steps)`` from the probe along Large's trajectory; ``starts`` and
    ``sigma_outs`` are each sample's best window (its prompt's per-prompt calibration; None: the
    prompt keeps Large). The earliest hand-over (one of the best starts seen) and the threshold are
    chosen together to minimise the mean distance (in steps) between the replayed hand-over and each
    sample's best start (``n`` standing for "never"); the correction is a ridge regression kept only
    if leave-one-out error beats the prior alone. ``probe_budget`` defaults to reaching two probes
    past the latest best start seen.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    values = np.asarray(divergences, float)
    n = len(grid) - 1
    targets = np.array([n if s is None else int(s) for s in starts], float)
    windowed = [k for k, s in enumerate(starts) if s is not None]
    seen_starts = sorted({int(starts[k]) for k in windowed})  # type: ignore[arg-type]
    latest = seen_starts[-1] if seen_starts else 0
    config, best_error = ControllerConfig(threshold=0.0, sigma_out=prior_sigma_out), math.inf
    for earliest in seen_starts or [0]:
        first_probe = max(0, earliest - 1 - patience)  # enough probes before it to fill the streak
        budget = probe_budget if probe_budget is not None else max(1, min(n, latest + 2) - first_probe)
        base = ControllerConfig(threshold=0.0, sigma_out=prior_sigma_out,
                                sigma_in_max=float(grid[earliest]) if earliest > 0 else 1.0,
                                probe_from_sigma=float(grid[first_probe]), smoothing=smoothing, patience=patience,
                                probe_budget=budget)
        for threshold in _threshold_candidates(values[:, first_probe:first_probe + budget], smoothing):
            trial = dataclasses.replace(base, threshold=threshold)
            hand_in = replay(trial, grid, values).hand_in
            error = float(np.mean(np.abs(np.array([n if h is None else h for h in hand_in], float) - targets)))
            if error < best_error - 1e-12:
                config, best_error = trial, error
    decisions = replay(config, grid, values)
    rows = [k for k in windowed if decisions.hand_in[k] is not None]
    fit: dict[str, Any] = {"hand_in_mae_steps": best_error, "samples": int(len(values)),
                           "windowed_samples": len(windowed)}
    # For the optional Large checks (off until monitor_every > 0): the divergence each sample had
    # at its best return step, i.e. where Large was needed again.
    at_return = []
    for k in windowed:
        sigma_out = sigma_outs[k]
        if sigma_out is not None and sigma_out > 0.0:
            back = int(np.searchsorted(-np.asarray(grid[:-1], float), -float(sigma_out)))
            at_return.append(values[k, min(back, n - 1)])
    monitor = float(np.median(at_return)) if at_return else math.inf
    regression: dict[str, Any] = {}
    if len(rows) >= 4:
        feats = np.array([[float(np.mean(np.log(np.maximum([p[2] for p in decisions.probes[k]], _FLOOR)))),
                           grid[decisions.hand_in[k] or 0]] for k in rows])
        y = np.array([float(sigma_outs[k]) for k in rows]) - prior_sigma_out  # type: ignore[arg-type]
        mean, scale = feats.mean(axis=0), feats.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = (feats - mean) / scale
        loo = cross_val_predict(Ridge(alpha=1.0), z, y, cv=LeaveOneOut())
        errors = {"prior": float(np.mean(y ** 2)), "ridge": float(np.mean((loo - y) ** 2))}
        fit.update(loo_mse=errors, regression_rows=len(rows))
        if errors["ridge"] < errors["prior"]:
            model = Ridge(alpha=1.0).fit(z, y)
            regression = {"features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
                          "coef": model.coef_.tolist(), "intercept": float(model.intercept_)}
    return dataclasses.replace(config, regression=regression, fit=fit, monitor_threshold=monitor)


__all__ = ["ControllerConfig", "Decisions", "FEATURES", "OnlineController", "fit_controller", "replay"]
