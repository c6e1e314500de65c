"""Stage schedules in sigma space: which model takes the step that starts at a given sigma.

A schedule is an ordered list of stages ``(sigma_hi, sigma_lo, model)`` that tile (0, 1]. A step from
``sigma_i`` to ``sigma_{i+1}`` is taken by the stage whose interval ``(sigma_lo, sigma_hi]`` contains
``sigma_i``. Boundaries live in sigma, so one schedule maps onto any step count and shift.

One convention decides a step that starts *on* a boundary, however the grid is stored: a boundary
within :data:`SNAP` (1e-5) of a step's start sigma counts as that sigma, so the step belongs to the
stage below the boundary. ``Schedule.lsl(0.8, 0.3)`` on ten linear steps gives Small steps 2-6 on a
float32 tensor, a float64 tensor, a list of Python floats and a pipeline's timesteps (800 ... 400)
alike; without the snap a float32 0.8 (0.800000012) would fall on the Large side. :meth:`model_for`
is the only place the rule lives: ``small_steps``, the switch and the drop-in all call it.

Example:
    >>> from adaptive import Schedule, sigmas
    >>> s = Schedule.lsl(0.8, 0.3)
    >>> s.model_for(0.5)
    'small'
    >>> s.small_steps(sigmas(10))
    [2, 3, 4, 5, 6]
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from adaptive.errors import ScheduleError, SigmaGridError


SNAP = 1e-5  # a stage boundary this close to a step's start sigma counts as that sigma


def shift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """``shift * s / (1 + (shift - 1) * s)``: the resolution shift of SD3, Wan and LTX.

    Example:
        >>> shift_sigma(0.5, 3.0)
        0.75
    """
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigmas(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The descending grid of ``num_steps + 1`` sigmas ending at 0, equal to diffusers'
    ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(num_steps)``.

    Example:
        >>> sigmas(4).tolist()[-1]
        0.0
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"shift must be a positive finite number, got {shift!r}")
    lowest = shift_sigma(1.0 / num_train_timesteps, shift)  # diffusers shifts its sigma_min twice
    grid = torch.as_tensor(shift_sigma(torch.linspace(1.0, lowest, num_steps, dtype=torch.float64), shift))
    return torch.cat([grid, grid.new_zeros(1)]).to(torch.float32)


def shift_of(grid: Sequence[float], num_train_timesteps: int = 1000) -> float | None:
    """The ``shift`` with ``sigmas(len(grid) - 1, shift) == grid`` (to 1e-4), rounded to 4 decimals;
    None for a grid :func:`sigmas` does not make. No search: the last sigma above 0 is ``a`` shifted
    twice by ``shift`` (diffusers shifts its sigma_min once more), i.e. shifted once by ``shift**2``,
    which inverts in closed form.

    Example:
        >>> shift_of(sigmas(30, 3.0).tolist()), shift_of(sigmas(8).tolist()), shift_of([1.0, 0.7, 0.2, 0.0])
        (3.0, 1.0, None)
    """
    n = len(grid) - 1
    if n < 2:  # [1, 0]: every shift makes it
        return 1.0 if [float(v) for v in grid] == sigmas(max(n, 1)).tolist() else None
    a, last = 1.0 / num_train_timesteps, float(grid[-2])
    if not 0.0 < last < 1.0:
        return None
    shift = round(math.sqrt(last * (1.0 - a) / (a * (1.0 - last))), 4)
    try:
        made = sigmas(n, shift)
    except ValueError:
        return None
    same = torch.allclose(made, torch.tensor([float(v) for v in grid], dtype=torch.float32), atol=1e-4)
    return shift if same else None


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of the flow ODE (diffusers' ``FlowMatchEulerDiscreteScheduler.step``): every
    sampler, probe and calibration replay of this package steps with it.

    Example:
        >>> euler_step(torch.ones(2), torch.ones(2), 1.0, 0.75).tolist()   # v = noise - x0
        [0.75, 0.75]
    """
    return x + (sigma_next - sigma) * v


SCHEDULE_VERSION = 1

UNGUIDED = ":cond"  # suffix of a guided model's conditional-only variant: one call per step, no guidance


def unguided(name: str) -> str:
    """The name of ``name``'s conditional-only variant (guidance skipped: one call instead of two).

    Example:
        >>> unguided("large"), unguided("large:cond"), base_of("small:cond"), is_unguided("small")
        ('large:cond', 'large:cond', 'small', False)
    """
    return name if is_unguided(name) else name + UNGUIDED


def is_unguided(name: str) -> bool:
    """Whether ``name`` is a conditional-only variant (see :func:`unguided`)."""
    return name.endswith(UNGUIDED)


def base_of(name: str) -> str:
    """The model behind ``name``: ``"large"`` for ``"large"`` and ``"large:cond"``."""
    return name[: -len(UNGUIDED)] if is_unguided(name) else name


def call_cost(name: str, small_cost: float) -> float:
    """One call of a two-model plan's ``name``, in guided Large calls: Small costs ``small_cost``, and a
    conditional-only variant half its model (no unconditional prediction). For a pair guided on both
    models; a :class:`~adaptive.pool.Pool` prices each member as it is (an unguided model's variant at
    its full call).

    Example:
        >>> call_cost("large", 0.1), call_cost("large:cond", 0.1), call_cost("small:cond", 0.1)
        (1.0, 0.5, 0.05)
    """
    cost = small_cost if base_of(name) == "small" else 1.0
    return cost / 2 if is_unguided(name) else cost


@dataclass(frozen=True)
class Stage:
    """One model over the sigma interval ``(sigma_lo, sigma_hi]``."""

    sigma_hi: float
    sigma_lo: float
    model: str


def check_grid(sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    """A sigma grid as a list of floats, checked: >= 2 finite values, strictly descending, in [0, 1]."""
    values = sigmas.detach().cpu().double().tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise SigmaGridError(f"a sigma grid must be a 1-D sequence of numbers: {err}") from None
    if len(values) < 2:
        raise SigmaGridError(f"a sigma grid needs num_steps + 1 >= 2 values, got {len(values)}; "
                             "build one with adaptive.sigmas(num_steps)")
    if not all(math.isfinite(v) for v in values):
        raise SigmaGridError("the sigma grid contains NaN or Inf")
    if values[0] > 1.0 or values[-1] < 0.0:
        raise SigmaGridError(f"sigmas must lie in [0, 1], got {values[0]:.4g} .. {values[-1]:.4g}; "
                             "pass sigma, not training timesteps (divide timesteps by 1000)")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise SigmaGridError("sigmas must be strictly descending (from noise at 1 to data at 0)")
    return values


class Schedule:
    """An ordered, validated tiling of (0, 1] by stages; immutable.

    Build one with :meth:`large_only`, :meth:`lsl`, :meth:`small_first`, :meth:`large_first`,
    :meth:`from_stages` (any number of models) or :meth:`from_steps` (a per-step list of names).
    """

    __slots__ = ("stages",)
    stages: tuple[Stage, ...]

    def __init__(self, stages: Iterable[Stage]) -> None:
        object.__setattr__(self, "stages", _validated(_merged(list(stages))))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Schedule is immutable; build a new one")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.stages == other.stages

    def __hash__(self) -> int:
        return hash(self.stages)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.model} ({s.sigma_lo:.4g}, {s.sigma_hi:.4g}]" for s in self.stages)
        return f"Schedule({parts})"

    # Constructors -------------------------------------------------------------------------------
    @classmethod
    def from_stages(cls, stages: Iterable[Stage | tuple[float, float, str]]) -> Schedule:
        """From ``(sigma_hi, sigma_lo, model)`` tuples, highest sigma first; any number of models."""
        return cls(s if isinstance(s, Stage) else Stage(float(s[0]), float(s[1]), str(s[2])) for s in stages)

    @classmethod
    def large_only(cls, large: str = "large") -> Schedule:
        """One model for every step."""
        return cls([Stage(1.0, 0.0, large)])

    @classmethod
    def lsl(cls, sigma_in: float, sigma_out: float, large: str = "large", small: str = "small") -> Schedule:
        """FlowBlending's Large -> Small -> Large: Small takes steps starting in (sigma_out, sigma_in].

        ``1 >= sigma_in >= sigma_out >= 0``; equal values mean Large only.
        """
        sigma_in, sigma_out = _check_unit("sigma_in", sigma_in), _check_unit("sigma_out", sigma_out)
        if sigma_in < sigma_out:
            raise ScheduleError(f"sigma_in ({sigma_in}) must be >= sigma_out ({sigma_out}): Small runs between "
                                "them, from high noise (sigma_in) down to low noise (sigma_out)")
        return cls([Stage(1.0, sigma_in, large), Stage(sigma_in, sigma_out, small), Stage(sigma_out, 0.0, large)])

    @classmethod
    def small_first(cls, sigma_switch: float, large: str = "large", small: str = "small") -> Schedule:
        """T-Stitch style Small -> Large: Small for steps starting above ``sigma_switch``."""
        sigma_switch = _check_unit("sigma_switch", sigma_switch)
        return cls([Stage(1.0, sigma_switch, small), Stage(sigma_switch, 0.0, large)])

    @classmethod
    def large_first(cls, boundary: float, large: str = "large", small: str = "small") -> Schedule:
        """Wan 2.2 ``boundary_ratio`` style Large -> Small: Large above ``boundary`` (in sigma)."""
        boundary = _check_unit("boundary", boundary)
        return cls([Stage(1.0, boundary, large), Stage(boundary, 0.0, small)])

    @classmethod
    def from_steps(cls, sigmas: torch.Tensor | Sequence[float], models: Sequence[str]) -> Schedule:
        """The schedule that runs ``models[i]`` for step ``i`` of ``sigmas``.

        Boundaries sit halfway between grid points, so a pipeline that hands the sigma back through
        a float32 timestep (``sigma * 1000``) still lands in the intended stage.
        """
        grid = check_grid(sigmas)
        if len(models) != len(grid) - 1:
            raise ScheduleError(f"need one model name per step: {len(grid) - 1} steps, {len(models)} names")
        cuts = [1.0] + [(grid[i] + grid[i + 1]) / 2 for i in range(len(models) - 1)] + [0.0]
        return cls(Stage(cuts[i], cuts[i + 1], name) for i, name in enumerate(models))

    @classmethod
    def experts(cls, boundary: float, high: str = "high", low: str = "low") -> Schedule:
        """Wan 2.2's two experts switching at ``boundary`` (a sigma, as diffusers' ``boundary_ratio``):
        ``high`` takes every step that starts at or above it, ``low`` the rest, as diffusers' ``t >=
        boundary_ratio * 1000`` decides (the boundary sits :data:`SNAP` below ``boundary``, so a step
        starting on it is the high expert's; our own boundaries give such a step to the stage below).

        Example:
            >>> Schedule.experts(0.875).step_models([1.0, 0.875, 0.5, 0.0])
            ['high', 'high', 'low']
        """
        boundary = _check_unit("boundary", boundary)
        return cls.large_first(max(boundary - 2 * SNAP, 0.0), high, low)

    # Plans over a pool -----------------------------------------------------------------------------
    def relabel(self, sigma_hi: float, sigma_lo: float, inside: Mapping[str, str] | Callable[[str], str] | None = None,
                outside: Mapping[str, str] | Callable[[str], str] | None = None) -> Schedule:
        """This schedule with the models of steps starting in ``(sigma_lo, sigma_hi]`` renamed by
        ``inside`` and the others by ``outside`` (a mapping or a function of the name; a mapping
        leaves names it lacks alone). Every plan over a pool is built this way: a Small window,
        a guidance interval, an expert split.

        Example:
            >>> Schedule.large_only().relabel(0.8, 0.3, inside={"large": "small"})
            Schedule(large (0.8, 1], small (0.3, 0.8], large (0, 0.3])
        """
        sigma_hi, sigma_lo = _check_unit("sigma_hi", sigma_hi), _check_unit("sigma_lo", sigma_lo)
        if sigma_hi < sigma_lo:
            raise ScheduleError(f"sigma_hi ({sigma_hi}) must be >= sigma_lo ({sigma_lo})")
        cuts = sorted({1.0, 0.0, sigma_hi, sigma_lo, *(s.sigma_lo for s in self.stages)}, reverse=True)
        stages = []
        for hi, lo in zip(cuts, cuts[1:]):
            name = self.stages[self._stage_at(lo + (hi - lo) / 2)].model  # a sigma inside (lo, hi]
            rename = inside if sigma_lo <= lo and hi <= sigma_hi else outside
            stages.append(Stage(hi, lo, _renamed(name, rename)))
        return Schedule(stages)

    def guided_within(self, sigma_hi: float, sigma_lo: float) -> Schedule:
        """Guidance only for steps starting in ``(sigma_lo, sigma_hi]``: elsewhere every model runs
        its conditional-only variant (:func:`unguided`), one call per step instead of two.

        Example:
            >>> Schedule.lsl(0.8, 0.3).guided_within(0.9, 0.2)
            Schedule(large:cond (0.9, 1], large (0.8, 0.9], small (0.3, 0.8], large (0.2, 0.3], large:cond (0, 0.2])
        """
        return self.relabel(sigma_hi, sigma_lo, outside=unguided)

    def cost(self, sigmas: torch.Tensor | Sequence[float], costs: Mapping[str, float]) -> float:
        """The plan's cost on this grid: the sum over its steps of ``costs[model]`` (e.g. a guided
        Large call 2, its conditional-only variant 1, a Small call 0.2). A name missing from
        ``costs`` is an error that names it.

        Example:
            >>> Schedule.lsl(0.8, 0.3).guided_within(0.9, 0.2).cost(sigmas(10), {"large": 2, "large:cond": 1, "small": 0.4})
            9.0
        """
        names = self.step_models(sigmas)
        missing = sorted({n for n in names if n not in costs})
        if missing:
            raise ScheduleError(f"no cost per call for {missing}; give one for every model the plan names")
        return float(sum(costs[n] for n in names))

    # Queries ------------------------------------------------------------------------------------
    @property
    def models(self) -> tuple[str, ...]:
        """The model names used, in order of first appearance."""
        return tuple(dict.fromkeys(s.model for s in self.stages))

    def model_for(self, sigma: float) -> str:
        """The model that takes a step starting at ``sigma`` (what a scheduler or pipeline asks): the
        stage ``(sigma_lo, sigma_hi]`` that contains it, a boundary within :data:`SNAP` of ``sigma``
        counting as ``sigma`` (float32 or float64 grids, lists and timesteps decide alike).

        Example:
            >>> s = Schedule.lsl(0.8, 0.3)
            >>> s.model_for(0.8), s.model_for(float(torch.tensor(0.8))), s.model_for(0.3)
            ('small', 'small', 'large')
        """
        return self.stages[self._stage_at(sigma)].model

    def _stage_at(self, sigma: float) -> int:
        sigma = float(sigma)
        if not (0.0 <= sigma <= 1.0):
            raise ScheduleError(f"sigma {sigma} is outside [0, 1]; pass sigma, not a training timestep")
        for index, stage in enumerate(self.stages):
            if sigma > stage.sigma_lo + SNAP:
                return index
        return len(self.stages) - 1

    def idle_stages(self, sigmas: torch.Tensor | Sequence[float]) -> list[Stage]:
        """The stages no step of this grid starts in: they are skipped on it (e.g. UniPC's last step
        starts at sigma 0.302, so ``lsl(0.85, 0.3)``'s final Large stage gets no step on 8 steps).

        Example:
            >>> Schedule.lsl(0.85, 0.3).idle_stages([1.0, 0.6, 0.31, 0.0])
            [Stage(sigma_hi=0.3, sigma_lo=0.0, model='large')]
        """
        used = {self._stage_at(s) for s in check_grid(sigmas)[:-1]}
        return [stage for index, stage in enumerate(self.stages) if index not in used]

    def step_models(self, sigmas: torch.Tensor | Sequence[float]) -> list[str]:
        """The model name for each step of a grid of ``num_steps + 1`` sigmas."""
        grid = check_grid(sigmas)
        return [self.model_for(s) for s in grid[:-1]]

    def steps_of(self, model: str, sigmas: torch.Tensor | Sequence[float]) -> list[int]:
        """Indices of the steps ``model`` takes on this grid."""
        return [i for i, name in enumerate(self.step_models(sigmas)) if name == model]

    def small_steps(self, sigmas: torch.Tensor | Sequence[float], small: str = "small") -> list[int]:
        """Indices of the steps the Small model takes on this grid."""
        return self.steps_of(small, sigmas)

    def fraction(self, model: str, sigmas: torch.Tensor | Sequence[float]) -> float:
        """Share of the grid's steps that ``model`` takes."""
        return len(self.steps_of(model, sigmas)) / (len(check_grid(sigmas)) - 1)

    def check_models(self, available: Iterable[str]) -> None:
        """Raise :class:`ScheduleError` if a stage names a model not in ``available``."""
        available = list(available)
        missing = [m for m in self.models if m not in available]
        if missing:
            raise ScheduleError(f"the schedule names model(s) {missing} but the pair has {available}; "
                                "rename the stages or add the model to the pair")

    # JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": SCHEDULE_VERSION,
                "stages": [{"sigma_hi": s.sigma_hi, "sigma_lo": s.sigma_lo, "model": s.model} for s in self.stages]}

    def to_json(self) -> str:
        """A JSON string that :meth:`from_json` turns back into an equal schedule."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> Schedule:
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise ScheduleError("a schedule must be a JSON object with a 'stages' list")
        if data.get("version", SCHEDULE_VERSION) != SCHEDULE_VERSION:
            raise ScheduleError(f"schedule version {data.get('version')!r} is not supported "
                                f"(this library reads version {SCHEDULE_VERSION})")
        stages = []
        for item in data["stages"]:
            if not isinstance(item, dict) or set(item) != {"sigma_hi", "sigma_lo", "model"}:
                raise ScheduleError(f"each stage needs exactly sigma_hi, sigma_lo, model; got {item!r}")
            hi, lo, model = item["sigma_hi"], item["sigma_lo"], item["model"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (hi, lo)):
                raise ScheduleError(f"stage sigmas must be numbers, got {hi!r}, {lo!r}")
            if not isinstance(model, str) or not model:
                raise ScheduleError(f"stage model must be a non-empty name, got {model!r}")
            stages.append(Stage(float(hi), float(lo), model))
        return cls(stages)

    @classmethod
    def from_json(cls, text: str | bytes) -> Schedule:
        """Parse :meth:`to_json` output; malformed input raises :class:`ScheduleError`."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as err:
            raise ScheduleError(f"not valid schedule JSON: {err}") from None
        return cls.from_dict(data)


def _check_unit(name: str, value: float) -> float:
    """``value`` as a float sigma in [0, 1]: any real number (numpy scalars too), never a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)) or not (0.0 <= float(value) <= 1.0):
        raise ScheduleError(f"{name} must be a sigma in [0, 1], got {value!r}")
    return float(value)


def _renamed(name: str, rename: Mapping[str, str] | Callable[[str], str] | None) -> str:
    if rename is None:
        return name
    if callable(rename):
        new = rename(name)
        if not isinstance(new, str) or not new:
            raise ScheduleError(f"relabel's function returned {new!r} for model {name!r}; it must return a model "
                                "name (the name itself to keep it)")
        return new
    if name in rename:
        return rename[name]
    base = base_of(name)  # a mapping of models renames their conditional-only variants alike
    return unguided(rename[base]) if base in rename else name


def _merged(stages: list[Stage]) -> list[Stage]:
    # Empty stages vanish and neighbours of one model merge, so lsl(a, a) *is* large_only().
    out: list[Stage] = []
    for stage in stages:
        if stage.sigma_hi == stage.sigma_lo:
            continue
        if out and out[-1].model == stage.model and out[-1].sigma_lo == stage.sigma_hi:
            out[-1] = Stage(out[-1].sigma_hi, stage.sigma_lo, stage.model)
        else:
            out.append(stage)
    return out


def _validated(stages: list[Stage]) -> tuple[Stage, ...]:
    if not stages:
        raise ScheduleError("a schedule needs at least one non-empty stage")
    for s in stages:
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (s.sigma_hi, s.sigma_lo)):
            raise ScheduleError(f"stage {s} has a sigma outside [0, 1]")
        if s.sigma_hi < s.sigma_lo:
            raise ScheduleError(f"stage {s} runs upwards; write (sigma_hi, sigma_lo) with sigma_hi > sigma_lo")
    if stages[0].sigma_hi != 1.0 or stages[-1].sigma_lo != 0.0:
        raise ScheduleError(f"stages must cover (0, 1]: they span ({stages[-1].sigma_lo}, {stages[0].sigma_hi}]")
    for a, b in zip(stages, stages[1:]):
        if b.sigma_hi > a.sigma_lo:
            raise ScheduleError(f"stages overlap: {a} and {b}; each must start where the previous ends")
        if b.sigma_hi < a.sigma_lo:
            raise ScheduleError(f"gap between {a} and {b}: no model for sigma in ({b.sigma_hi}, {a.sigma_lo}]")
    return tuple(stages)
