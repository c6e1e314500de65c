"""Plans resolved at the edge: what the caller passed, plus a grid, into the :class:`~adaptive.switch.Plan`
the switch runs.

:func:`resolve_plan` is the one place where ``"auto"`` and ``"online"`` become a stored profile (or a
calibration, once, announced with the store path it writes and a progress bar: see
:mod:`adaptive.auto`), where a profile becomes per-prompt or pair-level schedules, and where a
controller config becomes the online controller. Samplers (:mod:`adaptive.sampling`) and the
diffusers drop-in (:mod:`adaptive.blend`) call it before their loop; nothing below it (the switch,
the solvers, the controller, the schedule) imports calibration.

Example:
    >>> from adaptive.schedule import Schedule, sigmas
    >>> plan = resolve_plan({"large": None, "small": None}, Schedule.lsl(0.8, 0.3), sigmas(4), batch=2)
    >>> plan.rows, plan.schedules[1], plan.reasons[0]
    (2, Schedule(large (0.8, 1], small (0.3, 0.8], large (0, 0.3]), 'one schedule for the batch')
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from adaptive.auto import pipeline_profile, stored_profile
from adaptive.controller import ControllerConfig
from adaptive.denoisers import select_rows
from adaptive.pair import ModelPair
from adaptive.pool import Pool
from adaptive.profiles import Profile, check_profile_pair, prompt_key
from adaptive.profile_store import ProfileStore
from adaptive.schedule import Schedule
from adaptive.switch import Plan

MODES = ("auto", "online")


def resolve_plan(models: ModelPair | Mapping[str, Any], schedule: Any, grid: Sequence[float] | torch.Tensor | None,
                 *, batch: int = 1, cond: Mapping[str, Any] | None = None, batch_decisions: str = "split",
                 solver: Any = "euler", noise: torch.Tensor | None = None, pipeline: bool = False,
                 shift: float | None = None, num_steps: int | None = None, store: Any = None,
                 guidance_scale: float | None = None) -> Plan:
    """The plan for ``schedule`` on ``grid``: one of ``None`` (Large only), a :class:`Schedule`, a
    :class:`~adaptive.Profile`, a :class:`~adaptive.controller.ControllerConfig`, ``"auto"`` or ``"online"``.

    For a sampler: ``batch`` rows, each with its prompt's profile window
    (``cond`` gives the prompts), the online controller per row or shared (``batch_decisions``);
    ``"auto"``/``"online"`` look up the profile for this pair, ``solver`` (a
    :class:`~adaptive.samplers.Sampler`, or ``"euler"``/``"heun"``) and grid (Euler's, said aloud,
    when ``solver`` has none) and calibrate once on ``noise``'s batch when none is stored.
    For a pipeline (``pipeline=True``; ``shift``: its scheduler's shift; ``num_steps``: the steps
    it will run; ``grid`` its sigmas when known; ``guidance_scale``: the scale it guides at, when
    known): one decision for the pipeline's batch, and a missing profile is an error that says how to
    calibrate (a pipeline call cannot calibrate). A profile given directly must be the pair's
    (:func:`~adaptive.profiles.check_profile_pair`).

    One pass: what the caller passed becomes its *source* once (:func:`_source`: a mode is looked up
    or calibrated, a profile checked), then the source becomes the plan once (:func:`_online` or
    :func:`_fixed`: the only place a profile is turned into schedules).
    """
    if batch_decisions not in ("split", "shared"):
        raise ValueError(f"batch_decisions must be 'split' (each sample decides) or 'shared' (one decision "
                         f"for the batch), got {batch_decisions!r}")
    steps = num_steps if num_steps is not None else None if grid is None else len(grid) - 1
    source, profile, fallback = _source(models, schedule, grid, steps, solver, noise, cond, pipeline, shift, store,
                                        guidance_scale)
    if isinstance(source, ControllerConfig):
        return _online(source, profile, grid, steps, batch, cond or {}, pipeline or batch_decisions == "shared")
    return _fixed(source, profile, steps, 1 if pipeline else batch, {} if pipeline else cond or {}, fallback,
                  pipeline)


def _source(models: Any, schedule: Any, grid: Any, steps: int | None, solver: Any, noise: torch.Tensor | None,
            cond: Mapping[str, Any] | None, pipeline: bool, shift: float | None, store: Any,
            guidance_scale: float | None) -> tuple[Any, Profile | None, str]:
    """What decides, once: ``(source, profile, fallback)`` with ``source`` None, a Schedule, a Profile
    or a ControllerConfig; ``profile`` the profile behind it; ``fallback`` why a stored controller is
    not used ("" when it is, or none was asked for)."""
    if schedule == "auto" and isinstance(models, Pool) and not pipeline:  # a pool's stored plan (calibrate_pool)
        from adaptive.pool_profiles import find_pool_profile, key_of

        assert grid is not None
        values = grid.tolist() if isinstance(grid, torch.Tensor) else [float(s) for s in grid]
        store = store if isinstance(store, ProfileStore) or store is None else ProfileStore(store)
        return find_pool_profile(key_of(models)[0], values, solver, store).schedule(), None, ""
    if isinstance(schedule, str) and schedule in MODES:
        if not isinstance(models, ModelPair):
            raise TypeError("schedule='auto' and 'online' need a ModelPair (its fingerprint keys the stored profile)")
        store = store if isinstance(store, ProfileStore) or store is None else ProfileStore(store)
        if pipeline:
            profile = pipeline_profile(models, schedule, steps, shift, solver, store)
        else:  # a sampler: its grid, calibrated once on its batch when nothing is stored
            assert grid is not None and noise is not None
            grid_t = grid if isinstance(grid, torch.Tensor) else torch.tensor(list(grid))
            profile = stored_profile(models, grid_t, noise, dict(cond or {}), store=store,
                                     need_controller=schedule == "online", solver=solver)
        if schedule == "auto":
            return profile, profile, ""
        config = ControllerConfig.from_dict(profile.controller or {})  # {}: none calibrated, said how to fit one
        if not config.fallback:
            return config, profile, ""
        warnings.warn(f"the stored online controller is not used ({config.fallback}); running the profile's stored "
                      "windows" + (" (one decision for the pipeline's batch)" if pipeline else ""), stacklevel=4)
        return profile, profile, config.fallback
    if isinstance(schedule, Profile):
        check_profile_pair(schedule, models, pipeline=pipeline, guidance_scale=guidance_scale)
        return schedule, schedule, ""
    if schedule is None or isinstance(schedule, (Schedule, ControllerConfig)):
        return schedule, None, ""
    raise TypeError("schedule must be an adaptive.Schedule, Profile, ControllerConfig, 'auto', 'online' "
                    f"or None, got {schedule!r}")


def _online(config: ControllerConfig, profile: Profile | None, grid: Any, steps: int | None, batch: int,
            cond: Mapping[str, Any], shared: bool) -> Plan:
    """The online controller's plan; rows whose prompt has its own window on this grid follow it."""
    if steps is None:
        raise ValueError("online blending needs num_inference_steps= (the steps you will pass to the pipeline)")
    stored = [] if shared else _calibrated_rows(profile, grid, batch, cond)
    if stored and len(stored) == batch:
        return Plan.fixed([s for _, s, _ in stored], [why for _, _, why in stored], profile=profile)
    return Plan.online(config, 1 if shared else batch, shared, profile, stored)


def _fixed(source: Schedule | Profile | None, profile: Profile | None, steps: int | None, rows: int,
           cond: Mapping[str, Any], fallback: str, shared: bool) -> Plan:
    """Fixed per-row schedules: a profile's per-prompt windows (a sampler on the calibrated grid), its
    plan for ``steps``, or one schedule for every row (``shared``: a pipeline's one decision)."""
    if not isinstance(source, Profile):
        return Plan.fixed([Schedule.large_only() if source is None else source] * rows, shared=shared,
                          profile=profile)
    per_prompt = not shared and source.has_per_prompt and (steps is None or steps == source.num_steps)
    if not per_prompt:
        # Per-prompt windows are for the calibrated grid; on another grid (or in a pipeline) run its plan.
        # A sampler on the calibrated grid runs the full grid's window (what a caller fixing the steps gets).
        full_grid = steps is None or (not shared and steps == source.num_steps)
        schedule = source.schedule() if steps is None or full_grid else source.schedule_for_steps(steps)
        return Plan.fixed([schedule] * rows, shared=shared, profile=profile)
    keys = _prompt_keys(cond, rows)
    reasons = ["per-prompt boundaries" if k in source.windows else
               "pair-level boundaries (prompt not calibrated)" for k in keys]
    if fallback:
        reasons = [f"{r}: the online controller failed its validation ({fallback})" for r in reasons]
    return Plan.fixed([source.schedule_for(k) for k in keys], reasons, profile=profile)


def _prompt_keys(cond: Mapping[str, Any], batch: int) -> list[str]:
    """Each row's :func:`~adaptive.profiles.prompt_key` (how per-prompt windows are found)."""
    return [prompt_key(select_rows(cond, batch, [b])) for b in range(batch)]


def _calibrated_rows(profile: Profile | None, grid: Sequence[float] | torch.Tensor | None, batch: int,
                     cond: Mapping[str, Any]) -> list[tuple[int, Schedule, str]]:
    """Rows whose prompt was calibrated with its own window on this very grid: they run it rather
    than the online controller (a window measured on the prompt beats a rule fitted on others). On
    another grid (a profile of the nearest grid) every row is the controller's."""
    if profile is None or not profile.has_per_prompt or grid is None or not profile.calibrated_on(grid):
        return []
    why = "per-prompt boundaries (a calibrated prompt: the online controller decides for prompts not calibrated)"
    return [(b, profile.schedule_for(key), why) for b, key in enumerate(_prompt_keys(cond, batch))
            if key in profile.windows]


__all__ = ["MODES", "resolve_plan"]
