"""The online controller: place the Large -> Small -> Large boundaries per sample, during sampling.

**Hand-over.** It starts with Large. At probe steps it also calls Small on the same state (one extra
Small call) and measures the velocity divergence ``||v_L - v_S|| / ||v_L||``; it hands over to Small
once the divergence has stayed at or below ``threshold`` for ``patience`` probes in a row. Fitted
controllers compare the *raw* probe (``smoothing=1.0``): a moving average lags a hand-over by
several steps, and a threshold fitted through that lag admits everything (issue #20).

**Hand-back.** Small runs at most ``small_span`` steps unchecked (fitted leave-one-prompt-out: the
longest span that never ran past a held-out prompt's safe window), counted from a hand-over the
probes saw happen (a sample whose first probe is already low keeps Large: its window opened before
the probes began, so how much of it is left is unknown); then, where checks pay (Small
cheaper than half of Large), every ``monitor_every``-th step is a *check*: Large takes the step and
Small is probed beside it; above ``monitor_threshold`` the sample stays on Large. Without checks it
returns at the end of the span. Older profiles' return rule (the prior ``sigma_out`` with a linear
correction, ``regression``) still runs as stored.

**Fallback.** A fit whose leave-one-prompt-out validation finds no rule that keeps every held-out
prompt's Small steps inside its safe window (and its final sample at the quality target), or whose
held-out samples hand over too rarely to repay the probes every sample spends (held-out compute not
below the stored pair window's), stores ``fallback`` (the reason): ``sample(..., "online")`` then
runs the stored per-prompt windows (the pair window for unseen prompts) and says so, instead of
handing over everywhere or probing for nothing.

**Calibrated prompts.** ``sample(..., "online")`` runs the stored window of a prompt calibrated with
its own (measured on that prompt) and the controller on the rows whose prompt was not.

Probes are budgeted; a row whose budget runs out before it hands over stays on Large (no evidence,
no risk). Everything the controller decides is recorded in :class:`Decisions`. The controller needs
no model: :func:`replay` drives it with recorded divergences, which is how calibration fits and
validates it and how tests check it against known answers.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptive.schedule import base_of, call_cost, is_unguided
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
        monitor_every: after ``small_span`` Small steps, every ``monitor_every``-th step is a check
            (Large takes the step, Small is probed beside it); 0: no checks.
        monitor_threshold: a check above this returns the sample to Large.
        large_probe_budget: most checks per sample (when they are spent, the sample returns to Large).
        small_span: most Small steps before the first check (or, without checks, before returning to
            Large); 0: no limit (the predicted ``sigma_out`` alone decides the return).
        fallback: non-empty when calibration could not validate this controller (the reason):
            ``"online"`` then runs the stored per-prompt / pair windows instead.
        fit: what the fit measured (leave-one-prompt-out scores, the options compared); for reports.
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
    small_span: int = 0
    fallback: str = ""

    def __post_init__(self) -> None:
        if not (self.threshold >= 0 and math.isfinite(self.threshold)):
            raise CalibrationError(f"threshold must be a finite non-negative divergence, got {self.threshold!r}")
        for name in ("sigma_out", "sigma_in_max", "probe_from_sigma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CalibrationError(f"{name} is a sigma in [0, 1], got {value!r}")
        if not 0.0 < self.smoothing <= 1.0:
            raise CalibrationError(f"smoothing is the weight of the newest probe, in (0, 1], got {self.smoothing!r}")
        if (self.patience < 1 or self.probe_budget < 0 or self.large_probe_budget < 0 or self.monitor_every < 0
                or self.small_span < 0):
            raise CalibrationError("patience must be >= 1 and the budgets, monitor_every and small_span >= 0")
        if not isinstance(self.fallback, str):
            raise CalibrationError(f"fallback is the reason the controller is not used (a string), got "
                                   f"{self.fallback!r}; recalibrate")
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
    def from_dict(cls, data: Mapping[str, Any] | ControllerConfig) -> ControllerConfig:
        if isinstance(data, ControllerConfig):
            return data  # already parsed (a profile's controller)
        if not isinstance(data, Mapping) or "threshold" not in data:
            raise CalibrationError("the stored profile has no online controller; calibrate with "
                                   "adaptive.calibrate(..., per_prompt=True) or `flowblend calibrate --per-prompt` "
                                   "(if you did and it was weaker than the stored profile, it was kept aside as "
                                   "<profile>.json.rejected: run it again with force=True / --force to store it)")
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
    smoothed)`` of Small probes during the Large head; ``monitors[r]`` ``(step, sigma, divergence)``
    of the checks during the Small stage (a check step runs Large, with a Small probe beside it);
    ``hand_in[r]``/``back[r]`` the first Small step and the first step back on Large for good (None
    if never); ``predicted_sigma_out[r]`` the return sigma predicted at hand-over (None: the span and
    checks decide); ``reason[r]`` a sentence.
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
        """Small calls beside Large's steps: the head's probes and the checks' probes."""
        return [len(p) + len(m) for p, m in zip(self.probes, self.monitors)]

    def small_steps(self, row: int = 0) -> list[int]:
        return [i for i, m in enumerate(self.models[row]) if base_of(m) == "small"]

    def cost(self, small_cost: float) -> list[float]:
        """Compute per row as a fraction of Large-only (guided, when the pair is), probes and checks
        included; a step without guidance (``"large:cond"``) costs half its model's call."""
        n = len(self.grid) - 1
        return [(sum(call_cost(m, small_cost) for m in models) + extra * small_cost) / n
                for models, extra in zip(self.models, self.extra_small_calls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line per row: the plan as a string of L/S (C: a check step, Large with a Small probe;
        lower case: a step without guidance) and the reason."""
        lines = []
        for r, models in enumerate(self.models):
            checks = {m[0] for m in self.monitors[r]}
            plan = "".join("C" if i in checks else _letter(m) for i, m in enumerate(models))
            lines.append(f"row {r}: {plan}  {self.reason[r]}")
        return "\n".join(lines)


def hand_in_and_back(models: Sequence[str]) -> tuple[int | None, int | None]:
    """The first Small step of a plan (model per step) and the first step after it back on Large.

    Example:
        >>> hand_in_and_back(["large", "small", "small", "large"]), hand_in_and_back(["large"])
        ((1, 3), (None, None))
    """
    first = next((i for i, m in enumerate(models) if base_of(m) == "small"), None)
    back = None if first is None else next((i for i in range(first, len(models)) if base_of(models[i]) != "small"),
                                           None)
    return first, back


def _letter(name: str) -> str:
    """A step's letter in :meth:`Decisions.summary`: L, S (or the model's initial), lower case
    without guidance."""
    letter = base_of(name)[:1].upper() or "?"
    return letter.lower() if is_unguided(name) else letter


def _ema(previous: float | None, value: float, smoothing: float) -> float:
    """The moving average the controller compares with its thresholds (the first probe as is)."""
    return value if previous is None else smoothing * value + (1 - smoothing) * previous


class OnlineController:
    """The controller's state for one sampling run of ``rows`` independently decided rows.

    A sampler asks :meth:`models_at` which model each row runs at step ``i`` and :meth:`probe_rows`
    which rows also want a Small probe (head probes and checks alike), and reports the measured
    divergences with :meth:`observe` before moving to step ``i + 1``. ``stored`` maps rows that do
    not need the controller (a prompt calibrated with its own window) to their model per step and
    the reason: those rows follow it and are never probed.
    """

    def __init__(self, config: ControllerConfig, grid: Sequence[float], rows: int, shared: bool = False,
                 stored: Mapping[int, tuple[Sequence[str], str]] | None = None) -> None:
        if config.fallback:
            raise CalibrationError(f"this online controller failed its validation at calibration ({config.fallback}); "
                                   "sample with its profile (schedule='online' or the Profile) to run the stored "
                                   "per-prompt windows, or recalibrate with more prompts")
        self.config, self.grid, self.rows, self.shared = config, [float(g) for g in grid], rows, shared
        self.n = len(self.grid) - 1
        self.phase = ["head"] * rows
        self.smoothed: list[float | None] = [None] * rows
        self.streak = [0] * rows
        self.checking: list[int | None] = [None] * rows  # the step of a pending check
        self.log_divs: list[list[float]] = [[] for _ in range(rows)]
        self.decisions = Decisions(self.grid, [[] for _ in range(rows)], [[] for _ in range(rows)],
                                   [[] for _ in range(rows)], [None] * rows, [None] * rows, [None] * rows,
                                   ["Large only: the divergence never fell to the threshold"] * rows, shared)
        self.stored = {r: list(models) for r, (models, _) in (stored or {}).items()}
        for r, (models, reason) in (stored or {}).items():
            if len(models) != self.n:
                raise ValueError(f"row {r}'s stored plan has {len(models)} steps, the grid {self.n}")
            self.phase[r] = "stored"
            self.decisions.reason[r] = reason
            self.decisions.hand_in[r], self.decisions.back[r] = hand_in_and_back(models)

    def _small_step(self, r: int, i: int) -> str:
        """Row ``r``'s model at step ``i`` of its Small stage: small, a check (large) or back to Large."""
        c, d = self.config, self.decisions
        predicted = d.predicted_sigma_out[r]
        if predicted is not None and self.grid[i] <= predicted:
            self._return(r, i, f"back to Large at the predicted sigma_out {predicted:.3f}")
            return "large"
        done = i - (d.hand_in[r] or 0)  # Small-stage steps taken so far
        first_check = c.small_span if c.small_span > 0 else 0
        if c.monitor_every > 0 and done >= first_check and (done - first_check) % c.monitor_every == 0:
            if len(d.monitors[r]) >= c.large_probe_budget:
                self._return(r, i, f"back to Large: check budget ({c.large_probe_budget}) spent")
                return "large"
            self.checking[r] = i
            return "large"
        if c.monitor_every == 0 and c.small_span > 0 and done >= c.small_span:
            self._return(r, i, f"back to Large after the validated span of {c.small_span} Small steps")
            return "large"
        return "small"

    def models_at(self, i: int) -> list[str]:
        """The model of step ``i`` for every row (records it); call once per step, in order."""
        out = []
        for r in range(self.rows):
            if r in self.stored:
                name = self.stored[r][i]
            else:
                name = self._small_step(r, i) if self.phase[r] == "small" else "large"
            self.decisions.models[r].append(name)
            out.append(name)
        return out

    def probe_rows(self, i: int) -> list[int]:
        """Rows that run a Small probe at step ``i``: on the Large head with budget left, or checking."""
        budget = self.config.probe_budget
        checks = [r for r in range(self.rows) if self.checking[r] == i]
        if self.grid[i] > self.config.probe_from_sigma or i >= self.n - 1:
            return checks  # too early to hand over, or too late for a hand-over to matter
        return [r for r in range(self.rows) if (self.phase[r] == "head" and len(self.decisions.probes[r]) < budget)
                or self.checking[r] == i]

    def observe(self, i: int, divergence: Mapping[int, float]) -> None:
        """Record the Small probes of step ``i`` (row -> rel_l2): decide hand-overs and checks."""
        c = self.config
        for r, value in divergence.items():
            value = float(value)
            if self.checking[r] == i:
                self.checking[r] = None
                self.decisions.monitors[r].append((i, self.grid[i], value))
                if value > c.monitor_threshold:
                    self._return(r, i, f"back to Large at the check of step {i}: divergence {value:.3f} > "
                                       f"{c.monitor_threshold:.3f}")
                continue
            self._observe_head(r, i, value)
        for r in range(self.rows):
            if self.phase[r] == "head" and len(self.decisions.probes[r]) >= c.probe_budget:
                self.phase[r] = "tail"
                self.decisions.reason[r] = f"Large only: probe budget ({c.probe_budget}) spent before the hand-over"

    def _observe_head(self, r: int, i: int, value: float) -> None:
        c = self.config
        smoothed = _ema(self.smoothed[r], value, c.smoothing)
        self.smoothed[r] = smoothed
        self.log_divs[r].append(math.log(max(value, _FLOOR)))
        self.decisions.probes[r].append((i, self.grid[i], value, smoothed))
        self.streak[r] = self.streak[r] + 1 if smoothed <= c.threshold else 0
        if i + 1 >= self.n or self.streak[r] < c.patience or self.grid[i + 1] > c.sigma_in_max:
            return
        if c.small_span > 0 and self.streak[r] == len(self.decisions.probes[r]):
            return  # low since the first probe: the window opened unseen, so the span cannot be placed
        hand_in_sigma = self.grid[i + 1]
        predicted: float | None = None
        if c.small_span == 0 and c.monitor_every == 0:  # the return rule of profiles before issue #20
            predicted = c.predict_sigma_out([float(np.mean(self.log_divs[r])), hand_in_sigma])
            if predicted >= hand_in_sigma:
                return  # no room for Small before the predicted return: keep probing
        self.phase[r] = "small"
        self.decisions.hand_in[r] = i + 1
        self.decisions.predicted_sigma_out[r] = predicted
        kind = "divergence" if c.smoothing == 1.0 else "smoothed divergence"
        back = (f"return predicted at sigma {predicted:.3f}" if predicted is not None else
                f"at most {c.small_span} Small steps" + (f", then a check every {c.monitor_every}"
                                                          if c.monitor_every else ""))
        self.decisions.reason[r] = f"Small from step {i + 1}: {kind} {smoothed:.3f} <= {c.threshold:.3f}; {back}"

    def _return(self, r: int, step: int, why: str) -> None:
        self.phase[r] = "tail"
        self.checking[r] = None
        self.decisions.back[r] = step
        self.decisions.reason[r] += f"; {why}"


def replay(config: ControllerConfig, grid: Sequence[float], divergences: Sequence[Sequence[float]] | np.ndarray
           ) -> Decisions:
    """Run the controller on recorded divergences (``divergences[r][i]`` for row ``r``, step ``i``).

    Exactly the decisions a sampler makes when Small's probes measure those values (at a check step
    too: ``divergences[r][i]`` is Small against Large at step ``i``); used to fit and validate the
    controller at calibration time and to test it without models.
    """
    values = np.asarray(divergences, float)
    n = len(grid) - 1
    if values.ndim != 2 or values.shape[1] < n:
        raise CalibrationError(f"divergences must be (rows, >= {n} steps), got shape {values.shape}")
    controller = OnlineController(dataclasses.replace(config, fallback=""), grid, values.shape[0])
    for i in range(n):
        controller.models_at(i)
        rows = controller.probe_rows(i)
        controller.observe(i, {r: values[r, i] for r in rows})
    return controller.decisions


CHECK_EVERY = 2  # a check every other step: a sample runs at most one Small step past its window
MARGINS = (0, 1, 2, 3, 4, 6)
_VIOLATION = 1000.0
QualityFn = Callable[[int, Sequence[str]], float]


def _windows(starts: Sequence[int | None], stops: Sequence[int | None], n: int) -> list[tuple[int, int]]:
    return [(n, n) if a is None or b is None or a >= b else (int(a), int(b)) for a, b in zip(starts, stops)]


def thresholds(head: np.ndarray, most: int = 200, tie: float = 1e-3) -> list[float]:
    """Geometric midpoints between the distinct probe levels (every cut the raw rule can make; levels
    within ``tie`` of each other are one level, so no cut falls inside rounding noise), and one below all."""
    values = np.unique(np.maximum(head.ravel(), _FLOOR))
    levels = values[np.r_[True, values[1:] > values[:-1] * (1 + tie)]] if len(values) else values
    if len(levels):  # each level stands for the largest value it merged, so a cut lies above all of them
        ends = np.r_[np.flatnonzero(values[1:] > values[:-1] * (1 + tie)), len(values) - 1]
        levels = values[ends]
    below = [levels[0] / 2] if len(levels) and levels[0] > _FLOOR else []  # zero passes any cut: none below it
    cuts = np.r_[below, np.sqrt(levels[:-1] * levels[1:])] if len(levels) else np.array([_FLOOR])
    if not len(cuts):  # every probe is zero: any cut passes them all
        cuts = np.array([_FLOOR])
    if len(cuts) > most:
        cuts = cuts[np.linspace(0, len(cuts) - 1, most).round().astype(int)]
    return [float(v) for v in cuts]


def _fit_hand_over(grid: Sequence[float], values: np.ndarray, windows: list[tuple[int, int]], small_cost: float,
                   probe_budget: int | None) -> ControllerConfig:
    """The raw-probe threshold that hands no calibration sample over before its window and wastes
    least (a hand-over later than one step into the window loses Small steps, probes cost Small
    calls), placed in the middle of the gap it cuts."""
    n = len(grid) - 1
    starts = [a for a, b in windows if a < b]
    if not starts:  # no calibration prompt has a window: never hand over
        return ControllerConfig(threshold=0.0, sigma_in_max=0.0, probe_from_sigma=0.0, smoothing=1.0, probe_budget=0)
    earliest, latest = min(starts), max(starts)
    first_probe = max(0, earliest - 1)
    budget = probe_budget if probe_budget is not None else max(1, min(n - 1, latest + 1) - first_probe)
    base = ControllerConfig(threshold=0.0, sigma_out=0.0, sigma_in_max=float(grid[earliest]) if earliest else 1.0,
                            probe_from_sigma=float(grid[first_probe]), smoothing=1.0, probe_budget=budget)
    def loss(trial: ControllerConfig) -> float:
        d = replay(trial, grid, values)
        total = 0.0
        for (a, b), h, probes in zip(windows, d.hand_in, d.probes):
            if h is not None and (a >= b or h <= a or h >= b):  # h = a: a probe outside the window passed
                total += _VIOLATION
            elif a < b:  # a probe sees the window open at its first step at the earliest: hand-in a + 1
                total += (1 - small_cost) * ((b - a - 1) if h is None else max(0, h - a - 1))
            total += small_cost * len(probes)
        return total

    cuts = thresholds(values[:, first_probe:first_probe + budget])
    losses = [loss(dataclasses.replace(base, threshold=t)) for t in cuts]
    best_loss = min(losses)
    tied = [t for t, v in zip(cuts, losses) if v <= best_loss + 1e-9]
    # Every cut in the best run decides the calibration samples alike: take the middle of the gap
    # (in log divergence), the cut that leaves the most room to unseen samples on either side.
    best = dataclasses.replace(base, threshold=math.sqrt(min(tied) * max(tied)))
    if loss(best) > best_loss + 1e-9:  # the best cuts are not one run: the first of them
        best = dataclasses.replace(base, threshold=tied[0])
    best_loss = loss(best)
    if probe_budget is None:  # then the fewest probes that lose nothing more (late windows may not pay)
        for shorter in range(1, budget):
            trial = dataclasses.replace(best, probe_budget=shorter)
            if (value := loss(trial)) < best_loss - 1e-12:
                best, best_loss = trial, value
    return best


def _fit_hand_back(config: ControllerConfig, grid: Sequence[float], values: np.ndarray,
                   windows: list[tuple[int, int]], margin: int, checks: bool) -> ControllerConfig:
    """Small for the shortest room any calibration sample had after its hand-over, less ``margin``
    steps; then checks every other step (``checks``) or back to Large."""
    d = replay(config, grid, values)
    rooms = [b - h for (a, b), h in zip(windows, d.hand_in) if h is not None and a < b and h < b]
    if not rooms:
        return config
    span = min(rooms) - margin
    if checks:
        return dataclasses.replace(config, small_span=max(span, 0), monitor_every=CHECK_EVERY,
                                   monitor_threshold=config.threshold,
                                   large_probe_budget=max(1, -(-(max(rooms) - max(span, 0)) // CHECK_EVERY) + 1))
    return dataclasses.replace(config, small_span=max(span, 1))


def _score(config: ControllerConfig, grid: Sequence[float], values: np.ndarray, windows: list[tuple[int, int]],
           rows: Sequence[int], small_cost: float, quality: QualityFn | None, target: float | None
           ) -> dict[str, Any]:
    """How the controller does on ``rows``: Small steps outside each sample's window (no slack: the
    final sample pays for every one), the share of each window used, final-sample quality, and compute
    per sample, the probes of samples that never hand over included (``costs``, ``probe_costs``,
    ``handed_over``: one entry per row)."""
    d = replay(config, grid, values[list(rows)])
    n = len(grid) - 1
    outside, used, below, qualities = 0, [], 0, []
    for j, k in enumerate(rows):
        a, b = windows[k]
        small = d.small_steps(j)
        outside += sum(1 for i in small if not a <= i < b)
        if a < b:
            used.append(sum(1 for i in small if a <= i < b) / (b - a))
        if quality is not None and any(m == "small" for m in d.models[j]):
            q = quality(k, d.models[j])
            qualities.append(q)
            below += int(target is not None and q < target)
    costs = d.cost(small_cost)
    return {"outside_steps": outside, "below_target": below,
            "used_fraction": float(np.mean(used)) if used else 0.0, "min_used_fraction": float(min(used, default=0.0)),
            "cost": float(np.mean(costs)), "costs": [float(c) for c in costs],
            "probe_costs": [small_cost * e / n for e in d.extra_small_calls],
            "handed_over": [h is not None for h in d.hand_in],
            "min_quality": float(min(qualities)) if qualities else None}


def _pays(costs: Sequence[float], probe_costs: Sequence[float], handed_over: Sequence[bool],
          fallback_cost: float) -> dict[str, float | None]:
    """The held-out economics of a rule: ``cost`` (mean compute per sample, probes of every sample
    included), ``handover_rate`` (share of samples that hand over), ``probe_cost`` (mean probe compute
    per sample), ``saving`` (mean compute the Small steps of a sample that hands over save, before
    probes) and
    ``break_even_rate``: the hand-over rate at which the probes are repaid against ``fallback_cost``
    (what ``"online"`` runs instead on an unseen prompt: the pair window; None: no sample hands over,
    so no rate is known to repay them). The rule pays exactly when ``handover_rate > break_even_rate``
    (``cost = 1 + probe_cost - handover_rate * saving``)."""
    costs_a, probes_a, handed = np.asarray(costs, float), np.asarray(probe_costs, float), np.asarray(handed_over, bool)
    rate = float(handed.mean()) if len(handed) else 0.0
    probe = float(probes_a.mean()) if len(probes_a) else 0.0
    saving = float(np.mean(1.0 + probes_a[handed] - costs_a[handed])) if handed.any() else 0.0
    need = 1.0 + probe - fallback_cost
    break_even = max(need, 0.0) / saving if saving > 0 else (0.0 if need < 0 else None)
    return {"cost": float(costs_a.mean()) if len(costs_a) else 1.0, "handover_rate": rate, "probe_cost": probe,
            "saving": saving, "break_even_rate": break_even}


def _fit(grid: Sequence[float], values: np.ndarray, windows: list[tuple[int, int]], small_cost: float,
         margin: int, checks: bool, probe_budget: int | None) -> ControllerConfig:
    hand_over = _fit_hand_over(grid, values, windows, small_cost, probe_budget)
    return _fit_hand_back(hand_over, grid, values, windows, margin, checks)


def fit_controller(grid: Sequence[float], divergences: np.ndarray, starts: Sequence[int | None],
                   stops: Sequence[int | None], prompts: Sequence[int], small_cost: float,
                   quality: QualityFn | None = None, target: float | None = None,
                   probe_budget: int | None = None, fallback_cost: float = 1.0) -> ControllerConfig:
    """Fit the controller on calibration samples and validate it leave-one-prompt-out.

    ``divergences`` is ``(samples, steps)`` from the probe along Large's trajectory; ``starts`` and
    ``stops`` each sample's safe window (its prompt's per-prompt calibration; None: the prompt keeps
    Large); ``prompts`` which prompt each sample is; ``quality(k, models)`` the final-sample quality of
    sample ``k`` run with that per-step plan (None: judged on the decisions alone); ``fallback_cost``
    the compute (fraction of Large-only) of what ``"online"`` runs on an unseen prompt without the
    controller: the stored pair window (1.0: Large only).

    The hand-over threshold is on the raw probe (:func:`_fit_hand_over`); the hand-back is Small for
    a validated span, then checks every other step where Small costs under half of Large
    (:func:`_fit_hand_back`). Each candidate rule (span margin, checks or not) is fitted without one
    prompt and scored on it, for every prompt: Small steps outside the held-out prompt's window,
    held-out final samples below ``target``, and compute per held-out sample with the probes of every
    sample counted, those that never hand over too (:func:`_pays`). The cheapest candidate with no
    such step or sample is kept if its held-out compute is below ``fallback_cost``, i.e. if enough
    held-out samples hand over to repay the probes; otherwise the result carries ``fallback`` (the
    reason) and ``sample(..., "online")`` runs the stored windows.
    """
    if not 0.0 < fallback_cost <= 1.0:
        raise CalibrationError(f"fallback_cost is the compute of the stored pair window as a fraction of Large-only, "
                               f"in (0, 1]; got {fallback_cost!r}")
    values = np.asarray(divergences, float)
    n = len(grid) - 1
    windows = _windows(starts, stops, n)
    groups: dict[int, list[int]] = {}
    for k, p in enumerate(prompts):
        groups.setdefault(int(p), []).append(k)
    options = [(m, c) for c in ((True, False) if small_cost < 0.5 else (False,)) for m in MARGINS]
    report: list[dict[str, Any]] = []
    folds = {}
    for p, rows in groups.items():
        train = [k for k in range(len(values)) if k not in set(rows)]
        folds[p] = (train, _fit_hand_over(grid, values[train], [windows[k] for k in train], small_cost, probe_budget))
    for margin, checks in options:
        outside, below, used, least_used = 0, 0, [], 1.0
        costs: list[float] = []
        probe_costs: list[float] = []
        handed: list[bool] = []
        for p, rows in groups.items():
            train, hand_over = folds[p]
            config = _fit_hand_back(hand_over, grid, values[train], [windows[k] for k in train], margin, checks)
            s = _score(config, grid, values, windows, rows, small_cost, quality, target)
            outside, below = outside + s["outside_steps"], below + s["below_target"]
            costs += s["costs"]
            probe_costs += s["probe_costs"]
            handed += s["handed_over"]
            used.append(s["used_fraction"])
            least_used = min(least_used, s["min_used_fraction"])
        report.append({"margin": margin, "checks": checks, "outside_steps": outside, "below_target": below,
                       **_pays(costs, probe_costs, handed, fallback_cost), "used_fraction": float(np.mean(used)),
                       "min_used_fraction": least_used})
    def passes(r: dict[str, Any]) -> bool:
        return r["outside_steps"] == 0 and r["below_target"] == 0

    # A margin counts only if every larger one passes too: one that passes by luck (a check landing
    # on a window's end) between failing ones is not a rule.
    sound = [r for r in report if all(passes(o) for o in report if o["checks"] == r["checks"]
                                      and o["margin"] >= r["margin"])]
    fit: dict[str, Any] = {"samples": int(len(values)), "prompts": len(groups), "fallback_cost": float(fallback_cost),
                           "leave_one_prompt_out": report}
    fallback = ""
    cheapest = min(sound, key=lambda r: (r["cost"], r["margin"])) if sound else None
    if len(groups) < 2:
        fallback = "one calibration prompt cannot be validated leave-one-prompt-out; calibrate on 2 or more"
    elif cheapest is None:
        worst = min(report, key=lambda r: (r["outside_steps"] + r["below_target"], r["cost"]))
        fallback = (f"no rule kept every held-out prompt inside its safe window at the quality target (best: "
                    f"{worst['outside_steps']} Small steps outside, {worst['below_target']} samples below target)")
    elif cheapest["cost"] >= fallback_cost:
        rate, need = cheapest["handover_rate"], cheapest["break_even_rate"]
        fallback = (f"it does not pay: {rate:.0%} of held-out samples hand over, and its probes "
                    f"({cheapest['probe_cost']:.3f} of Large per sample, spent by those that never hand over too) "
                    + (f"need {need:.0%}" if need is not None and need <= 1 else "need more than every sample")
                    + " to cost less than " + ("Large only" if fallback_cost >= 1.0 else
                                               f"the stored pair window ({fallback_cost:.3f} of Large)")
                    + f"; held-out it costs {cheapest['cost']:.3f}")
    chosen = cheapest if cheapest is not None and not fallback else {"margin": max(MARGINS), "checks": False}
    config = _fit(grid, values, windows, small_cost, int(chosen["margin"]), bool(chosen["checks"]), probe_budget)
    calibration = _score(config, grid, values, windows, range(len(values)), small_cost, None, None)
    calibration.update(_pays(calibration.pop("costs"), calibration.pop("probe_costs"), calibration.pop("handed_over"),
                             fallback_cost))
    fit.update(chosen={"margin": chosen["margin"], "checks": chosen["checks"]}, calibration=calibration)
    return dataclasses.replace(config, fit=fit, fallback=fallback)


__all__ = ["ControllerConfig", "Decisions", "FEATURES", "OnlineController", "fit_controller", "hand_in_and_back", "replay", "thresholds"]
