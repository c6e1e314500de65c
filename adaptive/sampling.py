"""Flow-matching samplers over a stage schedule, and the sigma grid.

Samplers are short stateless functions: the grid is a tensor, the schedule decides the model per
step, and an optional ``callback(info)`` sees every step (``i, sigma, sigma_next, x, v,
model_name``). Step decisions are made once on the host before the loop, so the loop adds no
host-device synchronisation beyond what the models do.

Example:
    >>> import torch
    >>> from adaptive import ModelPair, Schedule, sample, sigmas
    >>> pair = ModelPair(lambda x, s: x, lambda x, s: x)   # velocity of x0 = 0
    >>> out = sample(pair, torch.ones(2, 3), sigmas(4), Schedule.lsl(0.8, 0.3))
    >>> out.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

import torch

from adaptive.controller import ControllerConfig, Decisions, OnlineController
from adaptive.denoisers import Denoiser, as_denoiser, select_rows
from adaptive.errors import NonFiniteVelocityError, ScheduleError
from adaptive.metrics import rel_l2
from adaptive.pair import ModelPair
from adaptive.profiles import Profile, prompt_key
from adaptive.schedule import Schedule, check_grid, euler_step, shift_sigma, sigmas

Callback = Callable[[dict[str, Any]], None]
Models = ModelPair | Mapping[str, Denoiser]


def _models(models: Models) -> dict[str, Denoiser]:
    if isinstance(models, ModelPair):
        return models.models
    return {k: as_denoiser(v) for k, v in models.items()}


def _static_plan(models: Models, sigmas: torch.Tensor, schedule: Schedule | str | None, noise: torch.Tensor,
                 cond: dict[str, Any]) -> tuple[list[float], list[str]]:
    """One plan for the whole batch (used by Heun, which needs the same model for both stages)."""
    grid = check_grid(sigmas)
    schedule = Schedule.large_only() if schedule is None else schedule
    if isinstance(schedule, str) and schedule == "auto":
        profile = _resolve(models, sigmas, noise, cond)
        schedule = profile.schedule()
        warnings.warn(f"schedule='auto' with Heun: the stored profile ({profile.sampler}) was calibrated with Euler "
                      f"steps; Heun runs its sigma window as it is ({schedule}), not tuned for Heun's two calls "
                      "per step. Check it with `flowblend bench` (rows 8a/8b) or pass a Schedule.", stacklevel=3)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"this sampler takes an adaptive.Schedule, 'auto' or None, got {schedule!r}; the online "
                        "controller and per-prompt profiles run with adaptive.sample (Euler)")
    schedule.check_models(_models(models))
    return grid, schedule.step_models(grid)


def _resolve(models: Models, sigmas: torch.Tensor, noise: torch.Tensor, cond: dict[str, Any],
             need_controller: bool = False) -> Profile:
    from adaptive.auto import resolve

    if not isinstance(models, ModelPair):
        raise TypeError("schedule='auto' and 'online' need a ModelPair (its fingerprint keys the stored profile)")
    return resolve(models, sigmas, noise, cond, need_controller=need_controller)[1]


def _planner(models: Models, sigmas: torch.Tensor, schedule: Any, noise: torch.Tensor, cond: dict[str, Any],
             batch_decisions: str) -> RowPlans | OnlineController:
    """What decides the model of each row at each step: fixed plans or the online controller."""
    grid, batch = check_grid(sigmas), noise.shape[0]
    if batch_decisions not in ("split", "shared"):
        raise ValueError(f"batch_decisions must be 'split' (each sample decides) or 'shared' (one decision "
                         f"for the batch), got {batch_decisions!r}")
    fallback = ""
    if isinstance(schedule, str) and schedule == "online":
        profile = _resolve(models, sigmas, noise, cond, need_controller=True)
        schedule = ControllerConfig.from_dict(profile.controller)
        if schedule.fallback:  # not validated at calibration: the stored windows decide
            fallback, schedule = schedule.fallback, profile
            warnings.warn(f"the stored online controller is not used ({fallback}); running the stored "
                          "per-prompt windows", stacklevel=4)
    elif isinstance(schedule, str) and schedule == "auto":
        schedule = _resolve(models, sigmas, noise, cond)
    if isinstance(schedule, ControllerConfig):
        for name in ("large", "small"):
            if name not in _models(models):
                raise ScheduleError(f"the online controller needs models named 'large' and 'small'; got "
                                    f"{sorted(_models(models))}")
        rows = 1 if batch_decisions == "shared" else batch
        return OnlineController(schedule, grid, rows, shared=batch_decisions == "shared")
    if isinstance(schedule, Profile) and schedule.num_steps != len(grid) - 1:
        # Per-prompt windows are for the calibrated grid; on the recommended grid run its plan.
        schedule = schedule.schedule_for_steps(len(grid) - 1)
    if isinstance(schedule, Profile) and schedule.has_per_prompt:
        keys = [prompt_key(select_rows(cond, batch, [b])) for b in range(batch)]
        schedules = [schedule.schedule_for(k) for k in keys]
        known = [k in schedule.per_prompt["windows"] for k in keys]
        reasons = ["per-prompt boundaries" if seen else "pair-level boundaries (prompt not calibrated)"
                   for seen in known]
        if fallback:
            reasons = [f"{r}: the online controller failed its validation ({fallback})" for r in reasons]
    else:
        if isinstance(schedule, Profile):
            schedule = schedule.schedule()
        schedule = Schedule.large_only() if schedule is None else schedule
        if not isinstance(schedule, Schedule):
            raise TypeError("schedule must be an adaptive.Schedule, Profile, ControllerConfig, 'auto', 'online' "
                            f"or None, got {schedule!r}")
        schedules, reasons = [schedule] * batch, ["one schedule for the batch"] * batch
    for s in schedules:
        s.check_models(_models(models))
    return RowPlans(grid, [s.step_models(grid) for s in schedules], reasons)


class RowPlans:
    """Fixed per-row plans behind the same interface as :class:`~adaptive.controller.OnlineController`."""

    def __init__(self, grid: list[float], plans: list[list[str]], reasons: list[str]) -> None:
        self.shared = False
        self.decisions = Decisions(grid, plans, [[] for _ in plans], [[] for _ in plans],
                                   [_first(p, "small") for p in plans], [_back(p) for p in plans],
                                   [None] * len(plans), reasons)

    def models_at(self, i: int) -> list[str]:
        return [plan[i] for plan in self.decisions.models]

    def probe_rows(self, i: int) -> list[int]:
        return []

    def observe(self, i: int, divergence: Mapping[int, float]) -> None:
        return None


def _first(plan: list[str], name: str) -> int | None:
    return plan.index(name) if name in plan else None


def _back(plan: list[str]) -> int | None:
    first = _first(plan, "small")
    if first is None:
        return None
    rest = [i for i in range(first, len(plan)) if plan[i] != "small"]
    return rest[0] if rest else None


def _prepare(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, Any]) -> None:
    check_grid(sigmas)  # before any model call
    if not isinstance(noise, torch.Tensor) or noise.ndim < 2:
        raise ValueError("noise must be a tensor of shape (batch, *sample_shape)")
    if isinstance(models, ModelPair):
        models.check(noise, **cond)
        models.reset_caches()


CHECK_EVERY = 10


def check_finite(v: torch.Tensor, model_name: str, step: int) -> None:
    """Raise :class:`NonFiniteVelocityError` naming the model and step if ``v`` has NaN/Inf.

    One elementwise pass and one value read back from the device (a host sync), so samplers call
    it only on the steps :func:`finite_check_due` names.

    Example:
        >>> check_finite(torch.tensor([float("nan")]), "small", 3)
        Traceback (most recent call last):
        ...
        adaptive.errors.NonFiniteVelocityError: model 'small' returned NaN/Inf at step 3; ...
    """
    if not bool(torch.isfinite(v).all()):
        raise NonFiniteVelocityError(f"model {model_name!r} returned NaN/Inf at step {step}; check its dtype "
                                     "(fp16 overflows: try bf16 or fp32) and its inputs (NaN in the noise or "
                                     "the conditioning gives NaN everywhere)")


def finite_check_due(step: int, num_steps: int, check_every: int) -> bool:
    """Whether a sampler checks step ``step``'s velocity: the first and last steps and every
    ``check_every``-th one (``check_every=0``: never). NaN carries forward through ``x``, so the
    last step's check also catches one that arose between two checks.

    Example:
        >>> [i for i in range(30) if finite_check_due(i, 30, 10)]
        [0, 10, 20, 29]
    """
    if not isinstance(check_every, int) or check_every < 0:
        raise ValueError(f"check_every must be a non-negative integer (0: no checks), got {check_every!r}")
    return check_every > 0 and (step % check_every == 0 or step == num_steps - 1)


def _call_rows(model: Denoiser, x: torch.Tensor, sigma: float, cond: dict[str, Any], rows: list[int]
               ) -> torch.Tensor:
    """``model`` on the samples ``rows`` of the batch (the whole batch without indexing when all)."""
    batch = x.shape[0]
    if len(rows) != batch:
        x, cond = x[torch.as_tensor(rows, device=x.device)], select_rows(cond, batch, rows)
    return model(x, torch.full((x.shape[0],), sigma, device=x.device), **cond)


def _measure(planner: RowPlans | OnlineController, rows: list[int], batch: int, v: torch.Tensor,
             probe: torch.Tensor, index: list[int]) -> dict[int, float]:
    """Divergence ``||v_L - v_S|| / ||v_L||`` per controlled row (the batch mean for a shared decision)."""
    large = v[torch.as_tensor(index, device=v.device)]
    values = rel_l2(probe, large).cpu().tolist()  # one host read per probe step
    if planner.shared:
        return {0: float(sum(values) / len(values))}
    return dict(zip(rows, values))


@overload
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Any = None,
           callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split",
           return_decisions: Literal[False] = False, **cond: Any) -> torch.Tensor: ...


@overload
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Any = None,
           callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split", *,
           return_decisions: Literal[True], **cond: Any) -> tuple[torch.Tensor, Decisions]: ...


@torch.no_grad()
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Any = None,
           callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split",
           return_decisions: bool = False, **cond: Any) -> torch.Tensor | tuple[torch.Tensor, Decisions]:
    """Euler sampling (diffusers' FlowMatchEulerDiscrete step) with the model the schedule picks.

    ``schedule`` is one of:

    - ``None``: Large only; a :class:`Schedule`: the same stages for every sample;
    - ``"auto"``: the stored profile for this pair and grid (calibrated once on this batch if there
      is none); a profile with per-prompt boundaries gives each sample its prompt's window and
      unseen prompts the pair-level one. A :class:`~adaptive.Profile` directly does the same;
    - ``"online"``: the stored profile's online controller; or a
      :class:`~adaptive.controller.ControllerConfig` directly. Large runs until Small's probes agree
      with it, Small until the predicted return sigma, then Large again (see :mod:`adaptive.controller`).

    ``batch_decisions="split"`` lets every sample decide for itself (a step then calls each model
    on the samples that need it); ``"shared"`` makes one decision for the batch from the batch-mean
    divergence, so every step is one call of one model. Classifier-free guidance lives inside each
    model (:meth:`ModelPair.guided`), so cond and uncond of a sample always run on the same model.

    ``check_every=k`` (default 10) checks the velocity for NaN/Inf on the first step, every ``k``-th
    and the last (:func:`finite_check_due`; 0: never) and raises
    :class:`~adaptive.errors.NonFiniteVelocityError` naming the model and the step. A check is one
    elementwise pass and one host read: on 2 CPU cores it took 0.07 ms for a (4, 1, 8, 32, 32)
    velocity against about 150 ms per step of the embedded pair, so the 4 checks of a 30-step run
    cost under 0.01%; on a GPU each read also waits for the queued step (a bubble of about a kernel
    launch, not measured here), well under 1% for any step longer than a few ms. Returns the final
    ``x`` at sigma = ``sigmas[-1]``, and with ``return_decisions=True`` also the
    :class:`~adaptive.controller.Decisions` (which model ran each step and why).

    Example:
        >>> import torch
        >>> from adaptive import ControllerConfig
        >>> pair = ModelPair(lambda x, s: x, lambda x, s: 0.95 * x)   # Small 5% off everywhere
        >>> x, why = sample(pair, torch.ones(1, 2), sigmas(6), ControllerConfig(threshold=0.1, sigma_out=0.2),
        ...                 return_decisions=True)
        >>> why.summary()
        'row 0: LSSSSL  Small from step 1: smoothed divergence 0.050 <= 0.100; return predicted at sigma 0.200; back to Large at the predicted sigma_out 0.200'
    """
    _prepare(models, noise, sigmas, cond)
    planner = _planner(models, sigmas, schedule, noise, cond, batch_decisions)
    grid, table, batch = check_grid(sigmas), _models(models), noise.shape[0]
    expand = (lambda rows: list(range(batch)) if rows else []) if planner.shared else (lambda rows: list(rows))
    x = noise
    for i in range(len(grid) - 1):
        names = planner.models_at(i)
        per_sample = names * batch if planner.shared else names
        v = torch.empty_like(x) if len(set(per_sample)) > 1 else None
        for name in dict.fromkeys(per_sample):
            rows = [b for b in range(batch) if per_sample[b] == name]
            out = _call_rows(table[name], x, grid[i], cond, rows)
            if v is None:
                v = out
            else:
                v[torch.as_tensor(rows, device=x.device)] = out
        assert v is not None
        rows = planner.probe_rows(i)  # Small beside Large: head probes and checks
        if rows:
            index = expand(rows)
            extra = _call_rows(table["small"], x, grid[i], cond, index)
            planner.observe(i, _measure(planner, rows, batch, v, extra, index))
        if finite_check_due(i, len(grid) - 1, check_every):
            check_finite(v, "/".join(dict.fromkeys(per_sample)), i)
        if callback is not None:
            uniform = per_sample[0] if len(set(per_sample)) == 1 else "mixed"
            callback({"i": i, "sigma": grid[i], "sigma_next": grid[i + 1], "x": x, "v": v, "model_name": uniform,
                      "model_names": per_sample})
        x = euler_step(x, v, grid[i], grid[i + 1])
    return (x, planner.decisions) if return_decisions else x


@torch.no_grad()
def sample_heun(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Schedule | str | None = None,
                callback: Callback | None = None, check_every: int = CHECK_EVERY, **cond: Any) -> torch.Tensor:
    """Heun's second-order method (trapezoid on the velocity); the last step to sigma 0 is Euler.

    Both evaluations of a step use the step's model, so a stage boundary never mixes models inside
    a step. Costs two model calls per step except the last. ``check_every`` checks the step's
    first velocity as :func:`sample` does (first, every ``k``-th and last step; 0: never).

    Example:
        >>> import torch
        >>> v = lambda x, s: torch.ones_like(x)                     # v = noise - x0: x0 = noise - 1
        >>> round(float(sample_heun(ModelPair(v, v), torch.ones(1, 1), sigmas(8))[0, 0]), 6)
        0.0
    """
    _prepare(models, noise, sigmas, cond)
    grid, plan = _static_plan(models, sigmas, schedule, noise, cond)
    table = _models(models)
    x = noise
    for i, name in enumerate(plan):
        model = table[name]
        v = model(x, torch.full((x.shape[0],), grid[i], device=x.device), **cond)
        if finite_check_due(i, len(plan), check_every):
            check_finite(v, name, i)
        if callback is not None:
            callback({"i": i, "sigma": grid[i], "sigma_next": grid[i + 1], "x": x, "v": v, "model_name": name})
        x_euler = euler_step(x, v, grid[i], grid[i + 1])
        if grid[i + 1] == 0.0:
            x = x_euler
            continue
        v_next = model(x_euler, torch.full((x.shape[0],), grid[i + 1], device=x.device), **cond)
        x = euler_step(x, 0.5 * (v + v_next), grid[i], grid[i + 1])  # Heun: the step with the mean slope
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample, "heun": sample_heun}
