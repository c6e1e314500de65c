"""The typed parts of a :class:`~adaptive.profiles.Profile`: frozen records, each with its own JSON
round-trip (``to_dict`` / ``from_dict``), validated once where a profile is parsed.

* :class:`MeasuredPlan`: the recommended plan and each entry of the measured frontier;
* :class:`Window` and :class:`PerPrompt`: the per-prompt windows;
* :class:`CurveSummary`: the mean divergence curve; :class:`Proposal`: the change-point proposal;
* :class:`Quality`, :class:`Cost`, :class:`CalibrationInfo`: what was achieved, spent and run;
* the online controller is a :class:`~adaptive.controller.ControllerConfig`, parsed by
  :func:`controller_from_dict`.

``from_dict(data, where)`` raises :class:`~adaptive.errors.ProfileError` naming ``where`` (the file
and the field) and what is wrong. ``to_dict()`` writes the JSON objects profiles have always held,
so files need no migration (fields a record does not know are ignored at load). Records other than
the controller also read like those objects (``plan["cost"]``, ``quality.get("target")``, but not
``json.dumps(record)``: use ``to_dict()``); the controller is a
:class:`~adaptive.controller.ControllerConfig` (attributes, ``to_dict()``), and a part that was not
recorded is None where the dict profile held ``{}``. New code reads attributes.

Example:
    >>> plan = MeasuredPlan.from_dict({"steps": 9, "start": 0, "stop": 0, "quality": 0.96, "cost": 0.3},
    ...                               num_steps=30)
    >>> plan.steps, plan.is_large_only, plan["cost"]
    (9, True, 0.3)
    >>> MeasuredPlan.from_dict(plan.to_dict(), num_steps=30) == plan
    True
    >>> MeasuredPlan.from_dict({"steps": 31, "start": 0, "stop": 0, "quality": 1, "cost": 1}, "p.json: plan", 30)
    Traceback (most recent call last):
    ...
    adaptive.errors.ProfileError: p.json: plan: steps must be in [1, 30] and 0 <= start <= stop <= steps, got [31, 0, 0]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from adaptive.controller import ControllerConfig
from adaptive.errors import ProfileError
from adaptive.schedule import Schedule


class JsonView:
    """Read access to a record by its JSON field names (``record["cost"]``, ``record.get("target")``,
    ``dict(record)``): the view of :meth:`to_dict`, for code written when the parts were dicts."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def keys(self) -> Any:
        return self.to_dict().keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


# Field checks: each returns the value (as the record stores it) or raises naming where it is.

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(where: str, data: Any, names: tuple[str, ...]) -> Mapping[str, Any]:
    """``data`` as an object. Fields other than ``names`` are ignored, as profiles always allowed (a
    file written by another version or tool still loads; the store keeps old files byte for byte)."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where} must be an object, got {type(data).__name__}")
    return data


def _number(where: str, data: Mapping[str, Any], key: str, *, required: bool = False,
            none_ok: bool = False) -> float | None:
    if key not in data and not required:
        return None
    value = data.get(key)
    if value is None and none_ok:
        return None
    if not _finite(value):
        raise ProfileError(f"{where}: {key} must be a finite number, got {value!r}")
    return value  # an int stays an int: the file reads back as it was written


def _int(where: str, data: Mapping[str, Any], key: str) -> int | None:
    if key not in data:
        return None
    if not _integer(data[key]):
        raise ProfileError(f"{where}: {key} must be an integer, got {data[key]!r}")
    return int(data[key])


def _text(where: str, data: Mapping[str, Any], key: str) -> str | None:
    if data.get(key) is None:
        return None
    if not isinstance(data[key], str):
        raise ProfileError(f"{where}: {key} must be a string, got {data[key]!r}")
    return str(data[key])


def _present(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of a record: the fields it holds (None: not recorded)."""
    return {k: v for k, v in pairs.items() if v is not None}


def _steps_window(where: str, data: Mapping[str, Any], num_steps: int | None) -> list[int]:
    """``steps``, ``start``, ``stop`` of a record: integers with 1 <= steps (<= num_steps) and
    0 <= start <= stop <= steps."""
    ints = [data[k] for k in ("steps", "start", "stop")]
    limit = num_steps if num_steps is not None else math.inf
    if not all(map(_integer, ints)) or not (1 <= ints[0] <= limit and 0 <= ints[1] <= ints[2] <= ints[0]):
        bound = f"in [1, {num_steps}]" if num_steps is not None else ">= 1"
        raise ProfileError(f"{where}: steps must be {bound} and 0 <= start <= stop <= steps, got {ints}")
    return [int(i) for i in ints]


def _boundaries(where: str, sigma_in: float | None, sigma_out: float | None) -> None:
    if sigma_in is None or sigma_out is None or not 0.0 <= sigma_out <= sigma_in <= 1.0:
        raise ProfileError(f"{where}: needs 0 <= sigma_out <= sigma_in <= 1, got sigma_in={sigma_in!r}, "
                           f"sigma_out={sigma_out!r}")


@dataclass(frozen=True)
class MeasuredPlan(JsonView):
    """One plan calibration measured: Small on steps ``start .. stop - 1`` of ``sigmas(steps, shift)``
    (Large alone when ``start >= stop``), its mean ``quality`` against Large with all steps and its
    compute as a fraction of that (``cost``). ``sigma_in``/``sigma_out``: the window in sigma, where
    recorded (the recommended plan records it; frontier entries do not). ``samples``: how many
    calibration samples judged it when calibration screened it out before seeing them all (its quality
    is their mean); None: judged on every sample.
    """

    steps: int
    start: int
    stop: int
    quality: float
    cost: float
    sigma_in: float | None = None
    sigma_out: float | None = None
    samples: int | None = None

    @property
    def is_large_only(self) -> bool:
        return self.start >= self.stop

    def schedule(self) -> Schedule:
        """The plan's stages in sigma (Large only for a Large-alone plan).

        Example:
            >>> MeasuredPlan(9, 2, 5, 0.97, 0.3, sigma_in=0.8, sigma_out=0.4).schedule()
            Schedule(large (0.8, 1], small (0.4, 0.8], large (0, 0.4])
        """
        if self.is_large_only:
            return Schedule.large_only()
        if self.sigma_in is None or self.sigma_out is None:
            raise ProfileError("this measured plan records no sigma boundaries (a frontier entry): map its steps "
                               "with Schedule.from_steps(sigmas(plan.steps, shift), models)")
        return Schedule.lsl(self.sigma_in, self.sigma_out)

    def to_dict(self) -> dict[str, Any]:
        return _present({"steps": self.steps, "start": self.start, "stop": self.stop, "quality": self.quality,
                         "cost": self.cost, "sigma_in": self.sigma_in, "sigma_out": self.sigma_out,
                         "samples": self.samples})

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan", num_steps: int | None = None,
                  boundaries: bool = False) -> MeasuredPlan:
        """Parse one plan; ``num_steps`` bounds its step count, ``boundaries`` requires its sigmas."""
        names = ("steps", "start", "stop", "quality", "cost", "sigma_in", "sigma_out", "samples")
        if not isinstance(data, Mapping) or not {"steps", "start", "stop", "quality", "cost"} <= set(data):
            raise ProfileError(f"{where} must be an object with steps, start, stop, quality and cost")
        data = _object(where, data, names)
        ints = _steps_window(where, data, num_steps)
        quality, cost = (_number(where, data, k, required=True) for k in ("quality", "cost"))
        sigma_in, sigma_out = (_number(where, data, k) for k in ("sigma_in", "sigma_out"))
        if boundaries:
            _boundaries(where, sigma_in, sigma_out)
        samples = _int(where, data, "samples")
        if samples is not None and samples < 1:
            raise ProfileError(f"{where}: samples counts the calibration samples that judged the plan (>= 1), "
                               f"got {samples}")
        assert quality is not None and cost is not None
        return cls(int(ints[0]), int(ints[1]), int(ints[2]), quality, cost, sigma_in, sigma_out, samples)


@dataclass(frozen=True)
class GuidanceInterval(JsonView):
    """Where a calibrated plan runs classifier-free guidance: the steps ``start .. stop - 1`` of
    ``sigmas(steps, shift)``, i.e. sigma in ``(sigma_lo, sigma_hi]``; every other step makes one
    conditional call instead of two. ``quality`` and ``cost``: the plan with it, against guided
    Large with all steps (cost as a fraction of that); ``no_guidance_steps``/``no_guidance_quality``:
    Large without guidance on as many steps as that cost buys (the obvious alternative).

    Example:
        >>> g = GuidanceInterval(8, 1, 5, 0.97, 0.44, 0.958, 0.22, 13, 0.80)
        >>> g.apply(Schedule.large_only()).step_models([1.0, 0.95, 0.9, 0.7, 0.5, 0.4, 0.2, 0.1, 0.0])[:3]
        ['large:cond', 'large', 'large']
        >>> GuidanceInterval.from_dict(g.to_dict()) == g
        True
    """

    steps: int
    start: int
    stop: int
    sigma_hi: float
    sigma_lo: float
    quality: float
    cost: float
    no_guidance_steps: int | None = None
    no_guidance_quality: float | None = None

    def apply(self, schedule: Schedule) -> Schedule:
        """``schedule`` with guidance only in this interval."""
        return schedule.guided_within(self.sigma_hi, self.sigma_lo)

    def to_dict(self) -> dict[str, Any]:
        return _present({"steps": self.steps, "start": self.start, "stop": self.stop, "sigma_hi": self.sigma_hi,
                         "sigma_lo": self.sigma_lo, "quality": self.quality, "cost": self.cost,
                         "no_guidance_steps": self.no_guidance_steps,
                         "no_guidance_quality": self.no_guidance_quality})

    @classmethod
    def from_dict(cls, data: Any, where: str = "guidance", num_steps: int | None = None) -> GuidanceInterval:
        names = ("steps", "start", "stop", "sigma_hi", "sigma_lo", "quality", "cost", "no_guidance_steps",
                 "no_guidance_quality")
        if not isinstance(data, Mapping) or not set(names[:7]) <= set(data):
            raise ProfileError(f"{where} must be an object with {', '.join(names[:7])}")
        data = _object(where, data, names)
        ints = _steps_window(where, data, num_steps)
        hi, lo, quality, cost = (_number(where, data, k, required=True) for k in ("sigma_hi", "sigma_lo", "quality",
                                                                                   "cost"))
        assert hi is not None and lo is not None and quality is not None and cost is not None
        if not 0.0 <= lo <= hi <= 1.0:
            raise ProfileError(f"{where}: needs 0 <= sigma_lo <= sigma_hi <= 1, got {lo!r}, {hi!r}")
        return cls(int(ints[0]), int(ints[1]), int(ints[2]), hi, lo, quality, cost,
                   _int(where, data, "no_guidance_steps"), _number(where, data, "no_guidance_quality"))


@dataclass(frozen=True)
class Window(JsonView):
    """One prompt's window on the full grid: Small on steps ``start .. stop - 1``, i.e. for sigma in
    ``(sigma_out, sigma_in]`` (Large only when they are equal); its quality and cost where measured."""

    start: int
    stop: int
    sigma_in: float
    sigma_out: float
    quality: float | None = None
    cost: float | None = None

    def schedule(self) -> Schedule:
        """The window's stages.

        Example:
            >>> Window(2, 5, 0.8, 0.4).schedule(), Window(0, 0, 0.0, 0.0).schedule()
            (Schedule(large (0.8, 1], small (0.4, 0.8], large (0, 0.4]), Schedule(large (0, 1]))
        """
        if self.sigma_in == self.sigma_out:
            return Schedule.large_only()
        return Schedule.lsl(self.sigma_in, self.sigma_out)

    def to_dict(self) -> dict[str, Any]:
        return _present({"start": self.start, "stop": self.stop, "sigma_in": self.sigma_in,
                         "sigma_out": self.sigma_out, "quality": self.quality, "cost": self.cost})

    @classmethod
    def from_dict(cls, data: Any, where: str = "window", num_steps: int | None = None) -> Window:
        if not isinstance(data, Mapping) or not {"start", "stop", "sigma_in", "sigma_out"} <= set(data):
            raise ProfileError(f"{where} must be an object with start, stop, sigma_in and sigma_out")
        data = _object(where, data, ("start", "stop", "sigma_in", "sigma_out", "quality", "cost"))
        start, stop = data["start"], data["stop"]
        limit = num_steps if num_steps is not None else math.inf
        if not (_integer(start) and _integer(stop)) or not 0 <= start <= stop <= limit:
            raise ProfileError(f"{where}: start and stop must be step indices with 0 <= start <= stop <= {num_steps}, "
                               f"got {start!r}, {stop!r}")
        sigma_in, sigma_out = (_number(where, data, k, required=True) for k in ("sigma_in", "sigma_out"))
        _boundaries(where, sigma_in, sigma_out)
        assert sigma_in is not None and sigma_out is not None
        return cls(int(start), int(stop), sigma_in, sigma_out, _number(where, data, "quality"),
                   _number(where, data, "cost"))


@dataclass(frozen=True)
class PerPrompt(JsonView):
    """Per-prompt calibration: a :class:`Window` per :func:`~adaptive.profiles.prompt_key`, the
    candidate windows judged (``(start, stop)`` pairs), their mean cost, and what unseen prompts run.

    Example:
        >>> p = PerPrompt.from_dict({"windows": {"k": {"start": 1, "stop": 3, "sigma_in": 0.9, "sigma_out": 0.5}}})
        >>> p.windows["k"].schedule().small_steps([1.0, 0.9, 0.7, 0.5, 0.0]), p.to_dict()["candidates"]
        ([1, 2], [])
    """

    windows: Mapping[str, Window] = field(default_factory=dict)
    candidates: tuple[tuple[int, int], ...] = ()
    mean_cost: float | None = None
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present({"windows": {k: w.to_dict() for k, w in self.windows.items()},
                         "candidates": [list(c) for c in self.candidates], "mean_cost": self.mean_cost,
                         "fallback": self.fallback})

    @classmethod
    def from_dict(cls, data: Any, where: str = "per_prompt", num_steps: int | None = None) -> PerPrompt:
        data = _object(where, data, ("windows", "candidates", "mean_cost", "fallback"))
        windows = data.get("windows", {})
        if not isinstance(windows, Mapping):
            raise ProfileError(f"{where}.windows must be an object keyed by prompt key, got {type(windows).__name__}")
        candidates = data.get("candidates", [])
        if not isinstance(candidates, list) or not all(
                isinstance(c, list) and len(c) == 2 and all(map(_integer, c)) for c in candidates):
            raise ProfileError(f"{where}.candidates must be a list of [start, stop] pairs")
        return cls({str(k): Window.from_dict(w, f"{where}.windows[{k!r}]", num_steps) for k, w in windows.items()},
                   tuple((int(a), int(b)) for a, b in candidates), _number(where, data, "mean_cost"),
                   _text(where, data, "fallback"))


CURVE_SERIES = ("sigmas", "steps", "rel_l2", "cosine", "weighted")


@dataclass(frozen=True)
class CurveSummary(JsonView):
    """The probe's divergence curve, averaged over samples: per probed step its index (``steps``), its
    starting sigma and the mean ``rel_l2``, ``cosine`` and step-``weighted`` divergence (see
    :class:`~adaptive.probing.DivergenceCurve`; a value not measured is None)."""

    sigmas: tuple[float | None, ...] = ()
    steps: tuple[float | None, ...] = ()
    rel_l2: tuple[float | None, ...] = ()
    cosine: tuple[float | None, ...] = ()
    weighted: tuple[float | None, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {name: list(getattr(self, name)) for name in CURVE_SERIES}

    @classmethod
    def from_dict(cls, data: Any, where: str = "curve") -> CurveSummary:
        data = _object(where, data, CURVE_SERIES)
        series = {}
        for name, values in ((n, data[n]) for n in CURVE_SERIES if n in data):
            if not isinstance(values, list) or not all(_finite(v) or v is None for v in values):
                raise ProfileError(f"{where}.{name} must be a list of numbers")
            series[name] = tuple(values)
        return cls(**series)


@dataclass(frozen=True)
class Proposal(JsonView):
    """The change-point detector's window (steps ``start .. stop - 1``, sigma ``(sigma_out, sigma_in]``)
    and its score (None: not finite)."""

    sigma_in: float
    sigma_out: float
    start: int
    stop: int
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sigma_in": self.sigma_in, "sigma_out": self.sigma_out, "start": self.start, "stop": self.stop,
                "score": self.score}

    @classmethod
    def from_dict(cls, data: Any, where: str = "proposal") -> Proposal:
        data = _object(where, data, ("sigma_in", "sigma_out", "start", "stop", "score"))
        sigma_in, sigma_out = (_number(where, data, k, required=True) for k in ("sigma_in", "sigma_out"))
        start, stop = _int(where, data, "start"), _int(where, data, "stop")
        if start is None or stop is None:
            raise ProfileError(f"{where}: start and stop must be step indices")
        assert sigma_in is not None and sigma_out is not None
        return cls(sigma_in, sigma_out, start, stop, _number(where, data, "score", none_ok=True))


@dataclass(frozen=True)
class Quality(JsonView):
    """What the profile's plan was judged by: the ``metric``'s name, the ``target`` it had to keep and
    the quality the best full-grid window ``achieved`` (None: not recorded)."""

    metric: str | None = None
    target: float | None = None
    achieved: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present({"metric": self.metric, "target": self.target, "achieved": self.achieved})

    @classmethod
    def from_dict(cls, data: Any, where: str = "quality") -> Quality:
        data = _object(where, data, ("metric", "target", "achieved"))
        if "metric" in data and not isinstance(data["metric"], str):
            raise ProfileError(f"{where}: metric must be a metric name, got {data['metric']!r}")
        return cls(data.get("metric"), _number(where, data, "target"), _number(where, data, "achieved", none_ok=True))


@dataclass(frozen=True)
class Cost(JsonView):
    """Compute, in Large calls: the best full-grid window's as a fraction of Large only and its calls,
    Small's cost per call relative to Large's, and what calibration spent per sample (probe included)."""

    fraction_of_large: float | None = None
    small_cost_ratio: float | None = None
    large_calls: float | None = None
    small_calls: float | None = None
    calibration_large_equivalents_per_sample: float | None = None
    probe_large_equivalents_per_sample: float | None = None
    budget_passes: float | None = None
    passes_by_phase: tuple[tuple[str, float], ...] | None = None
    unexplored: str | None = None

    PHASES = ("probe", "fewer steps", "window trials", "guidance", "per-prompt", "controller")  # the order they run in

    def __post_init__(self) -> None:
        if self.passes_by_phase is not None:  # one order, however the phases were given (a JSON object's keys)
            order = {name: i for i, name in enumerate(self.PHASES)}
            object.__setattr__(self, "passes_by_phase", tuple(sorted(
                ((str(k), v) for k, v in self.passes_by_phase), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))))

    @property
    def calibration_passes(self) -> float | None:
        """What calibration spent per sample in Large passes (one pass: Large with all steps), probe
        included; None where not recorded.

        Example:
            >>> Cost(calibration_large_equivalents_per_sample=75.0, large_calls=30).calibration_passes
            2.5
        """
        spent, phases = self.calibration_large_equivalents_per_sample, self.passes_by_phase
        if phases is not None:
            return sum(value for _, value in phases)
        if spent is None or not self.large_calls:
            return None
        return spent / (self.large_calls + (self.small_calls or 0))

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.passes_by_phase is not None:
            data["passes_by_phase"] = dict(self.passes_by_phase)
        return _present(data)

    @classmethod
    def from_dict(cls, data: Any, where: str = "cost") -> Cost:
        texts = ("passes_by_phase", "unexplored")
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in texts)
        data = _object(where, data, names + texts)
        phases = data.get("passes_by_phase")
        if phases is not None:
            if not isinstance(phases, Mapping) or not all(isinstance(k, str) and _finite(v) for k, v in phases.items()):
                raise ProfileError(f"{where}: passes_by_phase must map phase names to numbers, got {phases!r}")
            phases = tuple((str(k), v) for k, v in phases.items())
        numbers = {name: _number(where, data, name) for name in names}
        negative = {k: v for k, v in numbers.items() if v is not None and v < 0}
        if negative:
            raise ProfileError(f"{where}: costs are never negative, got {negative}")
        return cls(**numbers, passes_by_phase=phases,
                   unexplored=_text(where, data, "unexplored"))


@dataclass(frozen=True)
class CalibrationInfo(JsonView):
    """How the profile was calibrated: prompts, noise seeds, complete trials, the Optuna study's name
    and the samples probed; the fingerprint of the pair's models without their guidance adapter and the
    guidance scale it ran at (a pipeline applies guidance itself: the drop-in checks the models against
    the first). None: not recorded."""

    num_conds: int | None = None
    seeds: tuple[int, ...] | None = None
    n_trials: int | None = None
    study_name: str | None = None
    samples: int | None = None
    models_fingerprint: str | None = None
    guidance_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _present({"num_conds": self.num_conds, "seeds": None if self.seeds is None else list(self.seeds),
                         "n_trials": self.n_trials, "study_name": self.study_name, "samples": self.samples,
                         "models_fingerprint": self.models_fingerprint, "guidance_scale": self.guidance_scale})

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> CalibrationInfo:
        data = _object(where, data, ("num_conds", "seeds", "n_trials", "study_name", "samples", "models_fingerprint",
                                     "guidance_scale"))
        seeds = data.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not all(map(_integer, seeds))):
            raise ProfileError(f"{where}: seeds must be a list of integer noise seeds, got {seeds!r}")
        return cls(_int(where, data, "num_conds"), None if seeds is None else tuple(seeds),
                   _int(where, data, "n_trials"), _text(where, data, "study_name"), _int(where, data, "samples"),
                   _text(where, data, "models_fingerprint"), _number(where, data, "guidance_scale", none_ok=True))


def controller_from_dict(data: Any, where: str = "controller") -> ControllerConfig | None:
    """The online controller as :class:`~adaptive.controller.ControllerConfig` runs it (None for
    ``{}``: none calibrated): every field of the right type (numbers finite), the regression's vectors
    one number per feature.

    Example:
        >>> controller_from_dict({"threshold": 0.2, "sigma_out": 0.3}).threshold, controller_from_dict({})
        (0.2, None)
    """
    if isinstance(data, ControllerConfig):
        return data
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where} must be an object, got {type(data).__name__}")
    if not data:
        return None
    kinds = {f.name: str(f.type) for f in dataclasses.fields(ControllerConfig)}
    for key, value in data.items():
        kind = kinds.get(key, "")
        if kind == "float" and not (_finite(value) or (key == "monitor_threshold" and value is None)):
            raise ProfileError(f"{where}.{key} must be a finite number, got {value!r}")
        if kind == "int" and not _integer(value):
            raise ProfileError(f"{where}.{key} must be an integer, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise ProfileError(f"{where}.{key} must be a string, got {value!r}")
        if kind.startswith("dict") and not isinstance(value, dict):
            raise ProfileError(f"{where}.{key} must be an object, got {value!r}")
    regression = data.get("regression") or {}
    if regression:
        features = regression.get("features")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ProfileError(f"{where}.regression.features must be a list of feature names")
        for key in ("mean", "scale", "coef"):
            vector = regression.get(key)
            if not isinstance(vector, list) or len(vector) != len(features) or not all(map(_finite, vector)):
                raise ProfileError(f"{where}.regression.{key} must be {len(features)} finite numbers (one per "
                                   f"feature), got {vector!r}")
        if any(v == 0 for v in regression["scale"]):
            raise ProfileError(f"{where}.regression.scale must not hold 0")
        _number(f"{where}.regression", regression, "intercept", required=True)
    try:
        return ControllerConfig.from_dict(data)
    except (ValueError, TypeError) as err:  # CalibrationError is a ValueError
        raise ProfileError(f"{where}: {err}") from None


__all__ = ["CURVE_SERIES", "CalibrationInfo", "Cost", "CurveSummary", "JsonView", "MeasuredPlan", "PerPrompt",
           "Proposal", "Quality", "Window", "controller_from_dict"]
