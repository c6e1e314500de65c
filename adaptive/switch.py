"""The model switch as a denoiser: ``switch(x, sigma, **cond) -> v`` runs Large or Small per row.

A :class:`Plan` says what decides (fixed per-row schedules, or the online controller);
:class:`Switch` carries it out. Every sampler is then an ordinary loop over one denoiser
(:mod:`adaptive.solvers`), and the diffusers drop-in (:mod:`adaptive.blend`) is a face over the same
switch. The switch decides from the sigma of each call, with no step counter: a fixed schedule
names the model of any sigma, and the online controller's step is the grid point the sigma sits on
(a sigma that rises again starts a new run). What it decided is in :attr:`Switch.decisions`.

Example:
    >>> import torch
    >>> from adaptive.schedule import Schedule, sigmas
    >>> from adaptive.solvers import euler
    >>> models = {"large": lambda x, s: x, "small": lambda x, s: 0.9 * x}
    >>> switch = Switch(models, Plan.fixed([Schedule.lsl(0.8, 0.3)]), sigmas(4))
    >>> _ = euler(switch, torch.ones(1, 2), sigmas(4))
    >>> switch.decisions.models[0]
    ['large', 'small', 'small', 'large']
"""

from __future__ import annotations

import warnings

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adaptive.controller import ControllerConfig, Decisions, OnlineController, hand_in_and_back
from adaptive.denoisers import Denoiser, as_denoiser, select_rows, with_unguided
from adaptive.errors import ScheduleError, SigmaGridError
from adaptive.metrics import rel_l2
from adaptive.schedule import Schedule


@dataclass(frozen=True)
class Plan:
    """What a switch runs: one fixed schedule per controlled row, or the online controller.

    ``shared``: one decision for the whole batch (``rows`` is 1); else row ``r`` of the batch is
    controlled row ``r``. ``reasons`` say, per row, why these schedules (for :class:`Decisions`);
    ``profile`` is the stored profile the plan came from, if any. With the controller, ``stored``
    lists the rows that follow a stored schedule instead, ``(row, schedule, reason)`` (a prompt
    calibrated with its own window: the controller is for prompts that were not). Made by
    :func:`adaptive.plans.resolve_plan` from whatever the caller passed.
    """

    schedules: tuple[Schedule, ...] = ()
    reasons: tuple[str, ...] = ()
    controller: ControllerConfig | None = None
    rows: int = 1
    shared: bool = False
    profile: Any = field(default=None, compare=False, repr=False)
    stored: tuple[tuple[int, Schedule, str], ...] = ()

    def __post_init__(self) -> None:
        if self.controller is None and (not self.schedules or len(self.schedules) != self.rows
                                        or len(self.reasons) != self.rows):
            raise ScheduleError(f"a fixed plan needs one schedule and one reason per row ({self.rows} rows), got "
                                f"{len(self.schedules)} and {len(self.reasons)}")
        if self.shared and self.rows != 1:
            raise ScheduleError("a shared plan decides one row for the whole batch")
        if self.stored and (self.controller is None or self.shared
                            or not all(0 <= r < self.rows for r, _, _ in self.stored)):
            raise ScheduleError("stored rows go with the online controller deciding per row, one entry per row "
                                "in range")

    @classmethod
    def fixed(cls, schedules: Sequence[Schedule], reasons: Sequence[str] | None = None, shared: bool = False,
              profile: Any = None) -> Plan:
        """Row ``r`` runs ``schedules[r]`` (one schedule with ``shared``: the whole batch runs it)."""
        reasons = list(reasons) if reasons is not None else ["one schedule for the batch"] * len(schedules)
        return cls(tuple(schedules), tuple(reasons), None, len(schedules), shared, profile)

    @classmethod
    def online(cls, config: ControllerConfig, rows: int, shared: bool = False, profile: Any = None,
               stored: Sequence[tuple[int, Schedule, str]] = ()) -> Plan:
        """The online controller deciding for ``rows`` rows (one row, the batch mean, with ``shared``),
        but the ``stored`` rows, which follow their schedule."""
        return cls((), (), config, 1 if shared else rows, shared, profile, tuple(stored))

    @property
    def models(self) -> tuple[str, ...]:
        """The model names this plan may call."""
        if self.controller is not None:
            return ("large", "small")
        return tuple(dict.fromkeys(m for s in self.schedules for m in s.models))


def _starts(grid: Sequence[float]) -> str:
    shown = ", ".join(f"{s:.3g}" for s in grid[:-1][-4:])
    return ("..., " if len(grid) > 5 else "") + shown


def plan_decisions(grid: Sequence[float], plans: list[list[str]], reasons: Sequence[str], shared: bool = False
                   ) -> Decisions:
    """:class:`~adaptive.controller.Decisions` of fixed per-row plans (lists of model names per step)."""
    spans = [hand_in_and_back(p) for p in plans]
    return Decisions(list(grid), plans, [[] for _ in plans], [[] for _ in plans], [h for h, _ in spans],
                     [b for _, b in spans], [None] * len(plans), list(reasons), shared=shared)


class Switch:
    """Several denoisers behind one: each call runs, per row, the model the plan names for its sigma.

    ``grid`` is the sigma grid of the run (the online controller needs it to know its steps; a
    fixed plan needs it only to record :attr:`decisions`). On the online controller's probe steps a
    call also runs Small on the rows it probes and feeds the divergence ``||v_L - v_S|| / ||v_L||``
    back: per sample (the batch mean for a shared decision), or, with ``pool_calls`` (a pipeline
    that splits a step's batch over several calls, cond and uncond), pooled over all the step's
    calls and fed back when the next step begins.
    """

    def __init__(self, models: Mapping[str, Any], plan: Plan, grid: Sequence[float] | torch.Tensor | None = None,
                 pool_calls: bool = False) -> None:
        # a guided model's conditional-only variant ("large:cond") is there for plans that name it
        self.models: dict[str, Denoiser] = with_unguided({k: as_denoiser(v) for k, v in models.items()}, plain=True)
        if plan.controller is not None and not {"large", "small"} <= set(self.models):
            raise ScheduleError(f"the online controller needs models named 'large' and 'small'; got "
                                f"{sorted(self.models)}")
        for schedule in dict.fromkeys(plan.schedules + tuple(s for _, s, _ in plan.stored)):
            schedule.check_models(self.models)
        self.plan, self.pool_calls = plan, pool_calls
        self.grid: list[float] | None = None
        self.decisions: Decisions | None = None
        self.names: list[str] = []  # the model of each sample in the last call
        self._controller: OnlineController | None = None
        self._step: tuple[int, list[str]] | None = None  # the controller's step in progress and its models
        self._last_sigma: float | None = None
        self._reason: str | None = None
        self._probed = False
        self._pooled = [0.0, 0.0]  # sum ||v_L - v_S||^2, sum ||v_L||^2 over the step's calls
        # A scheduler that casts timesteps to integers asks its model about timestep / 1000, not the step's
        # sigma: the sigma of each call -> the step's sigma, so routing is by step as in a pipeline
        # (set by the sampler that runs the switch, adaptive.samplers).
        self.step_sigma: dict[float, float] = {}
        if grid is not None:
            self.start(grid)

    def start(self, grid: Sequence[float] | torch.Tensor, reason: str | None = None) -> None:
        """Begin a run on ``grid``: fresh controller state, decisions recorded from here."""
        self.grid, self._reason = [float(s) for s in grid], reason
        self._step, self._last_sigma, self._probed, self._pooled = None, None, False, [0.0, 0.0]
        if self.plan.controller is not None:
            stored = {r: (s.step_models(self.grid), why) for r, s, why in self.plan.stored}
            self._controller = OnlineController(self.plan.controller, self.grid, self.plan.rows, self.plan.shared,
                                                stored)
            self.decisions = self._controller.decisions
        else:
            reasons = [reason] * self.plan.rows if reason is not None else list(self.plan.reasons)
            for schedule in dict.fromkeys(self.plan.schedules):  # a stage with no step here is skipped: said
                idle = schedule.idle_stages(self.grid)
                if idle:
                    skipped = ", ".join(f"the {s.model} stage (sigma {s.sigma_lo:.3g} to {s.sigma_hi:.3g})" for s in idle)
                    note = f"{skipped} gets no step on this grid (steps start at {_starts(self.grid)}) and is skipped"
                    warnings.warn(f"{schedule}: {note}; move the boundary or use more steps", stacklevel=4)
                    reasons = [f"{r}; {note}" if s == schedule else r for r, s in zip(reasons, self.plan.schedules)]
            self.decisions = plan_decisions(self.grid, [s.step_models(self.grid) for s in self.plan.schedules],
                                            reasons, self.plan.shared)

    def step_of(self, sigma: float) -> int:
        """The step of the run's grid that starts at ``sigma``."""
        assert self.grid is not None
        starts = self.grid[:-1]
        i = min(range(len(starts)), key=lambda k: abs(starts[k] - sigma))
        if abs(starts[i] - sigma) > 1e-6:
            raise SigmaGridError(f"the online controller decides per step of the grid it runs on; sigma {sigma:g} "
                                 f"starts no step of it ({', '.join(f'{s:.4g}' for s in starts[:8])}, ...)")
        return i

    def route(self, sigma: float) -> list[str]:
        """The model of each controlled row for a call at ``sigma`` (advances the online controller)."""
        if self._last_sigma is not None and sigma > self._last_sigma and self.grid is not None:
            self.start(self.grid, self._reason)  # sigma rose again: a new run
        self._last_sigma = sigma
        if self._controller is None:
            return [s.model_for(sigma) for s in self.plan.schedules]
        if self.grid is None:
            raise SigmaGridError("the online controller needs the sigma grid of the run (Switch(..., grid))")
        i = self.step_of(sigma)
        if self._step is not None and i == self._step[0]:
            return self._step[1]
        self._close_pooled()
        first = 0 if self._step is None else self._step[0] + 1
        names: list[str] = []
        for k in range(first, i + 1):  # steps never called stay unprobed
            names = self._controller.models_at(k)
        self._step, self._probed = (i, names), False
        return names

    def probe_rows(self) -> list[int]:
        """Controlled rows that want Small probed beside Large in the call at hand."""
        if self._controller is None or self._step is None or (self._probed and not self.pool_calls):
            return []
        return self._controller.probe_rows(self._step[0])

    def observe(self, divergence: Mapping[int, float]) -> None:
        """Feed the probes of the step at hand back to the controller (controlled row -> divergence)."""
        assert self._controller is not None and self._step is not None
        self._probed = True
        self._controller.observe(self._step[0], divergence)

    def pool(self, v_large: torch.Tensor, v_small: torch.Tensor) -> None:
        """Add one call's probe to the step's pooled divergence (``pool_calls``; fed back next step)."""
        v_large, v_small = v_large.float(), v_small.float()
        self._pooled[0] += float((v_large - v_small).pow(2).sum())
        self._pooled[1] += float(v_large.pow(2).sum())

    def _close_pooled(self) -> None:
        if self._pooled[1] > 0:
            self.observe({0: (self._pooled[0] / self._pooled[1]) ** 0.5})
        self._pooled = [0.0, 0.0]

    def per_sample(self, names: list[str], batch: int) -> list[str]:
        """The model of each sample of a batch of ``batch`` from the controlled rows' models."""
        if self.plan.shared:
            return names * batch
        if len(names) != batch:
            raise ScheduleError(f"this plan decides for {len(names)} samples, the call has {batch}; resolve the "
                                "plan for this batch")
        return names

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        value = float(sigma) if not isinstance(sigma, torch.Tensor) else float(sigma.detach().amax())
        value = self.step_sigma.get(value, value)
        batch = x.shape[0]
        self.names = self.per_sample(self.route(value), batch)
        v = self._run(self.names, x, sigma, cond)
        rows = self.probe_rows()  # Small beside Large: head probes and checks
        if rows:
            index = list(range(batch)) if self.plan.shared else rows
            probe = _call_rows(self.models["small"], x, sigma, cond, index)
            large = v[torch.as_tensor(index, device=v.device)]
            if self.pool_calls:
                self.pool(large, probe)
            else:
                values = rel_l2(probe, large).cpu().tolist()  # one host read per probe step
                self.observe({0: float(sum(values) / len(values))} if self.plan.shared else dict(zip(rows, values)))
        return v

    def within_step(self, sigma: float) -> Callable[..., torch.Tensor]:
        """A denoiser that runs, per row, the models chosen for the step starting at ``sigma`` (what
        a second-order solver's later evaluations of that step use), with no probes."""
        if self._controller is None:
            names = self.route(sigma)
        else:  # the controller's step at hand: decided by the step's first call
            if self._step is None or self._step[0] != self.step_of(sigma):
                raise SigmaGridError(f"within_step({sigma:g}) needs the step's first call first")
            names = self._step[1]

        def step_model(x: torch.Tensor, at: torch.Tensor | float, **cond: Any) -> torch.Tensor:
            return self._run(self.per_sample(names, x.shape[0]), x, at, cond)

        return step_model

    def _run(self, per_sample: list[str], x: torch.Tensor, sigma: torch.Tensor | float, cond: dict[str, Any]
             ) -> torch.Tensor:
        """Each model on the samples it is named for, assembled into one velocity."""
        batch = x.shape[0]
        v = torch.empty_like(x) if len(set(per_sample)) > 1 else None
        for name in dict.fromkeys(per_sample):
            rows = [b for b in range(batch) if per_sample[b] == name]
            out = _call_rows(self.models[name], x, sigma, cond, rows)
            if v is None:
                v = out
            else:
                v[torch.as_tensor(rows, device=x.device)] = out
        assert v is not None
        return v


def _call_rows(model: Denoiser, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict[str, Any], rows: list[int]
               ) -> torch.Tensor:
    """``model`` on the samples ``rows`` of the batch (the whole batch without indexing when all)."""
    batch = x.shape[0]
    if len(rows) != batch:
        index = torch.as_tensor(rows, device=x.device)
        x, cond = x[index], select_rows(cond, batch, rows)
        if isinstance(sigma, torch.Tensor) and sigma.ndim and sigma.shape[0] == batch:
            sigma = sigma[index.to(sigma.device)]
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.full((x.shape[0],), sigma, device=x.device)
    return model(x, sigma, **cond)


__all__ = ["Plan", "Switch", "plan_decisions"]
