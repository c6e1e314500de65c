"""``schedule="auto"``: the stored profile for this pair, solver and grid, or a calibration once (the one place
a sampler calibrates; :func:`adaptive.plans.resolve_plan` is its only caller in the sampling path). It
returns the profile only: which schedules a profile gives is decided once, in :mod:`adaptive.plans`."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from adaptive.calibration import calibrate
from adaptive.errors import CalibrationError
from adaptive.pair import ModelPair
from adaptive.profiles import Profile, _grid, sampler_signature
from adaptive.profile_store import ProfileStore
from adaptive.samplers import Sampler
from adaptive.schedule import check_grid, shift_of

Solver = str | Sampler  # a Sampler (what calibration runs), or "euler"/"heun" for the Euler grid of ``shift``


def keyed(solver: Solver, num_steps: int, shift: float) -> tuple[str, list[float], str]:
    """The profile family, sigma grid and key (:meth:`Sampler.signature`) of ``num_steps`` steps of ``solver``."""
    if isinstance(solver, Sampler):
        return solver.family, solver.grid(num_steps), solver.signature(num_steps)
    return solver, _grid(num_steps, shift), sampler_signature(solver, num_steps, shift)


def lookup(pair: ModelPair, num_steps: int, shift: float, solver: Solver = "euler",
           store: ProfileStore | None = None, quiet: bool = False) -> Profile | None:
    """The stored profile for ``pair`` on ``solver`` over its grid of ``num_steps`` steps, matched by
    grid (:meth:`~adaptive.profile_store.ProfileStore.for_sigmas`); for another solver with none of
    its own, Euler's at the same shift, with one line saying so (``quiet``: the caller says it)."""
    store = store or ProfileStore()
    family, grid, signature = keyed(solver, num_steps, shift)
    profile = store.for_sigmas(pair, grid, family, signature)
    if profile is None and family != "euler":
        profile = store.for_grid(pair, num_steps, shift)
        if profile is not None and not quiet:
            warn_other_solver(profile, solver)
    return profile


def warn_other_solver(profile: Profile, solver: Solver) -> None:
    """Say, in one line, that ``solver`` runs a profile calibrated with Euler steps, and how to calibrate its own."""
    if isinstance(solver, Sampler):
        warnings.warn(f"no profile calibrated for {solver.signature(profile.num_steps)}: running the one calibrated "
                      f"with Euler steps ({profile.sampler}) by its sigma boundaries; calibrate with "
                      f"sampler={solver.name!r} (`flowblend calibrate --sampler {solver.name}`) for a plan measured on "
                      "this sampler", stacklevel=4)
        return
    name = solver.capitalize()
    warnings.warn(f"no profile calibrated for {solver}: the stored profile ({profile.sampler}) was calibrated with "
                  f"Euler steps; {name} runs its sigma windows (pair: {profile.schedule()}) and any online "
                  f"controller as they are, not tuned for {name}'s calls per step. Check it with `flowblend bench` (rows 8a/8b) or pass a Schedule.",
                  stacklevel=4)


def stored_profile(pair: ModelPair, sigmas: torch.Tensor, noise: torch.Tensor, cond: dict[str, Any],
                   store: ProfileStore | None = None, calibrate_if_missing: bool = True,
                   need_controller: bool = False, solver: Solver = "euler") -> Profile:
    """The stored profile for (pair, solver, grid), calibrating on this batch's prompts if needed.

    The one place a sampler calibrates: announced first (what, on what, the store path it writes)
    and with a progress bar; ``need_controller`` (``schedule="online"``) makes it fit the online
    controller too (``per_prompt=True``), so the stored profile serves the mode that asked for it.
    A :class:`~adaptive.samplers.Sampler` with no profile of its own runs Euler's of the same grid
    when one is stored (said in one line) and otherwise calibrates on itself; Heun (``"heun"``) is
    told it runs Euler's profile. Which schedules the profile gives is :func:`adaptive.plans.resolve_plan`'s to decide.
    """
    grid = check_grid(sigmas)
    if isinstance(solver, Sampler):
        shift: float | None = solver.shift
    else:
        shift = shift_of(grid)  # closed form; only to name (and, if none is stored, calibrate) this grid
    if shift is None:
        raise CalibrationError("schedule='auto' needs a grid made by adaptive.sigmas(num_steps, shift) (or "
                               "diffusers' FlowMatchEulerDiscreteScheduler); calibrate custom grids by hand")
    store = store or ProfileStore()
    signature = keyed(solver, len(grid) - 1, shift)[2]
    profile = lookup(pair, len(grid) - 1, shift, solver, store)
    if profile is None:
        if not calibrate_if_missing:
            raise CalibrationError(f"no stored profile for this pair and {signature}; run `flowblend calibrate`")
        rows = min(4, noise.shape[0])
        conds = [{k: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == noise.shape[0]
                      else v) for k, v in cond.items()} for i in range(rows)]
        warnings.warn(f"no stored profile for this pair and {signature}: calibrating once on this batch's first "
                      f"{rows} prompts x 2 seeds ({'per prompt, with the online controller, ' if need_controller else ''}"
                      f"the grid you gave) and storing it in {store.root.resolve()} for later runs; run "
                      "`flowblend calibrate` on representative prompts for a better profile", stacklevel=4)
        profile = calibrate(pair, conds, num_steps=len(grid) - 1, seeds=[0, 1], shift=shift,
                            shape=tuple(noise.shape[1:]), store=store, progress=True, per_prompt=need_controller,
                            search_steps=False,  # the caller fixed the grid
                            sampler=solver if isinstance(solver, Sampler) else None)
        if not isinstance(solver, Sampler) and solver != "euler":
            warn_other_solver(profile, solver)
    warn_if_cheaper(profile, len(grid) - 1)
    warn_if_other_metric(profile, pair)
    return profile


def pipeline_profile(pair: ModelPair, mode: str, steps: int | None, shift: float | None, solver: Solver = "euler",
                     store: ProfileStore | None = None) -> Profile:
    """The stored profile a pipeline call of ``mode`` runs: looked up by its ``steps`` and scheduler
    ``shift`` (a pipeline call cannot calibrate: a missing profile is an error that says how to)."""
    if steps is None or shift is None:
        raise CalibrationError(f"blend(..., {mode!r}) needs num_inference_steps= (the steps you will pass to the "
                               "pipeline) to pick the profile calibrated for that grid")
    profile = lookup(pair, steps, shift, solver, store, quiet=True)  # the drop-in says which grid it runs
    if profile is None:
        signature = keyed(solver, steps, shift)[2]
        option = f" --sampler {solver.name}" if isinstance(solver, Sampler) and not solver.is_euler else ""
        raise CalibrationError(f"no stored profile for this pair and {signature}; calibrate it once with "
                               f"`flowblend calibrate --large DIR --small DIR --embeddings E.safetensors --shape ...{option}` "
                               "(same guidance scale) or adaptive.calibrate(..., sampler=pipe.scheduler), then blend "
                               "again")
    warn_if_cheaper(profile, steps)  # the pipeline's steps are the caller's: say if fewer pay
    return profile


def warn_if_other_metric(profile: Profile, pair: ModelPair) -> bool:
    """Warn when ``profile`` was judged by another metric than the pair's own (e.g. a profile from
    before the pair's metric changed): its plan met a target the pair no longer uses."""
    metric = pair.metric
    name = getattr(metric, "name", None) if metric is not None else "latent_structure"
    judged = profile.quality.metric
    if name is None or judged is None or judged == name:
        return False
    warnings.warn(f"the stored profile was calibrated on metric {judged!r}, the pair now judges with {name!r}; "
                  "recalibrate (`flowblend calibrate`) before trusting its plan", stacklevel=2)
    return True


_WARNED: set[tuple[str, str, int]] = set()  # (pair, profile, steps) already warned


def warn_if_cheaper(profile: Profile, steps: int) -> bool:
    """Warn (once per profile and step count) when the stored frontier holds a cheaper plan that
    meets the target than the ``steps`` the caller fixed, naming it; the caller's grid still runs.

    Example:
        >>> import warnings
        >>> p = Profile(pair_fingerprint="f", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.0,
        ...             sigma_out=0.0, quality={"metric": "ssim", "target": 0.95},
        ...             plan={"steps": 9, "start": 0, "stop": 0, "quality": 0.96, "cost": 0.3, "sigma_in": 0.0,
        ...                   "sigma_out": 0.0})
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     warn_if_cheaper(p, 30), warn_if_cheaper(p, 30)
        (True, False)
        >>> "Large with 9 of 30 steps" in str(seen[0].message)
        True
    """
    key = (profile.pair_fingerprint, profile.sampler + profile.created, steps)
    if profile.steps >= steps or profile.num_steps != steps or key in _WARNED:
        return False
    _WARNED.add(key)
    warnings.warn(f"a cheaper plan meets the quality target: {profile.decision} Running the {steps} steps you "
                  f"asked for with the best {steps}-step plan measured; sample on sigmas({profile.steps}, "
                  f"{profile.shift:g}) (a pipeline: num_inference_steps={profile.steps}) to take the cheaper one.",
                  stacklevel=2)
    return True
