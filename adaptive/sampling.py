"""Flow-matching samplers over a model pair: a plan, a switch, a loop.

:func:`sample` (Euler) and :func:`sample_heun` resolve what the caller passed into a plan at the
edge (:func:`adaptive.plans.resolve_plan`), put the pair behind one denoiser that picks the model
per sample from sigma (:class:`adaptive.switch.Switch`) and run a stateless loop over it
(:mod:`adaptive.solvers`); an optional ``callback(info)`` sees every step (``i, sigma, sigma_next,
x, v, model_name, model_names``). The loop hands the switch each sigma as a float, so deciding adds
no host-device synchronisation beyond what the models do (and the online controller's probe reads).

Example:
    >>> import torch
    >>> from adaptive import ModelPair, Schedule, sample, sigmas
    >>> pair = ModelPair(lambda x, s: x, lambda x, s: x)   # velocity of x0 = 0
    >>> out = sample(pair, torch.ones(2, 3), sigmas(4), Schedule.lsl(0.8, 0.3))
    >>> out.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, overload

import torch

from adaptive.controller import Decisions
from adaptive.denoisers import Denoiser, as_denoiser
from adaptive.errors import NonFiniteVelocityError, SigmaGridError
from adaptive.pair import ModelPair
from adaptive.plans import resolve_plan
from adaptive.samplers import Sampler, run_on, sampler_for, solve
from adaptive.schedule import check_grid, shift_sigma, sigmas
from adaptive.solvers import euler, heun
from adaptive.switch import Switch

Callback = Callable[[dict[str, Any]], None]
Models = ModelPair | Mapping[str, Denoiser]


def _models(models: Models) -> dict[str, Denoiser]:
    if isinstance(models, ModelPair):
        return models.models
    return {k: as_denoiser(v) for k, v in models.items()}


def _prepare(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, Any]) -> None:
    check_grid(sigmas)  # before any model call
    if not isinstance(noise, torch.Tensor) or noise.ndim < 2:
        raise ValueError("noise must be a tensor of shape (batch, *sample_shape)")
    if isinstance(models, ModelPair):
        models.check(noise, **cond)
        models.reset_caches()


def switch_for(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Any, cond: dict[str, Any],
               batch_decisions: str = "split", solver: Any = "euler") -> Switch:
    """The switch a sampler runs: ``schedule`` resolved for this batch and grid, over ``models``."""
    _prepare(models, noise, sigmas, cond)
    plan = resolve_plan(models, schedule, sigmas, batch=noise.shape[0], cond=cond, batch_decisions=batch_decisions,
                        solver=solver, noise=noise)
    return Switch(_models(models), plan, sigmas)


def instrumented(switch: Switch, num_steps: int, check_every: int, callback: Callback | None) -> Callback:
    """The loop's per-step callback: NaN/Inf checks (:func:`finite_check_due`), then ``callback``
    with the models of the step (``model_name``: one name, or "mixed"; ``model_names``: per sample)."""
    # Each step's per-sample finiteness stays on the device (no sync) until a check is due; a check
    # then names the step and model where a non-finite value first appeared, not the later one where
    # it was seen (NaN carries forward through x to every model after it).
    pending: list[tuple[int, list[str], torch.Tensor]] = []

    def on_step(info: dict[str, Any]) -> None:
        names = switch.names
        if check_every > 0:
            v = info["v"]
            pending.append((info["i"], names, torch.isfinite(v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1)
                                                             ).all(dim=1)))
        if finite_check_due(info["i"], num_steps, check_every):
            flags = torch.stack([f for _, _, f in pending])
            if not bool(flags.all()):
                first = int((~flags).any(dim=1).nonzero()[0])
                step, step_names, bad = pending[first]
                rows = (~bad).nonzero().flatten().tolist()
                culprits = [step_names[r] if r < len(step_names) else step_names[0] for r in rows]
                raise _non_finite("/".join(dict.fromkeys(culprits)), step)
            pending.clear()
        if callback is not None:
            callback({**info, "model_name": names[0] if len(set(names)) == 1 else "mixed", "model_names": names})
    return on_step


CHECK_EVERY = 10


def check_finite(v: torch.Tensor, model_name: str, step: int) -> None:
    """Raise :class:`NonFiniteVelocityError` naming the model and step if ``v`` has NaN/Inf.

    One elementwise pass and one value read back from the device (a host sync), so samplers call
    it only on the steps :func:`finite_check_due` names (the samplers keep each step's finiteness on
    the device in between, so the error names the step where it first appeared).

    Example:
        >>> check_finite(torch.tensor([float("nan")]), "small", 3)
        Traceback (most recent call last):
        ...
        adaptive.errors.NonFiniteVelocityError: model 'small' returned NaN/Inf at step 3; ...
    """
    if not bool(torch.isfinite(v).all()):
        raise _non_finite(model_name, step)


def _non_finite(model_name: str, step: int) -> NonFiniteVelocityError:
    return NonFiniteVelocityError(f"model {model_name!r} returned NaN/Inf at step {step}; check its dtype "
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


@overload
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor | int, schedule: Any = None,
           callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split",
           return_decisions: Literal[False] = False, *, sampler: Any = None, **cond: Any) -> torch.Tensor: ...


@overload
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor | int, schedule: Any = None,
           callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split", *,
           return_decisions: Literal[True], sampler: Any = None, **cond: Any) -> tuple[torch.Tensor, Decisions]: ...


@torch.no_grad()
def sample(models: Models, noise: torch.Tensor, sigmas: torch.Tensor | int, schedule: Any = None,
           callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split",
           return_decisions: bool = False, *, sampler: Any = None, **cond: Any
           ) -> torch.Tensor | tuple[torch.Tensor, Decisions]:
    """Sampling with the model the schedule picks: Euler steps on the grid ``sigmas`` (diffusers'
    FlowMatchEulerDiscrete step), or ``sampler``'s steps (``"unipc"``, ``"dpm++"``, ``"euler"`` or a
    diffusers flow scheduler: :class:`~adaptive.samplers.Sampler`) with ``sigmas`` its step count
    (or its own grid), the scheduler's history carried across model switches as in a pipeline.

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
    if sampler is None:
        if not isinstance(sigmas, torch.Tensor) and isinstance(sigmas, int):
            raise ValueError("sigmas is a step count only with sampler=...; give a grid, e.g. adaptive.sigmas(30, 3.0)")
        switch = switch_for(models, noise, sigmas, schedule, cond, batch_decisions)
        x = euler(switch, noise, sigmas, instrumented(switch, len(check_grid(sigmas)) - 1, check_every, callback),
                  **cond)
        return (x, switch.decisions) if return_decisions else x  # type: ignore[return-value]
    solver, grid = _sampler_grid(sampler, sigmas)
    n = len(grid) - 1
    switch = switch_for(models, noise, torch.tensor(grid), schedule, cond, batch_decisions,
                        solver=solver if not solver.is_euler else "euler")
    asked = solver.model_sigmas(n)
    if len(set(asked)) < n:  # integer timesteps: two steps the model cannot tell apart
        raise SigmaGridError(f"{solver} with {n} steps gives two steps the same integer timestep; use fewer steps")
    switch.step_sigma = dict(zip(asked, grid[:-1]))
    x = solve(switch, noise, run_on(solver, grid), 0, n, instrumented(switch, n, check_every, callback), **cond)
    return (x, switch.decisions) if return_decisions else x  # type: ignore[return-value]


def _sampler_grid(sampler: Any, sigmas: torch.Tensor | Sequence[float] | int) -> tuple[Sampler, list[float]]:
    """The sampler ``sample(..., sampler=...)`` names and its grid: ``sigmas`` a step count, or the grid
    itself (checked against the sampler's own, before any model call)."""
    solver = sampler_for(sampler)
    if isinstance(sigmas, int) and not isinstance(sigmas, bool):
        return solver, solver.grid(sigmas)
    grid = check_grid(sigmas)
    own = solver.grid(len(grid) - 1)
    if any(abs(a - b) > 1e-6 for a, b in zip(own, grid)):
        raise SigmaGridError(f"{solver} runs its own grid ({', '.join(f'{s:.4f}' for s in own[:4])}, ...), not the "
                             f"sigmas given; pass the step count ({len(grid) - 1}) instead")
    return solver, own


@torch.no_grad()
def sample_heun(models: Models, noise: torch.Tensor, sigmas: torch.Tensor, schedule: Any = None,
                callback: Callback | None = None, check_every: int = CHECK_EVERY, batch_decisions: str = "split",
                return_decisions: bool = False, **cond: Any) -> Any:
    """Heun's second-order method (trapezoid on the velocity); the last step to sigma 0 is Euler.

    ``schedule`` takes everything :func:`sample` takes (fixed schedules, profiles with per-prompt
    windows, ``"auto"``, ``"online"``, a controller config). Both evaluations of a step use the
    step's models, so a stage boundary never mixes models inside a step; the online controller
    probes on the step's first evaluation only. Profiles are looked up for Heun; with none stored
    for Heun, Euler's profile runs as it is and a warning says so (calibration runs Euler steps).
    Costs two model calls per step except the last. ``check_every`` checks the step's first
    velocity as :func:`sample` does (first, every ``k``-th and last step; 0: never).

    Example:
        >>> import torch
        >>> v = lambda x, s: torch.ones_like(x)                     # v = noise - x0: x0 = noise - 1
        >>> round(float(sample_heun(ModelPair(v, v), torch.ones(1, 1), sigmas(8))[0, 0]), 6)
        0.0
    """
    switch = switch_for(models, noise, sigmas, schedule, cond, batch_decisions, solver="heun")
    x = heun(switch, noise, sigmas, instrumented(switch, len(check_grid(sigmas)) - 1, check_every, callback), **cond)
    return (x, switch.decisions) if return_decisions else x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample, "heun": sample_heun}
