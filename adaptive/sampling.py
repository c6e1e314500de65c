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

from collections.abc import Callable, Mapping
from typing import Any

import torch

from adaptive.denoisers import Denoiser, as_denoiser
from adaptive.errors import NonFiniteVelocityError
from adaptive.pair import ModelPair
from adaptive.schedule import Schedule, check_grid

Callback = Callable[[dict[str, Any]], None]
Models = ModelPair | Mapping[str, Denoiser]


def shift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """``shift * s / (1 + (shift - 1) * s)``: the resolution shift of SD3, Wan and LTX."""
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
    if not shift > 0:
        raise ValueError(f"shift must be positive, got {shift!r}")
    lowest = shift_sigma(1.0 / num_train_timesteps, shift)  # diffusers shifts its sigma_min twice
    grid = torch.as_tensor(shift_sigma(torch.linspace(1.0, lowest, num_steps, dtype=torch.float64), shift))
    return torch.cat([grid, grid.new_zeros(1)]).to(torch.float32)


def _models(models: Models) -> dict[str, Denoiser]:
    if isinstance(models, ModelPair):
        return models.models
    return {k: as_denoiser(v) for k, v in models.items()}


def _plan(models: Models, sigmas: torch.Tensor, schedule: Schedule | str | None, noise: torch.Tensor,
          cond: dict[str, Any]) -> tuple[list[float], list[str]]:
    grid = check_grid(sigmas)
    schedule = Schedule.large_only() if schedule is None else schedule
    if schedule == "auto":
        from adaptive.auto import resolve

        if not isinstance(models, ModelPair):
            raise TypeError("schedule='auto' needs a ModelPair (its fingerprint keys the stored profile)")
        schedule = resolve(models, sigmas, noise, cond)[0]
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an adaptive.Schedule, 'auto' or None, got {schedule!r}")
    schedule.check_models(_models(models))
    return grid, schedule.step_models(grid)


def _prepare(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, Any]) -> None:
    check_grid(sigmas)  # before any model call
    if not isinstance(noise, torch.Tensor) or noise.ndim < 2:
        raise ValueError("noise must be a tensor of shape (batch, *sample_shape)")
    if isinstance(models, ModelPair):
        models.check(noise, **cond)
        models.reset_caches()


def check_finite(v: torch.Tensor, model_name: str, step: int) -> None:
    """Raise :class:`NonFiniteVelocityError` naming the model and step if ``v`` has NaN/Inf.

    This reads one value back from the device, so samplers call it only every ``check_every`` steps.
    """
    if not bool(torch.isfinite(v).all()):
        raise NonFiniteVelocityError(f"model {model_name!r} returned NaN/Inf at step {step}; check its dtype "
                                     "(fp16 overflows: try bf16 or fp32) and its inputs")


@torch.no_grad()
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Schedule | str | None = None,
           callback: Callback | None = None, check_every: int = 0, **cond: Any) -> torch.Tensor:
    """Euler sampling (diffusers' FlowMatchEulerDiscrete step) with the model the schedule picks.

    ``schedule`` is a :class:`Schedule`, None (Large only) or ``"auto"``: the stored profile for
    this pair and grid, calibrated once on this batch's conditioning if there is none.

    ``check_every=k`` checks the velocity for NaN/Inf every ``k`` steps (0: never; each check is one
    host read). Returns the final ``x`` at sigma = ``sigmas[-1]``.
    """
    _prepare(models, noise, sigmas, cond)
    grid, plan = _plan(models, sigmas, schedule, noise, cond)
    table = _models(models)
    x = noise
    for i, name in enumerate(plan):
        sigma = torch.full((x.shape[0],), grid[i], device=x.device)
        v = table[name](x, sigma, **cond)
        if check_every and i % check_every == 0:
            check_finite(v, name, i)
        if callback is not None:
            callback({"i": i, "sigma": grid[i], "sigma_next": grid[i + 1], "x": x, "v": v, "model_name": name})
        x = x + (grid[i + 1] - grid[i]) * v
    return x


@torch.no_grad()
def sample_heun(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Schedule | str | None = None,
                callback: Callback | None = None, check_every: int = 0, **cond: Any) -> torch.Tensor:
    """Heun's second-order method (trapezoid on the velocity); the last step to sigma 0 is Euler.

    Both evaluations of a step use the step's model, so a stage boundary never mixes models inside
    a step. Costs two model calls per step except the last.
    """
    _prepare(models, noise, sigmas, cond)
    grid, plan = _plan(models, sigmas, schedule, noise, cond)
    table = _models(models)
    x = noise
    for i, name in enumerate(plan):
        model, dt = table[name], grid[i + 1] - grid[i]
        v = model(x, torch.full((x.shape[0],), grid[i], device=x.device), **cond)
        if check_every and i % check_every == 0:
            check_finite(v, name, i)
        if callback is not None:
            callback({"i": i, "sigma": grid[i], "sigma_next": grid[i + 1], "x": x, "v": v, "model_name": name})
        x_euler = x + dt * v
        if grid[i + 1] == 0.0:
            x = x_euler
            continue
        v_next = model(x_euler, torch.full((x.shape[0],), grid[i + 1], device=x.device), **cond)
        x = x + dt * 0.5 * (v + v_next)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample, "heun": sample_heun}
