"""Calibrated profiles and the on-disk store that keys them by pair fingerprint and sampler.

A :class:`Profile` is a frozen record of one calibration: which pair (fingerprint), which sampler
grid, the sigma boundaries and the steps they map to, the divergence curve, achieved quality and
cost. :class:`ProfileStore` keeps them as JSON files in a directory (``$ADAPTIVE_PROFILES`` or
``./profiles``) with atomic, crash-safe writes; a file for another pair or sampler is never used
silently, and a corrupt one is reported with its path.

Example:
    >>> import tempfile
    >>> p = Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0,
    ...             sigma_in=0.8, sigma_out=0.3)
    >>> store = ProfileStore(tempfile.mkdtemp())
    >>> path = store.save(p)
    >>> store.get("abc", "euler-30-shift3") == p
    True
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptive.denoisers import DeviceDenoiser, FunctionDenoiser, GuidedDenoiser, TransformerDenoiser
from adaptive.errors import ProfileError
from adaptive.pair import ModelPair
from adaptive.schedule import Schedule

SCHEMA_VERSION = 2  # 2 added recommended_steps and frontier (step-count search); 1 still reads
READABLE_SCHEMAS = (1, 2)
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


def _describe(h: Any, model: Any) -> None:
    if isinstance(model, GuidedDenoiser):
        h.update(f"cfg:{model.scale}:{model.batched}".encode())
        return _describe(h, model.model)
    if isinstance(model, DeviceDenoiser):
        return _describe(h, model.model)  # where a model runs is not what it is
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
    h = hashlib.sha256()
    for name in sorted(pair.models):
        h.update(f"[{name}]".encode())
        _describe(h, pair.models[name])
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class Profile:
    """One calibration result. ``sigma_in == sigma_out`` means Large only (no safe window)."""

    pair_fingerprint: str
    sampler: str
    num_steps: int
    shift: float
    sigma_in: float
    sigma_out: float
    small_steps: tuple[int, ...] = ()
    pair_name: str | None = None
    proposal: dict[str, Any] = field(default_factory=dict)
    curve: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    per_prompt: dict[str, Any] = field(default_factory=dict)
    controller: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    frontier: list[dict[str, Any]] = field(default_factory=list)
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

    @property
    def is_large_only(self) -> bool:
        return self.sigma_in == self.sigma_out

    @property
    def steps(self) -> int:
        """The step count of the recommended plan (``num_steps`` unless fewer steps pay)."""
        return int(self.plan.get("steps", self.num_steps))

    recommended_steps = steps

    def plan_schedule(self) -> Schedule:
        """The stages of the recommended plan, to run on ``sigmas(self.steps, self.shift)``.

        ``sigma_in``/``sigma_out`` and :meth:`schedule` stay the best window on the full grid of
        ``num_steps``: what a caller who fixes that step count gets.
        """
        if not self.plan:
            return self.schedule()
        if self.plan["start"] >= self.plan["stop"]:
            return Schedule.large_only()
        return Schedule.lsl(self.plan["sigma_in"], self.plan["sigma_out"])

    def schedule_for_steps(self, steps: int) -> Schedule:
        """The plan for a grid of ``steps``: the recommended plan on its own grid, else the full
        grid's window (mapped by sigma on any other grid)."""
        return self.plan_schedule() if self.plan and steps == self.steps else self.schedule()

    @property
    def decision(self) -> str:
        """The recommendation in words, e.g. "Large with 9 of 30 steps meets the target ..."."""
        n, full = self.steps, self.num_steps
        plan = self.plan or {"start": 0 if not self.small_steps else self.small_steps[0],
                             "stop": 0 if not self.small_steps else self.small_steps[-1] + 1,
                             "sigma_in": self.sigma_in, "sigma_out": self.sigma_out,
                             "cost": self.cost.get("fraction_of_large", 1.0)}
        target = self.quality.get("target")
        metric = self.quality.get("metric", "quality")
        meets = f"meets the target ({metric} >= {target}) at {plan['cost']:.2f} of the compute"
        feasible = [p for p in self.frontier if target is not None and p["quality"] >= target]
        blends = [p["cost"] for p in feasible if p["stop"] > p["start"]]
        fewer = [p["steps"] for p in feasible if p["stop"] <= p["start"] and p["steps"] < full]
        searched = any(p["stop"] <= p["start"] and p["steps"] < full for p in self.frontier)
        if plan["start"] >= plan["stop"] and n == full:
            return f"Large with all {full} steps: no cheaper plan met the target ({metric} >= {target})."
        if plan["start"] >= plan["stop"]:
            tail = f"the cheapest blend that meets it costs {min(blends):.2f}" if blends else "no blend tried met it"
            return f"Large with {n} of {full} steps {meets}; {tail}."
        alone = (f"Large alone needs {min(fewer)} of {full} steps ({min(fewer) / full:.2f})" if fewer else
                 f"no fewer Large steps met it" if searched else "fewer Large steps were not searched")
        return (f"Small on steps {plan['start']}..{plan['stop'] - 1} of {n} (sigma {plan['sigma_out']:.3f} to "
                f"{plan['sigma_in']:.3f}) {meets}; {alone}.")

    def schedule(self) -> Schedule:
        """The Large-Small-Large window on the full grid (Large only when no window is safe)."""
        return Schedule.large_only() if self.is_large_only else Schedule.lsl(self.sigma_in, self.sigma_out)

    def schedule_for(self, key: str | None) -> Schedule:
        """The schedule of the prompt whose :func:`prompt_key` is ``key`` (per-prompt calibration),
        or the pair-level one for a prompt the profile has not seen."""
        window = self.per_prompt.get("windows", {}).get(key) if key is not None else None
        if window is None:
            return self.schedule()
        if window["sigma_in"] == window["sigma_out"]:
            return Schedule.large_only()
        return Schedule.lsl(window["sigma_in"], window["sigma_out"])

    @property
    def has_per_prompt(self) -> bool:
        return bool(self.per_prompt.get("windows"))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["small_steps"] = list(self.small_steps)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> Profile:
        if not isinstance(data, dict):
            raise ProfileError(f"{source}: a profile must be a JSON object")
        if data.get("schema_version") not in READABLE_SCHEMAS:
            raise ProfileError(f"{source}: schema version {data.get('schema_version')!r} is not supported "
                               f"(this library reads {' and '.join(map(str, READABLE_SCHEMAS))}); recalibrate with "
                               "`flowblend calibrate`")
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
        for key in ("proposal", "curve", "quality", "cost", "calibration", "per_prompt", "controller"):
            if key in data and not isinstance(data[key], dict):
                raise ProfileError(f"{source}: field {key!r} must be an object")
        _check_plans(data, source)
        _check_nested(data, source)
        steps = data.get("small_steps", [])
        if not isinstance(steps, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in steps):
            raise ProfileError(f"{source}: small_steps must be a list of step indices")
        for key in ("pair_name", "note", "version", "created"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ProfileError(f"{source}: field {key!r} must be a string")
        data = {**data, "schema_version": SCHEMA_VERSION}  # version 1 is version 2 without the new fields
        try:
            return cls(**data)
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


def weaker_than(new: Profile, old: Profile) -> str | None:
    """Why ``new`` should not silently replace ``old`` (None when it may): it ran fewer trials, or,
    judged by the same metric and target, its recommended plan costs more.

    Example:
        >>> old = Profile(pair_fingerprint="f", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
        ...               sigma_out=0.4, calibration={"n_trials": 60}, cost={"fraction_of_large": 0.6})
        >>> weaker_than(dataclasses.replace(old, calibration={"n_trials": 0}), old)
        'it ran 0 trials, the stored one 60'
        >>> weaker_than(old, old) is None
        True
    """
    trials = (int(new.calibration.get("n_trials", 0)), int(old.calibration.get("n_trials", 0)))
    if trials[0] < trials[1]:
        return f"it ran {trials[0]} trials, the stored one {trials[1]}"
    same = new.quality.get("metric") == old.quality.get("metric") and new.quality.get("target") == \
        old.quality.get("target")
    costs = [p.plan.get("cost", p.cost.get("fraction_of_large", 1.0)) for p in (new, old)]
    if same and costs[0] > costs[1] + 1e-9:
        return f"its plan costs {costs[0]:.3f} of Large only, the stored one's {costs[1]:.3f}"
    return None


def _check_plan(entry: Any, num_steps: int, where: str) -> None:
    if not isinstance(entry, dict) or not {"steps", "start", "stop", "quality", "cost"} <= set(entry):
        raise ProfileError(f"{where} must be an object with steps, start, stop, quality and cost")
    ints = [entry[k] for k in ("steps", "start", "stop")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or \
            not (1 <= ints[0] <= num_steps and 0 <= ints[1] <= ints[2] <= ints[0]):
        raise ProfileError(f"{where}: steps must be in [1, {num_steps}] and 0 <= start <= stop <= steps, got "
                           f"{ints}")
    for key in ("quality", "cost", "sigma_in", "sigma_out"):
        value = entry.get(key, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ProfileError(f"{where}: {key} must be a finite number, got {value!r}")


def _check_plans(data: dict[str, Any], source: str) -> None:
    """The recommended plan and the measured frontier, entry by entry (before any sampling)."""
    num_steps = data["num_steps"]
    plan = data.get("plan", {})
    if not isinstance(plan, dict):
        raise ProfileError(f"{source}: field 'plan' must be an object")
    if plan:
        _check_plan(plan, num_steps, f"{source}: plan")
        if not 0.0 <= plan.get("sigma_out", -1) <= plan.get("sigma_in", -1) <= 1.0:
            raise ProfileError(f"{source}: plan needs 0 <= sigma_out <= sigma_in <= 1")
    frontier = data.get("frontier", [])
    if not isinstance(frontier, list):
        raise ProfileError(f"{source}: frontier must be a list of measured plans")
    for i, entry in enumerate(frontier):
        _check_plan(entry, num_steps, f"{source}: frontier[{i}]")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_numbers(where: str, record: dict[str, Any], keys: tuple[str, ...], optional: bool = True,
                   none_ok: bool = False) -> None:
    for key in keys:
        if key not in record and optional:
            continue
        value = record.get(key)
        if not (_number(value) or (none_ok and value is None)):
            raise ProfileError(f"{where}: {key} must be a finite number, got {value!r}")


def _check_window(where: str, window: Any, num_steps: int) -> None:
    """One per-prompt window: start/stop step indices on the full grid and their sigma boundaries."""
    if not isinstance(window, dict) or not {"start", "stop", "sigma_in", "sigma_out"} <= set(window):
        raise ProfileError(f"{where} must be an object with start, stop, sigma_in and sigma_out")
    start, stop = window["start"], window["stop"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop)) or \
            not 0 <= start <= stop <= num_steps:
        raise ProfileError(f"{where}: start and stop must be step indices with 0 <= start <= stop <= {num_steps}, "
                           f"got {start!r}, {stop!r}")
    _check_numbers(where, window, ("sigma_in", "sigma_out"), optional=False)
    _check_numbers(where, window, ("quality", "cost"))
    if not 0.0 <= window["sigma_out"] <= window["sigma_in"] <= 1.0:
        raise ProfileError(f"{where}: needs 0 <= sigma_out <= sigma_in <= 1, got sigma_in={window['sigma_in']!r}, "
                           f"sigma_out={window['sigma_out']!r}")


def _check_controller(where: str, controller: dict[str, Any]) -> None:
    """The online controller as :class:`~adaptive.controller.ControllerConfig` would run it: every
    field of the right type (numbers finite), the regression's vectors one number per feature."""
    from adaptive.controller import ControllerConfig

    kinds = {f.name: str(f.type) for f in dataclasses.fields(ControllerConfig)}
    for key, value in controller.items():
        kind = kinds.get(key, "")
        if kind == "float" and not (_number(value) or (key == "monitor_threshold" and value is None)):
            raise ProfileError(f"{where}.{key} must be a finite number, got {value!r}")
        if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ProfileError(f"{where}.{key} must be an integer, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise ProfileError(f"{where}.{key} must be a string, got {value!r}")
        if kind.startswith("dict") and not isinstance(value, dict):
            raise ProfileError(f"{where}.{key} must be an object, got {value!r}")
    regression = controller.get("regression") or {}
    if regression:
        features = regression.get("features")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ProfileError(f"{where}.regression.features must be a list of feature names")
        for key in ("mean", "scale", "coef"):
            vector = regression.get(key)
            if not isinstance(vector, list) or len(vector) != len(features) or not all(map(_number, vector)):
                raise ProfileError(f"{where}.regression.{key} must be {len(features)} finite numbers (one per "
                                   f"feature), got {vector!r}")
        if any(v == 0 for v in regression["scale"]):
            raise ProfileError(f"{where}.regression.scale must not hold 0")
        _check_numbers(f"{where}.regression", regression, ("intercept",), optional=False)
    try:
        ControllerConfig.from_dict(controller)
    except (ValueError, TypeError) as err:  # CalibrationError is a ValueError
        raise ProfileError(f"{where}: {err}") from None


def _check_nested(data: dict[str, Any], source: str) -> None:
    """The nested records sampling reads (per-prompt windows, the controller, quality, cost), so a
    damaged profile fails at load naming its file, not later inside a sampler."""
    num_steps = data["num_steps"]
    per_prompt = data.get("per_prompt") or {}
    if per_prompt:
        windows = per_prompt.get("windows", {})
        if not isinstance(windows, dict):
            raise ProfileError(f"{source}: per_prompt.windows must be an object keyed by prompt key, got "
                               f"{type(windows).__name__}")
        for key, window in windows.items():
            _check_window(f"{source}: per_prompt.windows[{key!r}]", window, num_steps)
        candidates = per_prompt.get("candidates", [])
        if not isinstance(candidates, list) or not all(
                isinstance(c, list) and len(c) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in c)
                for c in candidates):
            raise ProfileError(f"{source}: per_prompt.candidates must be a list of [start, stop] pairs")
        _check_numbers(f"{source}: per_prompt", per_prompt, ("mean_cost",))
    controller = data.get("controller") or {}
    if controller:
        _check_controller(f"{source}: controller", controller)
    quality = data.get("quality") or {}
    _check_numbers(f"{source}: quality", quality, ("target",))
    _check_numbers(f"{source}: quality", quality, ("achieved",), none_ok=True)
    if "metric" in quality and not isinstance(quality["metric"], str):
        raise ProfileError(f"{source}: quality.metric must be a metric name, got {quality['metric']!r}")
    cost = data.get("cost") or {}
    _check_numbers(f"{source}: cost", cost, tuple(cost))
    calibration = data.get("calibration") or {}
    if "n_trials" in calibration and not (isinstance(calibration["n_trials"], int) and
                                          not isinstance(calibration["n_trials"], bool)):
        raise ProfileError(f"{source}: calibration.n_trials must be an integer, got {calibration['n_trials']!r}")
    curve = data.get("curve") or {}
    for key, values in curve.items():
        if not isinstance(values, list) or not all(_number(v) or v is None for v in values):
            raise ProfileError(f"{source}: curve.{key} must be a list of numbers")


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


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_key(text: str) -> str:
    """A file-name-safe form of a fingerprint or study name: it can never leave the store directory."""
    cleaned = _SAFE.sub("_", str(text)).strip("._") or "_"
    return cleaned[:120]


class ProfileStore:
    """Profiles as JSON files in ``root`` (default ``$ADAPTIVE_PROFILES`` or ``./profiles``)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(ENV_VAR, "profiles"))
        if self.root.exists() and not self.root.is_dir():
            given = "the store" if root is not None else f"${ENV_VAR}"
            raise ProfileError(f"{given} is {self.root}, a file: a profile store is a folder of profiles; point "
                               f"{given} at the folder that holds it (e.g. {self.root.parent})")

    def check_writable(self) -> None:
        """Raise :class:`~adaptive.errors.StorageError` unless profiles can be written here (the folder
        exists or can be made, and a file can be created in it): checked before calibrating, so a
        read-only store never costs a whole study."""
        from adaptive.errors import StorageError

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise StorageError(f"the profile store {self.root} is not writable ({err.strerror}); choose another "
                               f"folder (store=..., `--store`, ${ENV_VAR}) or fix its permissions") from None

    def path_for(self, pair_fingerprint: str, sampler: str) -> Path:
        return self.root / f"{safe_key(pair_fingerprint)}__{safe_key(sampler)}.json"

    def save(self, profile: Profile, force: bool = False) -> Path:
        """Write ``profile`` atomically; never lose a good one. The profile stored before is kept as
        ``<name>.json.previous``; one that the new profile would weaken (:func:`weaker_than`: fewer
        trials, or a costlier plan for the same metric and target) is not replaced unless ``force``:
        the new one goes to ``<name>.json.rejected`` and a warning says why. Returns the path of the
        stored profile."""
        path = self.path_for(profile.pair_fingerprint, profile.sampler)
        try:
            old = Profile.load(path) if path.exists() else None
        except ProfileError:
            old = None  # a corrupt file is not a good profile to keep
        if old is not None:
            why = None if force else weaker_than(profile, old)
            if why is not None:
                rejected = atomic_write(path.with_name(path.name + ".rejected"), profile.to_json())
                warnings.warn(f"kept the stored profile {path}: the new calibration is weaker ({why}); it was written "
                              f"to {rejected}. Replace on purpose with force=True (`flowblend calibrate --force`).",
                              stacklevel=2)
                return path
            atomic_write(path.with_name(path.name + ".previous"), old.to_json())
        return profile.save(path)

    def get(self, pair_fingerprint: str, sampler: str) -> Profile | None:
        """The exact profile, None if there is none; a corrupt or foreign file raises ProfileError."""
        path = self.path_for(pair_fingerprint, sampler)
        if not path.exists():
            return None
        profile = Profile.load(path)
        if profile.pair_fingerprint != pair_fingerprint or profile.sampler != sampler:
            raise ProfileError(f"{path}: holds a profile for pair {profile.pair_fingerprint} / {profile.sampler}, "
                               "not the one its name says; it was renamed or copied by hand — remove it")
        return profile

    def all(self, pair_fingerprint: str | None = None) -> list[Profile]:
        """Every readable profile in the store (of one pair, given its fingerprint). A corrupt or
        foreign file is skipped with a warning naming its path: one damaged file must not hide every
        other profile."""
        if not self.root.is_dir():
            return []
        pattern = f"{safe_key(pair_fingerprint)}__*.json" if pair_fingerprint is not None else "*__*.json"
        profiles = []
        for path in sorted(self.root.glob(pattern)):
            try:
                profile = Profile.load(path)
            except ProfileError as err:
                warnings.warn(f"skipped {err}", stacklevel=2)
                continue
            if path != self.path_for(profile.pair_fingerprint, profile.sampler):
                warnings.warn(f"skipped {path}: it holds a profile for {profile.pair_fingerprint} / {profile.sampler}, "
                              "not the one its name says (renamed or copied by hand)", stacklevel=2)
                continue
            profiles.append(profile)
        return profiles

    def for_grid(self, pair: ModelPair | str, num_steps: int, shift: float, solver: str = "euler") -> Profile | None:
        """The profile to sample ``pair`` on ``sigmas(num_steps, shift)`` with: :meth:`find` for
        that grid's signature (the one look-up every caller uses)."""
        return self.find(pair, sampler_signature(solver, num_steps, shift))

    def find(self, pair: ModelPair | str, sampler: str) -> Profile | None:
        """The profile for this pair and sampler; else one of the same pair for another step count or
        shift, used through its sigma boundaries with a warning saying so; else None."""
        fp = pair if isinstance(pair, str) else fingerprint(pair)
        exact = self.get(fp, sampler)
        if exact is not None:
            return exact
        family = sampler.split("-")[0]
        near = [p for p in self.all(fp) if p.sampler.split("-")[0] == family]
        if not near:
            return None
        for profile in near:  # calibrated on a finer grid, with this grid as its recommended plan
            if profile.plan and sampler == sampler_signature(family, profile.steps, profile.shift):
                return profile
        wanted = _grid_of(sampler)
        if wanted is None:
            ranked = near
        else:  # the stored grid closest to the one asked for: step count and shift both count
            ranked = sorted(near, key=lambda p: (_grid_distance(wanted, _grid(p.num_steps, p.shift)), p.sampler))
        chosen = ranked[0]
        others = ", ".join(p.sampler for p in ranked[1:])
        warnings.warn(f"no profile for {sampler}; using the one calibrated for {chosen.sampler}, the nearest stored "
                      f"sigma grid{f' (also stored: {others})' if others else ''}, mapped through its sigma "
                      f"boundaries ({chosen.sigma_in:.4g}, {chosen.sigma_out:.4g}). Calibrate for {sampler} for a "
                      "tuned result.", stacklevel=2)
        return chosen


_SIGNATURE = re.compile(r"^[A-Za-z0-9_]+-(\d+)-shift([0-9.eE+-]+)$")


def _grid(num_steps: int, shift: float) -> list[float]:
    from adaptive.schedule import sigmas

    return sigmas(int(num_steps), float(shift)).tolist()


def _grid_of(signature: str) -> list[float] | None:
    """The sigma grid a :func:`sampler_signature` names (None if it names none)."""
    match = _SIGNATURE.match(signature)
    if match is None:
        return None
    try:
        return _grid(int(match.group(1)), float(match.group(2)))
    except ValueError:
        return None


def _grid_distance(a: list[float], b: list[float]) -> float:
    """How far apart two sigma grids are, in sigma: the mean gap between them as curves over the
    fraction of steps taken (where the shift shows) plus the gap between their mean step sizes
    (where the step count shows); 0 for equal grids.

    Example:
        >>> _grid_distance(_grid(28, 3.0), _grid(30, 3.0)) < _grid_distance(_grid(28, 3.0), _grid(12, 3.0))
        True
    """
    import numpy as np

    t = np.linspace(0.0, 1.0, 101)
    curves = [np.interp(t, np.linspace(0.0, 1.0, len(g)), g) for g in (a, b)]
    shape = float(np.mean(np.abs(curves[0] - curves[1])))
    return shape + abs(1.0 / (len(a) - 1) - 1.0 / (len(b) - 1))
