"""Calibrated profiles: the frozen record of one calibration and the fingerprints that key it.

A :class:`Profile` records which pair (fingerprint), which sampler grid, the sigma boundaries and
the steps they map to, the divergence curve, achieved quality and cost, with a JSON round-trip that
reads every older schema (:func:`migrate`). :class:`~adaptive.profile_store.ProfileStore` keeps
them on disk.

Example:
    >>> p = Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0,
    ...             sigma_in=0.8, sigma_out=0.3)
    >>> Profile.from_json(p.to_json()) == p
    True
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptive.controller import ControllerConfig
from adaptive.denoisers import FunctionDenoiser, GuidedDenoiser, Passthrough, TransformerDenoiser
from adaptive.errors import ProfileError
from adaptive.pair import ModelPair
from adaptive.records import (CalibrationInfo, Cost, CurveSummary, GuidanceInterval, MeasuredPlan, PerPrompt, Proposal,
                              Quality, Window, controller_from_dict)
from adaptive.schedule import Schedule

SCHEMA_VERSION = 3  # 3 added guidance (intervals); 2 recommended_steps and frontier (step-count search); 1, 2 still read
READABLE_SCHEMAS = (1, 2, 3)
LISTS = ("frontier", "guidance")  # the parts that are lists of records
ENV_VAR = "ADAPTIVE_PROFILES"


def sampler_signature(sampler: str, num_steps: int, shift: float) -> str:
    """``"euler-30-shift3"``: what a profile's boundaries were calibrated for.

    Example:
        >>> sampler_signature("euler", 30, 3.0)
        'euler-30-shift3'
    """
    return f"{sampler}-{int(num_steps)}-shift{float(shift):g}"


def prompt_key(cond: Any) -> str:
    """A short hash of one sample's conditioning (its keyword arguments): the key of per-prompt
    boundaries. Tensors are hashed by shape and values rounded to 4 decimals, so the same prompt
    embedding recomputed on another device or dtype maps to the same key.

    Example:
        >>> import torch
        >>> prompt_key({"e": torch.ones(1, 3)}) == prompt_key({"e": torch.ones(1, 3, dtype=torch.float64)})
        True
    """
    h = hashlib.sha256()
    for name in sorted(cond):
        value = cond[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            array = value.detach().float().cpu().numpy().round(4) + 0.0  # + 0.0 folds -0.0 into 0.0
            h.update(f"{tuple(array.shape)}".encode())
            h.update(array.astype("float32").tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


def _tensor_digest(h: Any, name: str, tensor: torch.Tensor) -> None:
    flat = tensor.detach().reshape(-1)
    h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    if flat.numel():
        # A deterministic sample of values: hashing every byte of a 14B model takes minutes.
        index = torch.linspace(0, flat.numel() - 1, min(64, flat.numel())).long().to(flat.device)
        h.update(flat[index].float().cpu().numpy().tobytes())


def _describe(h: Any, model: Any, unguided: bool = False) -> None:
    if isinstance(model, GuidedDenoiser):
        if not unguided:
            h.update(f"cfg:{model.scale}:{model.batched}".encode())
        return _describe(h, model.model, unguided)
    if isinstance(model, Passthrough):
        return _describe(h, model.model, unguided)  # where a model runs, or who counts its calls, is not what it is
    if isinstance(model, TransformerDenoiser):
        model = model.transformer
    if isinstance(model, FunctionDenoiser):
        fn = model.fn
        h.update(f"fn:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}".encode())
        if isinstance(fn, torch.nn.Module):
            model = fn
        else:
            return None
    if isinstance(model, torch.nn.Module):
        h.update(type(model).__name__.encode())
        config = getattr(model, "config", None)
        if config is not None:
            # Keys like _name_or_path say where the weights were loaded from, not what they are.
            public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
            h.update(json.dumps(public, sort_keys=True, default=str).encode())
        for name, tensor in model.state_dict().items():
            _tensor_digest(h, name, tensor)
        return None
    h.update(repr(model).encode())
    return None


def fingerprint(pair: ModelPair) -> str:
    """A hex digest of the pair: classes, configs, parameter names/shapes/dtypes and sampled values.

    Example:
        >>> import torch
        >>> from adaptive import ModelPair
        >>> a = ModelPair(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> fingerprint(a) == fingerprint(a), len(fingerprint(a))
        (True, 24)
    """
    return _digest(pair.models)


def models_fingerprint(models: ModelPair | Mapping[str, Any]) -> str:
    """The fingerprint of the models alone, without their guidance adapters: the same for a pair and
    for that pair guided at any scale (what a pipeline that applies guidance itself can check).

    Example:
        >>> import torch
        >>> from adaptive import ModelPair
        >>> a = ModelPair(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> models_fingerprint(a) == models_fingerprint(a.guided(4.0)) != fingerprint(a.guided(4.0))
        True
    """
    return _digest(_as_models(models), unguided=True)


def guidance_of(models: ModelPair | Mapping[str, Any]) -> float | None:
    """The guidance scale of the pair's Large (None: not guided)."""
    large = _as_models(models).get("large")
    return float(large.scale) if isinstance(large, GuidedDenoiser) else None


def _as_models(models: ModelPair | Mapping[str, Any]) -> dict[str, Any]:
    from adaptive.denoisers import as_denoiser

    return dict(models.models) if isinstance(models, ModelPair) else {k: as_denoiser(v) for k, v in models.items()}


def _digest(models: Mapping[str, Any], unguided: bool = False) -> str:
    h = hashlib.sha256()
    for name in sorted(models):
        h.update(f"[{name}]".encode())
        _describe(h, models[name], unguided)
    return h.hexdigest()[:24]


def check_profile_pair(profile: Profile, models: ModelPair | Mapping[str, Any], *, pipeline: bool = False,
                       guidance_scale: float | None = None) -> None:
    """Refuse to run ``profile`` on models it was not calibrated on (issue #26: another pair's window
    ran silently).

    A sampler's pair must have the profile's fingerprint (the same models at another guidance scale
    only warn). A pipeline applies guidance itself, so the drop-in compares the models without their
    guidance (``models_fingerprint``, recorded by calibration); for a profile that predates that record
    it tries the guided pair at ``guidance_scale`` when given, and otherwise warns that it cannot tell.
    Running a profile's boundaries on another pair on purpose is explicit: pass ``profile.schedule()``
    (or ``profile.schedule_for_steps(n)``), a plain :class:`~adaptive.Schedule`, instead.

    Raises:
        PairMismatchError: naming the profile's pair and this one.
    """
    from adaptive.errors import PairMismatchError

    mapping = _as_models(models)
    if _digest(mapping) == profile.pair_fingerprint:
        return
    recorded = profile.calibration.models_fingerprint
    base = _digest(mapping, unguided=True)
    name = f"pair {profile.pair_name!r} ({profile.pair_fingerprint})" if profile.pair_name else \
        f"pair {profile.pair_fingerprint}"
    this = getattr(models, "name", None)
    this_name = f"{this!r} ({_digest(mapping)})" if this else _digest(mapping)
    if recorded is not None and base == recorded:
        scale, calibrated = guidance_scale if pipeline else guidance_of(mapping), profile.calibration.guidance_scale
        if scale is not None and calibrated is not None and not math.isclose(scale, calibrated) or \
                (not pipeline and (scale is None) != (calibrated is None)):
            warnings.warn(f"the profile was calibrated on these models at guidance scale {calibrated}; they run at "
                          f"{scale}: its boundaries may not be the best ones here (calibrate at this scale)",
                          stacklevel=4)
        return
    if recorded is None and pipeline:
        guided = [_digest({k: GuidedDenoiser(v.model if isinstance(v, GuidedDenoiser) else v, guidance_scale, {},
                                             batched=b) for k, v in mapping.items()})
                  for b in (True, False)] if guidance_scale is not None and guidance_scale > 1.0 else []
        if profile.pair_fingerprint in guided:
            return
        if guidance_scale is None:
            warnings.warn(f"cannot tell whether the profile ({name}) was calibrated on these transformers: it "
                          "records no fingerprint of the models without guidance (made before it was recorded); "
                          "pass blend(..., guidance_scale=<the scale it was calibrated at>) to check it, or "
                          "recalibrate", stacklevel=4)
            return
    subject = "pipeline's transformers" if pipeline else "pair"
    raise PairMismatchError(
        f"the profile was calibrated on {name}, not on this {subject} "
        f"({this_name}): its window would run on models it never measured. Calibrate this pair "
        "(adaptive.calibrate or `flowblend calibrate`), or, to run those boundaries here anyway, pass "
        "profile.schedule() (a plain Schedule) instead of the profile")


LATENT_METRICS = ("latent_structure", "latent_cosine")  # metrics that never see a decoded frame
PARTS = ("proposal", "curve", "quality", "cost", "calibration", "per_prompt", "controller", "plan", "frontier",
         "guidance")


@dataclass(frozen=True)
class Profile:
    """One calibration result. ``sigma_in == sigma_out`` means Large only (no safe window).

    Its parts are typed records (:mod:`adaptive.records`), parsed once when the profile is built or
    loaded: ``plan`` (the recommended :class:`~adaptive.records.MeasuredPlan`, None before step
    search), ``frontier`` (every measured plan), ``per_prompt`` (:class:`~adaptive.records.PerPrompt`),
    ``controller`` (:class:`~adaptive.controller.ControllerConfig`), ``curve``, ``proposal``,
    ``quality``, ``cost`` and ``calibration``; a part that was not calibrated is None (``quality``,
    ``cost``, ``calibration``: a record of Nones). Each part may also be given as its JSON object.

    Example:
        >>> p = Profile(pair_fingerprint="f", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
        ...             sigma_out=0.4, quality={"metric": "ssim", "target": 0.95})
        >>> p.quality.target, p.plan, p.per_prompt is None
        (0.95, None, True)
        >>> Profile.from_json(p.to_json()) == p
        True
    """

    pair_fingerprint: str
    sampler: str
    num_steps: int
    shift: float
    sigma_in: float
    sigma_out: float
    small_steps: tuple[int, ...] = ()
    pair_name: str | None = None
    proposal: Proposal | None = None
    curve: CurveSummary | None = None
    quality: Quality = field(default_factory=Quality)
    cost: Cost = field(default_factory=Cost)
    calibration: CalibrationInfo = field(default_factory=CalibrationInfo)
    per_prompt: PerPrompt | None = None
    controller: ControllerConfig | None = None
    plan: MeasuredPlan | None = None
    frontier: tuple[MeasuredPlan, ...] = ()
    guidance: tuple[GuidanceInterval, ...] = ()
    note: str = ""
    version: str = ""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not (0.0 <= self.sigma_out <= self.sigma_in <= 1.0):
            raise ProfileError(f"profile boundaries must satisfy 0 <= sigma_out <= sigma_in <= 1, got "
                               f"sigma_in={self.sigma_in}, sigma_out={self.sigma_out}")
        if not self.version:
            from adaptive import __version__

            object.__setattr__(self, "version", __version__)
        if not self.created:
            object.__setattr__(self, "created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        object.__setattr__(self, "small_steps", tuple(int(i) for i in self.small_steps))
        for name, value in _parts({name: getattr(self, name) for name in PARTS}, "profile", self.num_steps).items():
            object.__setattr__(self, name, value)

    @property
    def is_large_only(self) -> bool:
        return self.sigma_in == self.sigma_out

    @property
    def steps(self) -> int:
        """The step count of the recommended plan (``num_steps`` unless fewer steps pay)."""
        return self.plan.steps if self.plan is not None else self.num_steps

    recommended_steps = steps

    def plan_schedule(self) -> Schedule:
        """The stages of the recommended plan, to run on ``sigmas(self.steps, self.shift)``.

        ``sigma_in``/``sigma_out`` and :meth:`schedule` stay the best window on the full grid of
        ``num_steps``: what a caller who fixes that step count gets.
        """
        base = self._full_grid() if self.plan is None else self.plan.schedule()
        return self._guided(base, self.steps)

    def guidance_for(self, steps: int) -> GuidanceInterval | None:
        """The guidance interval calibrated for the plan on ``steps`` steps, if any (None: guidance on
        every step, as the pipeline runs it)."""
        return next((g for g in self.guidance if g.steps == steps), None)

    def _guided(self, schedule: Schedule, steps: int) -> Schedule:
        interval = self.guidance_for(steps)
        return schedule if interval is None else interval.apply(schedule)

    def schedule_for_steps(self, steps: int) -> Schedule:
        """The plan for a grid of ``steps``: the recommended plan on its own grid, else the full
        grid's window (mapped by sigma on any other grid)."""
        return self.plan_schedule() if self.plan is not None and steps == self.steps else self.schedule()

    @property
    def decision(self) -> str:
        """The recommendation in words, e.g. "Large with 9 of 30 steps meets the target ...", with a
        caveat when it was judged in latent space only (no decoder or feature encoder given)."""
        text = self._decision()
        interval = self.guidance_for(self.steps)
        if interval is not None and interval.stop <= interval.start:
            text += (f" No guidance on any step (one conditional call per step): {interval.cost:.2f} of the compute at "
                     f"quality {interval.quality:.4f}.")
        elif interval is not None:
            text += (f" Guidance only on steps {interval.start}..{interval.stop - 1} of {interval.steps} (sigma "
                     f"{interval.sigma_lo:.3f} to {interval.sigma_hi:.3f}; one call per step elsewhere): "
                     f"{interval.cost:.2f} of the compute at quality {interval.quality:.4f}")
            if interval.no_guidance_steps is not None and interval.no_guidance_quality is not None:
                text += (f" (Large without guidance at that compute, {interval.no_guidance_steps} steps: "
                         f"{interval.no_guidance_quality:.4f})")
            else:
                text += " (Large without guidance at that compute: not measured within the budget)"
            text += "."
        if self.quality.metric in LATENT_METRICS:
            text += (f" Judged in latent space ({self.quality.metric}: no decoder or feature encoder was given); "
                     "look at the decoded videos, or calibrate with metric= on decoded frames.")
        return text

    def _decision(self) -> str:
        n, full = self.steps, self.num_steps
        plan = self.plan or MeasuredPlan(full, self.small_steps[0] if self.small_steps else 0,
                                         self.small_steps[-1] + 1 if self.small_steps else 0, 1.0,
                                         1.0 if self.cost.fraction_of_large is None else self.cost.fraction_of_large,
                                         self.sigma_in, self.sigma_out)
        target = self.quality.target
        metric = "quality" if self.quality.metric is None else self.quality.metric
        meets = f"meets the target ({metric} >= {target}) at {plan.cost:.2f} of the compute"
        feasible = [p for p in self.frontier if target is not None and p.quality >= target and p.samples is None]
        blends = [p.cost for p in feasible if not p.is_large_only]
        fewer = [p.steps for p in feasible if p.is_large_only and p.steps < full]
        searched = any(p.is_large_only and p.steps < full for p in self.frontier)
        if plan.is_large_only and n == full:
            return f"Large with all {full} steps: no cheaper plan met the target ({metric} >= {target})."
        if plan.is_large_only:
            tail = f"the cheapest blend that meets it costs {min(blends):.2f}" if blends else "no blend tried met it"
            return f"Large with {n} of {full} steps {meets}; {tail}."
        alone = (f"Large alone needs {min(fewer)} of {full} steps ({min(fewer) / full:.2f})" if fewer else
                 f"no fewer Large steps met it" if searched else "fewer Large steps were not searched")
        return (f"Small on steps {plan.start}..{plan.stop - 1} of {n} (sigma {plan.sigma_out:.3f} to "
                f"{plan.sigma_in:.3f}) {meets}; {alone}.")

    def schedule(self) -> Schedule:
        """The Large-Small-Large window on the full grid (Large only when no window is safe), with
        guidance only in its calibrated interval when calibration found one for the full grid."""
        return self._guided(self._full_grid(), self.num_steps)

    def _full_grid(self) -> Schedule:
        return Schedule.large_only() if self.is_large_only else Schedule.lsl(self.sigma_in, self.sigma_out)

    def schedule_for(self, key: str | None) -> Schedule:
        """The schedule of the prompt whose :func:`prompt_key` is ``key`` (per-prompt calibration),
        or the pair-level one for a prompt the profile has not seen."""
        window = self.windows.get(key) if key is not None else None
        return self.schedule() if window is None else window.schedule()  # a prompt's window: measured guided

    @property
    def windows(self) -> Mapping[str, Window]:
        """The per-prompt windows by :func:`prompt_key` (empty without per-prompt calibration)."""
        return {} if self.per_prompt is None else self.per_prompt.windows

    def calibrated_on(self, grid: Sequence[float] | torch.Tensor) -> bool:
        """Whether ``grid`` is the sigma grid this profile was calibrated on (to 1e-4), the grid its
        per-prompt windows and controller were measured on.

        Example:
            >>> from adaptive.schedule import sigmas
            >>> p = Profile(pair_fingerprint="f", sampler="euler-8-shift3", num_steps=8, shift=3.0, sigma_in=0.8,
            ...             sigma_out=0.4)
            >>> p.calibrated_on(sigmas(8, 3.0)), p.calibrated_on(sigmas(8, 1.0)), p.calibrated_on(sigmas(9, 3.0))
            (True, False, False)
        """
        values = grid.tolist() if isinstance(grid, torch.Tensor) else [float(g) for g in grid]
        return _gap(values, self.grid()) <= 1e-4

    @property
    def family(self) -> str:
        """The sampler family the profile was calibrated with: ``"euler"``, ``"unipc"``, ``"dpmpp"``..."""
        return self.sampler.partition("-")[0]

    def grid(self, steps: int | None = None) -> list[float]:
        """The sigma grid of ``steps`` (default ``num_steps``) steps of the profile's sampler.

        Example:
            >>> p = Profile(pair_fingerprint="f", sampler="unipc-8-shift3", num_steps=8, shift=3.0, sigma_in=0.8,
            ...             sigma_out=0.4)
            >>> [round(s, 3) for s in p.grid(4)]
            [1.0, 0.9, 0.75, 0.501, 0.0]
        """
        return _grid(self.num_steps if steps is None else int(steps), self.shift, self.family)

    @property
    def has_per_prompt(self) -> bool:
        return bool(self.windows)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the profile (schema :data:`SCHEMA_VERSION`); a part not calibrated is
        ``{}`` (``[]`` for the frontier), as profiles have always been written."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in PARTS}
        data["small_steps"] = list(self.small_steps)
        for name in PARTS:
            value = getattr(self, name)
            if name in LISTS:
                data[name] = [p.to_dict() for p in value]
            else:
                data[name] = {} if value is None else value.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> Profile:
        """Parse (and, from an older schema, upgrade: :func:`migrate`) a profile's JSON object;
        :class:`~adaptive.errors.ProfileError` names ``source`` and the field that is wrong."""
        data = migrate(data, source)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ProfileError(f"{source}: unknown fields {sorted(unknown)}")
        types: dict[str, type | tuple[type, ...]] = {"pair_fingerprint": str, "sampler": str, "num_steps": int, "shift": (int, float),
                 "sigma_in": (int, float), "sigma_out": (int, float)}
        for key, kind in types.items():
            if key not in data:
                raise ProfileError(f"{source}: missing field {key!r}")
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ProfileError(f"{source}: field {key!r} has the wrong type ({type(data[key]).__name__})")
        if not (math.isfinite(data["shift"]) and data["shift"] > 0):
            raise ProfileError(f"{source}: shift must be a positive finite number, got {data['shift']!r}")
        if data["num_steps"] < 1:
            raise ProfileError(f"{source}: num_steps must be a positive step count, got {data['num_steps']!r}")
        kind, _, rest = data["sampler"].partition("-")
        expected = sampler_signature(kind, data["num_steps"], data["shift"])
        if rest and data["sampler"] != expected:
            raise ProfileError(f"{source}: sampler {data['sampler']!r} disagrees with num_steps={data['num_steps']} "
                               f"and shift={data['shift']} (expected {expected!r}); the file was edited or is corrupt: "
                               "recalibrate")
        steps = data.get("small_steps", [])
        if not isinstance(steps, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in steps):
            raise ProfileError(f"{source}: small_steps must be a list of step indices")
        if any(not 0 <= i < data["num_steps"] for i in steps):
            raise ProfileError(f"{source}: small_steps {steps} must be steps of the grid, 0..{data['num_steps'] - 1}")
        for key in ("pair_name", "note", "version", "created"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ProfileError(f"{source}: field {key!r} must be a string")
        for name in PARTS:
            if name in data and not isinstance(data[name], list if name in LISTS else dict):
                raise ProfileError(f"{source}: field {name!r} must be " +
                                   ("a list of records" if name in LISTS else "an object"))
        parts = _parts({name: data[name] for name in PARTS if name in data}, source, data["num_steps"])
        try:
            return cls(**{**data, **parts})
        except (TypeError, ValueError) as err:
            raise ProfileError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "profile") -> Profile:
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as err:
            raise ProfileError(f"{source}: not valid JSON ({err}); the file is corrupt or truncated — delete it "
                               "or recalibrate") from None
        return cls.from_dict(data, source)

    def save(self, path: Path | str) -> Path:
        """Write atomically (temp file in the same directory, fsync, rename)."""
        return atomic_write(Path(path), self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> Profile:
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as err:
            raise ProfileError(f"{path}: cannot read ({err.strerror})") from None
        return cls.from_json(text, source=str(path))


def migrate(data: Any, source: str = "profile") -> dict[str, Any]:
    """A profile's JSON object upgraded to :data:`SCHEMA_VERSION`, so every older file loads: schema 1
    is schema 2 without ``plan`` and ``frontier`` (a profile calibrated before step search), schema 2
    is schema 3 without ``guidance`` (guidance on every step, as its plans were measured); a file of
    the current schema is returned as it is. Any other version is a :class:`ProfileError` that says
    what to do.

    Example:
        >>> old = {"schema_version": 1, "pair_fingerprint": "f", "sampler": "euler-30-shift3", "num_steps": 30,
        ...        "shift": 3.0, "sigma_in": 0.8, "sigma_out": 0.4}
        >>> migrate(old)["schema_version"], Profile.from_dict(old).plan, Profile.from_dict(old).guidance
        (3, None, ())
    """
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a JSON object")
    version = data.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ProfileError(f"{source}: schema version {version!r} is not supported "
                           f"(this library reads {' and '.join(map(str, READABLE_SCHEMAS))}); recalibrate with "
                           "`flowblend calibrate`")
    if version == 1:
        data = {**data, "schema_version": 2}  # plan and frontier absent: no step search was run
    if data["schema_version"] == 2:
        data = {**data, "schema_version": 3}  # guidance absent: guidance on every step, as the plan ran
    return data


def _parts(values: dict[str, Any], source: str, num_steps: int) -> dict[str, Any]:
    """The profile's parts as records, each parsed once from its JSON object; a record passed as one
    is checked the same way (through its JSON), so a profile never holds what it could not load. An
    empty object is a part not calibrated."""
    parsers: dict[str, Any] = {
        "proposal": lambda v, w: Proposal.from_dict(v, w) if v else None,
        "curve": lambda v, w: CurveSummary.from_dict(v, w) if v else None,
        "quality": Quality.from_dict, "cost": Cost.from_dict, "calibration": CalibrationInfo.from_dict,
        "per_prompt": lambda v, w: PerPrompt.from_dict(v, w, num_steps) if v else None,
        "controller": controller_from_dict,
        "plan": lambda v, w: MeasuredPlan.from_dict(v, w, num_steps, boundaries=True) if v else None,
    }
    kinds: dict[str, type] = {"proposal": Proposal, "curve": CurveSummary, "quality": Quality, "cost": Cost,
                              "calibration": CalibrationInfo, "per_prompt": PerPrompt, "controller": ControllerConfig,
                              "plan": MeasuredPlan}
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        where = f"{source}: {name}"
        if name in LISTS:
            record_type: Any = MeasuredPlan if name == "frontier" else GuidanceInterval
            if not isinstance(value, (list, tuple)):
                raise ProfileError(f"{source}: {name} must be a list of {record_type.__name__} records")
            parsed[name] = tuple(record_type.from_dict(p.to_dict() if isinstance(p, record_type) else p,
                                                       f"{source}: {name}[{i}]", num_steps)
                                 for i, p in enumerate(value))
        elif value is None:
            parsed[name] = kinds[name]() if name in ("quality", "cost", "calibration") else None
        elif isinstance(value, kinds[name]):
            record: Any = value
            parsed[name] = parsers[name](record.to_dict(), where)
        elif not isinstance(value, Mapping):
            raise ProfileError(f"{source}: field {name!r} must be an object")
        else:
            parsed[name] = parsers[name](value, where)
    return parsed


def atomic_write(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a shared store must stay readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _grid(num_steps: int, shift: float, family: str = "euler") -> list[float]:
    """The sigma grid of ``num_steps`` steps of the sampler ``family`` names (``"euler"``, ``"unipc"``,
    ``"dpmpp"``; ``"heun"`` steps on Euler's grid) at ``shift``; empty (matching no grid) for a family
    with options of its own, which is found by its exact key only."""
    from adaptive.samplers import Sampler

    family = "euler" if family == "heun" else family
    sampler = Sampler.from_signature(f"{family}-{int(num_steps)}-shift{float(shift):g}")
    return [] if sampler is None else sampler.grid(int(num_steps))


def _gap(a: list[float], b: list[float]) -> float:
    """The largest difference between two sigma grids of one length (inf for grids of two lengths)."""
    return max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else math.inf
