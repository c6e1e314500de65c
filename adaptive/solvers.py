"""The step loops: short, stateless, over one denoiser ``model(x, sigma, **cond) -> v``.

The grid is a tensor (or list) of sigmas; each loop hands the model the step's sigma as a float
(the contract accepts one, and the model switch reads it without a device round trip) and calls
``callback({"i", "sigma", "sigma_next", "x", "v"})`` once per step with the state before the step
and its first velocity. The model switch is such a denoiser (:class:`adaptive.switch.Switch`), so
blending needs no sampler of its own; :func:`adaptive.sample` and :func:`adaptive.sample_heun` are
these loops over a switch.

Example:
    >>> import torch
    >>> from adaptive.schedule import sigmas
    >>> v = lambda x, s: torch.ones_like(x)        # v = noise - x0: x0 = noise - 1
    >>> x0 = [solver(v, torch.ones(1, 1), sigmas(4)).item() for solver in (euler, heun)]
    >>> [abs(x) < 1e-6 for x in x0]
    [True, True]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from adaptive.schedule import check_grid, euler_step
from adaptive.switch import Switch

Callback = Callable[[dict[str, Any]], None]


@torch.no_grad()
def euler(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
          callback: Callback | None = None, **cond: Any) -> torch.Tensor:
    """Euler's method (diffusers' FlowMatchEulerDiscrete step)."""
    grid = check_grid(sigmas)
    for i in range(len(grid) - 1):
        v = model(x, grid[i], **cond)
        if callback is not None:
            callback({"i": i, "sigma": grid[i], "sigma_next": grid[i + 1], "x": x, "v": v})
        x = euler_step(x, v, grid[i], grid[i + 1])
    return x


@torch.no_grad()
def heun(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
         callback: Callback | None = None, **cond: Any) -> torch.Tensor:
    """Heun's second-order method (trapezoid on the velocity); the last step to sigma 0 is Euler.

    Both evaluations of a step use the step's model: a switch is asked for the models of the step
    (``within_step``) for the second one, so a stage boundary never falls inside a step.
    """
    grid = check_grid(sigmas)
    for i in range(len(grid) - 1):
        v = model(x, grid[i], **cond)
        if callback is not None:
            callback({"i": i, "sigma": grid[i], "sigma_next": grid[i + 1], "x": x, "v": v})
        x_euler = euler_step(x, v, grid[i], grid[i + 1])
        if grid[i + 1] == 0.0:
            x = x_euler
            continue
        same = model.within_step(grid[i]) if isinstance(model, Switch) else model
        v_next = same(x_euler, grid[i + 1], **cond)
        x = euler_step(x, 0.5 * (v + v_next), grid[i], grid[i + 1])  # the step with the mean slope
    return x


def trajectory(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
               callback: Callback | None = None, **cond: Any) -> list[torch.Tensor]:
    """:func:`euler`, keeping every state: ``states[i]`` is x at ``sigmas[i]`` (``states[-1]`` the
    result). The probe and calibration's replays step with it; ``callback`` sees each step as in
    :func:`euler`.

    Example:
        >>> import torch
        >>> states = trajectory(lambda x, s: torch.ones_like(x), torch.ones(1), [1.0, 0.5, 0.0])
        >>> [round(s.item(), 2) for s in states]
        [1.0, 0.5, 0.0]
    """
    states: list[torch.Tensor] = []

    def keep(step: dict[str, Any]) -> None:
        states.append(step["x"])
        if callback is not None:
            callback(step)

    states.append(euler(model, x, sigmas, keep, **cond))
    return states


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"euler": euler, "heun": heun}

__all__ = ["SOLVERS", "euler", "heun", "trajectory"]
