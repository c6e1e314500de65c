"""The sampler a pipeline runs, named once: a diffusers flow scheduler (Euler, UniPC, DPM-Solver++) and
the options that shape its steps.

A :class:`Sampler` is a frozen record (scheduler class, flow shift, the config entries that differ
from the named sampler's defaults) that every judgement runs: the probe, calibration's replays, the
frontier, ``sample(..., sampler=...)`` and the drop-in's profile look-up. Its :meth:`Sampler.run`
steps the scheduler itself, so a multistep solver's history (UniPC's, DPM-Solver++'s) carries
across a model switch exactly as it does inside a pipeline, where the scheduler never knows which
transformer answered. The model is asked about the sigma the pipeline's transformer sees: the
scheduler's timestep over 1000 (UniPC and DPM-Solver cast timesteps to integers), while the step
and every plan boundary use the scheduler's own sigmas.

A state of a run is the history it was fed: restarting a run at step ``i`` (calibration restarts
candidates from Large's cached states) replays the scheduler's arithmetic on the recorded states and
velocities of steps ``0 .. i - 1``, no model call. Euler has no history: its runs are stateless.

Profiles are keyed by :meth:`Sampler.signature`: ``"euler-30-shift3"`` (as before), ``"unipc-30-shift3"``,
``"dpmpp-30-shift3"``; a scheduler with other options gets a family of its own, e.g.
``"unipc_1f0c2a9b-30-shift3"`` (a hash of those options), never mixed with the default's.

Example:
    >>> from diffusers import UniPCMultistepScheduler
    >>> wan = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    >>> sampler = Sampler.of(wan)
    >>> sampler, sampler.signature(30), Sampler.of("unipc", shift=3.0) == sampler
    (Sampler('unipc', shift=3), 'unipc-30-shift3', True)
    >>> [round(s, 4) for s in sampler.grid(4)], sampler.model_sigmas(4)[:2]
    ([1.0, 0.9001, 0.7504, 0.501, 0.0], [0.999, 0.9])
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adaptive.errors import SigmaGridError
from adaptive.schedule import euler_step, sigmas

# name -> (diffusers class, the config entries that make it a flow sampler, the key of its shift)
NAMED: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {}, "shift"),
    "unipc": ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True}, "flow_shift"),
    "dpm++": ("DPMSolverMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                              "algorithm_type": "dpmsolver++"}, "flow_shift"),
}
ALIASES = {"dpmpp": "dpm++", "dpm": "dpm++", "dpmsolver++": "dpm++", "flowmatch": "euler"}
KEY = {"dpm++": "dpmpp"}  # the name in signatures and file names ('+' is no file-name character)
_IGNORED = {"_class_name", "_diffusers_version", "_use_default_values", "_name_or_path"}
NUM_TRAIN_TIMESTEPS = 1000


def _jsonable(value: Any) -> Any:
    """A config value as a hashable, JSON-able one (lists and arrays become tuples)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_jsonable(v) for v in value)
    return value


def _scheduler_class(name: str) -> type:
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"diffusers has no scheduler {name!r}")
    return cls


@functools.lru_cache(maxsize=None)
def _defaults(name: str) -> dict[str, Any]:
    """The config of the named sampler built with nothing else (shift left at its default)."""
    cls_name, base, _ = NAMED[name]
    config = dict(_scheduler_class(cls_name)(**base).config)
    return {k: _jsonable(v) for k, v in config.items() if k not in _IGNORED}


@dataclass(frozen=True)
class Sampler:
    """A flow sampler: ``name`` (``"euler"``, ``"unipc"``, ``"dpm++"``), its ``shift`` and the
    scheduler config entries that differ from the name's defaults (``options``, sorted pairs).

    Build one with :meth:`of` from a name, a diffusers scheduler instance or its config. Runs on the
    scheduler's own grid (:meth:`grid`); one model call per step.

    Example:
        >>> Sampler.of("euler", shift=3.0).grid(2) == sigmas(2, 3.0).tolist()
        True
    """

    name: str
    shift: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in NAMED:
            raise ValueError(f"unknown sampler {self.name!r}; use one of {', '.join(NAMED)}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, numbers.Real) or \
                not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"the sampler's shift must be a positive finite number, got {self.shift!r}")
        object.__setattr__(self, "shift", float(self.shift))
        object.__setattr__(self, "options", tuple(sorted((str(k), _jsonable(v)) for k, v in self.options)))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"Sampler({self.name!r}, shift={self.shift:g}{extra})"

    @classmethod
    def of(cls, spec: Any = "euler", shift: float | None = None) -> Sampler:
        """The sampler ``spec`` names: a :class:`Sampler`, a name (``"euler"``, ``"unipc"``,
        ``"dpm++"``; ``shift`` default 1), a diffusers scheduler instance or its config (a dict with
        ``_class_name``). ``shift`` given with a scheduler must agree with the scheduler's own.

        Example:
            >>> Sampler.of({"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "flow_prediction",
            ...             "use_flow_sigmas": True, "flow_shift": 5.0}).signature(20)
            'dpmpp-20-shift5'
            >>> Sampler.of("heun")
            Traceback (most recent call last):
            ...
            ValueError: unknown sampler 'heun': use one of euler, unipc, dpm++ (a diffusers flow scheduler of one model call per step); Heun calls the model twice per step and runs Euler's profile (sample_heun)
        """
        if isinstance(spec, Sampler):
            if shift is not None and float(shift) != spec.shift:
                raise ValueError(f"shift={shift:g} disagrees with the sampler's own shift {spec.shift:g}")
            return spec
        if isinstance(spec, str):
            name = ALIASES.get(spec.lower(), spec.lower())
            if name not in NAMED:
                raise ValueError(f"unknown sampler {spec!r}: use one of {', '.join(NAMED)} (a diffusers flow scheduler "
                                 "of one model call per step); Heun calls the model twice per step and runs Euler's "
                                 "profile (sample_heun)")
            return cls(name, 1.0 if shift is None else shift)
        if hasattr(spec, "config") and hasattr(spec, "set_timesteps"):
            class_name, config = type(spec).__name__, dict(spec.config)
        elif isinstance(spec, Mapping) and "_class_name" in spec:
            class_name, config = str(spec["_class_name"]), dict(spec)
        else:
            raise ValueError(f"sampler must be a name ({', '.join(NAMED)}), a diffusers scheduler or its config "
                             f"(a dict with '_class_name'); got {type(spec).__name__}")
        names = [n for n, (c, _, _) in NAMED.items() if c == class_name]
        if not names:
            raise ValueError(f"{class_name} is not a flow sampler this package runs step by step; use "
                             f"FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler or DPMSolverMultistepScheduler "
                             "(flow_prediction, use_flow_sigmas=True)")
        name = names[0]
        _, base, shift_key = NAMED[name]
        config = {k: _jsonable(v) for k, v in config.items() if k not in _IGNORED}
        for key, value in base.items():
            if key in config and config[key] != value and not (key == "algorithm_type" and value == "dpmsolver++"
                                                               and config[key] == "dpmsolver++"):
                raise ValueError(f"{class_name} with {key}={config[key]!r} is no flow sampler; set {key}={value!r} "
                                 "(as Wan's pipelines do)")
        own = float(config.pop(shift_key, 1.0) or 1.0)
        if shift is not None and not math.isclose(float(shift), own):
            raise ValueError(f"shift={shift:g} disagrees with the scheduler's {shift_key}={own:g}; leave shift out")
        defaults = _defaults(name)
        options = tuple((k, v) for k, v in config.items()
                        if k != shift_key and k in defaults and v != defaults[k])
        sampler = cls(name, own, options)
        sampler.grid(2)  # a scheduler that cannot make a flow grid fails here, named
        return sampler

    @property
    def family(self) -> str:
        """The name in signatures: ``"unipc"``, or ``"unipc_<hash>"`` with options of its own."""
        key = KEY.get(self.name, self.name)
        if not self.options:
            return key
        digest = hashlib.sha256(json.dumps(self.options, sort_keys=True).encode()).hexdigest()[:8]
        return f"{key}_{digest}"

    def signature(self, num_steps: int) -> str:
        """The profile key of this sampler over ``num_steps`` steps: ``"unipc-30-shift3"``."""
        return f"{self.family}-{int(num_steps)}-shift{self.shift:g}"

    @property
    def is_euler(self) -> bool:
        """Plain Euler (FlowMatchEulerDiscrete, default options): stateless steps on :func:`sigmas`."""
        return self.name == "euler" and not self.options

    def scheduler(self) -> Any:
        """A fresh diffusers scheduler of this sampler."""
        cls_name, base, shift_key = NAMED[self.name]
        return _scheduler_class(cls_name)(**{**base, **dict(self.options), shift_key: self.shift})

    def steps(self, num_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The scheduler's sigmas (``num_steps + 1``, down to 0) and timesteps for ``num_steps`` steps."""
        return _steps(self, int(num_steps))

    def grid(self, num_steps: int) -> list[float]:
        """The sigmas of the ``num_steps`` steps and the last one (0): where plans and boundaries live."""
        return list(self.steps(num_steps)[0])

    def model_sigmas(self, num_steps: int) -> list[float]:
        """The sigma the model is asked about at each step: the pipeline's timestep / 1000."""
        return [t / NUM_TRAIN_TIMESTEPS for t in self.steps(num_steps)[1]]

    def run(self, num_steps: int) -> Run:
        """A fresh run of ``num_steps`` steps (:class:`EulerRun` or :class:`SchedulerRun`)."""
        return EulerRun(self.grid(num_steps)) if self.is_euler else SchedulerRun(self, num_steps)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shift": self.shift, "options": {k: v for k, v in self.options}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sampler:
        return cls(str(data["name"]), float(data["shift"]), tuple(dict(data.get("options", {})).items()))

    @classmethod
    def from_signature(cls, signature: str) -> Sampler | None:
        """The sampler a profile key names, when it names one without options of its own (else None).

        Example:
            >>> Sampler.from_signature("dpmpp-20-shift5"), Sampler.from_signature("unipc_1f0c2a9b-20-shift5")
            (Sampler('dpm++', shift=5), None)
        """
        family, _, rest = signature.partition("-")
        name = ALIASES.get(family, family)
        shift = rest.rpartition("-shift")[2]
        if name not in NAMED or not rest:
            return None
        try:
            return cls(name, float(shift))
        except ValueError:
            return None


def scheduler_shift(scheduler: Any) -> float:
    """The resolution shift a flow scheduler applies: ``flow_shift`` (UniPC, DPM-Solver) or ``shift`` (Euler).

    Example:
        >>> from diffusers import FlowMatchEulerDiscreteScheduler
        >>> scheduler_shift(FlowMatchEulerDiscreteScheduler(shift=5.0))
        5.0
    """
    config = scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift"
    return float(config.get(key, 1.0))


def sampler_for(spec: Any, shift: float | None = None) -> Sampler:
    """The sampler a call names: ``spec`` None or a name takes ``shift`` (default 1); a scheduler or
    :class:`Sampler` brings its own shift, which a ``shift`` other than None or 1 must equal.

    Example:
        >>> sampler_for(None, 3.0), sampler_for("unipc", 5.0)
        (Sampler('euler', shift=3), Sampler('unipc', shift=5))
    """
    if spec is None or isinstance(spec, str):
        return Sampler.of(spec or "euler", shift)
    sampler = Sampler.of(spec)
    if shift is not None and float(shift) != 1.0 and not math.isclose(float(shift), sampler.shift):
        raise ValueError(f"shift={shift:g} disagrees with the sampler's own shift {sampler.shift:g}; leave shift out")
    return sampler


@functools.lru_cache(maxsize=256)
def _steps(sampler: Sampler, num_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if sampler.is_euler:
        grid = tuple(sigmas(num_steps, sampler.shift).tolist())
        return grid, tuple(s * NUM_TRAIN_TIMESTEPS for s in grid[:-1])
    scheduler = sampler.scheduler()
    try:
        scheduler.set_timesteps(num_steps)
    except (ValueError, TypeError) as err:
        raise SigmaGridError(f"{sampler}: its scheduler cannot set {num_steps} steps on its own ({err}); dynamic "
                             "shifting needs the latent size: give a fixed shift instead") from err
    grid, timesteps = scheduler.sigmas, scheduler.timesteps
    values = [float(s) for s in grid]
    if len(values) != len(timesteps) + 1 or not (values[-1] == 0.0 and all(0.0 <= s <= 1.0 for s in values)) or \
            any(b >= a for a, b in zip(values, values[1:])):
        raise SigmaGridError(f"{sampler}: its scheduler makes no flow grid of one model call per step (sigmas "
                             f"{values[:4]}..., {len(timesteps)} timesteps); use flow sigmas ending at 0")
    return tuple(values), tuple(float(t) for t in timesteps)


class Run:
    """One sampling run of a sampler, step by step: ``step(x, v, i)`` is the state after step ``i``
    from ``x`` (the state at step ``i``) and the model's velocity ``v`` there. Steps come in order;
    :meth:`replay` feeds recorded steps (a restart builds a fresh run and replays)."""

    stateless = False
    grid: list[float]  # the scheduler's sigmas, down to 0

    def sigma(self, i: int) -> float:
        """The sigma the model is asked about at step ``i``."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        raise NotImplementedError

    def replay(self, states: Sequence[torch.Tensor], velocities: Sequence[torch.Tensor]) -> Run:
        """This run after the recorded steps ``0 .. len(velocities) - 1`` (no model call)."""
        for i, v in enumerate(velocities):
            self.step(states[i], v, i)
        return self


class EulerRun(Run):
    """Euler's steps on a grid: no history."""

    stateless = True

    def __init__(self, grid: Sequence[float]) -> None:
        self.grid = [float(s) for s in grid]

    def sigma(self, i: int) -> float:
        return self.grid[i]

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        return euler_step(x, v, self.grid[i], self.grid[i + 1])

    def replay(self, states: Sequence[torch.Tensor], velocities: Sequence[torch.Tensor]) -> EulerRun:
        return self


class SchedulerRun(Run):
    """A diffusers scheduler stepped by hand, as its pipeline steps it (``scheduler.step(v, t, x)``)."""

    def __init__(self, sampler: Sampler, num_steps: int) -> None:
        self.sampler, self.num_steps = sampler, int(num_steps)
        self.scheduler = sampler.scheduler()
        self.scheduler.set_timesteps(self.num_steps)
        self.grid = sampler.grid(self.num_steps)
        self._sigmas = sampler.model_sigmas(self.num_steps)
        self.done = 0

    def sigma(self, i: int) -> float:
        return self._sigmas[i]

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        if i != self.done:
            raise RuntimeError(f"{self.sampler} steps in order: step {i} asked after {self.done} steps")
        t = self.scheduler.timesteps[i]
        out = self.scheduler.step(v, t, x, return_dict=False)[0]
        self.done += 1
        return out


def run_on(sampler: Sampler | None, grid: Sequence[float]) -> Run:
    """A fresh run over ``grid``: Euler's steps on it (``sampler`` None or plain Euler: any grid), else
    ``sampler``'s scheduler, whose own grid ``grid`` must be."""
    if sampler is None or sampler.is_euler:
        return EulerRun(grid)
    n = len(grid) - 1
    if any(abs(a - b) > 1e-6 for a, b in zip(sampler.grid(n), grid)):
        raise SigmaGridError(f"{sampler} runs its own grid of {n} steps, not the one given; take sampler.grid({n})")
    return sampler.run(n)


def solve(model: Callable[..., torch.Tensor], x: torch.Tensor, run: Run, start: int, stop: int,
          callback: Callable[[dict[str, Any]], None] | None = None, **cond: Any) -> torch.Tensor:
    """Steps ``start .. stop - 1`` of ``run`` from ``x`` (the state at ``start``): the state at ``stop``.
    The model is asked about :meth:`Run.sigma` of each step; ``callback`` sees each step (``i``,
    ``sigma``, ``sigma_next``, ``x``, ``v``) as the solver loops' do.

    Example:
        >>> x = solve(lambda x, s: torch.ones_like(x), torch.ones(1, 2), Sampler.of("unipc").run(6), 0, 6)
        >>> round(float(x[0, 0]), 4)                                    # v = noise - x0: x0 = noise - 1
        0.0
    """
    for i in range(start, stop):
        v = model(x, run.sigma(i), **cond)
        if callback is not None:
            callback({"i": i, "sigma": run.sigma(i), "sigma_next": run.grid[i + 1], "x": x, "v": v})
        x = run.step(x, v, i)
    return x


def path(model: Callable[..., torch.Tensor], x: torch.Tensor, run: Run, start: int, stop: int,
         callback: Callable[[dict[str, Any]], None] | None = None, keep_velocities: bool = False, **cond: Any
         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Steps ``start .. stop - 1`` of ``run`` from ``x`` (the state at ``start``; the run has taken the
    steps before it): the states at ``start .. stop`` and, with ``keep_velocities``, the velocities
    of each step. ``callback`` sees each step as the solver loops' do.

    Example:
        >>> states, vs = path(lambda x, s: torch.ones_like(x), torch.ones(1, 2), Sampler.of("unipc").run(4), 0, 4,
        ...                   keep_velocities=True)
        >>> round(float(states[-1][0, 0]), 4), len(vs)                     # v = noise - x0: x0 = noise - 1
        (0.0, 4)
    """
    states, velocities = [x], []

    def keep(step: dict[str, Any]) -> None:
        if step["i"] > start:
            states.append(step["x"])
        if keep_velocities:
            velocities.append(step["v"])
        if callback is not None:
            callback(step)

    states.append(solve(model, x, run, start, stop, keep, **cond))
    return states, velocities


__all__ = ["EulerRun", "NAMED", "Run", "Sampler", "SchedulerRun", "path", "run_on", "sampler_for", "scheduler_shift", "solve"]
