"""Plans over a pool, stored and found like a pair's profile (Wan 2.2's experts plus a Small).

:func:`calibrate_pool` runs :func:`~adaptive.calibration.segments.find_plan` on a pool and stores
the plan it finds as a :class:`PoolProfile`, keyed by every member (its weights' fingerprint, without
guidance) with its guidance scale and by the sampler signature; ``blend(pipe, small, "auto")`` on a
Wan 2.2 pipeline and ``sample(pool, ..., "auto")`` find it again. A pool profile of other members,
scales or expert boundary is refused by name. Pool profiles live in ``pools/`` of the profile store.

Example:
    >>> import tempfile, torch
    >>> from adaptive import Pool, Schedule, sample, sigmas
    >>> from adaptive.calibration.segments import window
    >>> pool = Pool.of({"large": lambda x, s: -x, "small": lambda x, s: -x}, costs={"large": 1.0, "small": 0.2})
    >>> store = tempfile.mkdtemp()
    >>> found = calibrate_pool(pool, [{}], [window("small", replaces=("large",))], num_steps=6, shape=(3,),
    ...                        n_trials=4, store=store)
    >>> found.plan.fraction < 0.5                               # Small == Large: Small takes most steps
    True
    >>> x = sample(pool, torch.ones(1, 3), sigmas(6), load_pool_plan(pool, sigmas(6), store=store))
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from adaptive.errors import CalibrationError, PairMismatchError, ProfileError
from adaptive.profile_store import ProfileStore, safe_key
from adaptive.profiles import atomic_write, models_fingerprint
from adaptive.schedule import Schedule, is_unguided, shift_of


def _scale(value: float | None) -> float | None:
    """A guidance scale as a key holds it: None for no guidance (diffusers guides only above 1)."""
    return None if value is None or float(value) <= 1.0 else float(value)


def pool_key(members: Mapping[str, Any], guidance: Mapping[str, float | None]) -> str:
    """The key of a pool: each member's weights (:func:`~adaptive.profiles.models_fingerprint`, guidance
    adapters left out) with its guidance scale.

    Example:
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> pool_key({"high": a, "small": b}, {"high": 4.0}) == pool_key({"small": b, "high": a}, {"high": 4.0})
        True
        >>> pool_key({"high": a, "small": b}, {"high": 4.0}) == pool_key({"high": a, "small": b}, {"high": 3.0})
        False
    """
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(f"[{name}:{_scale(guidance.get(name))}]".encode())
        h.update(models_fingerprint({name: members[name]}).encode())
    return h.hexdigest()[:24]


def key_of(pool: Any) -> tuple[str, dict[str, float | None]]:
    """A pool's :func:`pool_key` and each member's guidance scale (a guided member's own)."""
    members = {name: model for name, model in pool.models.items() if not is_unguided(name)}
    scales = {name: _scale(getattr(model, "scale", None)) for name, model in members.items()}
    return pool_key(members, scales), scales


@dataclasses.dataclass(frozen=True)
class PoolProfile:
    """A plan over a pool as calibration found it: ``plan`` (a
    :class:`~adaptive.calibration.segments.FoundPlan`), the pool's key and members' guidance scales,
    the ``reference`` plan it was judged against (Wan 2.2: the experts alone) and the sampler signature."""

    pool_key: str
    sampler: str
    guidance: tuple[tuple[str, float | None], ...]
    reference: Schedule
    plan: Any  # FoundPlan (imported lazily: calibration imports this package's records)
    pool_name: str | None = None
    created: str = ""

    @property
    def decision(self) -> str:
        """The plan in words: its stages and compute against the reference plan, at what quality."""
        plan = self.plan
        fewer = plan.alternatives.get("large_fewer")
        beside = (f"; {self.reference.models[0]} alone with the steps that compute buys: quality "
                  f"{fewer['quality']:.4f}" if fewer and "quality" in fewer else "")
        return (f"{plan.schedule} on {plan.num_steps} steps: {plan.fraction:.2f} of the compute of {self.reference} at "
                f"quality {plan.quality:.4f} (target {plan.target}){beside}")

    def schedule(self) -> Schedule:
        return self.plan.schedule

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pool", "pool_key": self.pool_key, "sampler": self.sampler,
                "guidance": [[name, scale] for name, scale in self.guidance], "reference": self.reference.to_dict(),
                "plan": self.plan.to_dict(), "pool_name": self.pool_name, "created": self.created}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "pool profile") -> PoolProfile:
        from adaptive.calibration.segments import FoundPlan

        if not isinstance(data, Mapping) or data.get("kind") != "pool":
            raise ProfileError(f"{source}: not a pool profile (no \"kind\": \"pool\")")
        try:
            return cls(str(data["pool_key"]), str(data["sampler"]),
                       tuple((str(n), None if s is None else float(s)) for n, s in data["guidance"]),
                       Schedule.from_dict(data["reference"]), FoundPlan.from_dict(data["plan"]),
                       data.get("pool_name"), str(data.get("created", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise ProfileError(f"{source}: {err}") from err


def pool_path(store: ProfileStore, key: str, sampler: str, reference: Schedule) -> Path:
    """Where a pool profile lives: ``pools/<key>__<sampler>__<reference>.json`` in the profile store (the
    reference plan, e.g. the experts' boundary, by a short hash)."""
    ref = hashlib.sha256(reference.to_json().encode()).hexdigest()[:8]
    return store.root / "pools" / f"{safe_key(key)}__{safe_key(sampler)}__{ref}.json"


def save_pool_profile(store: ProfileStore, profile: PoolProfile, force: bool = False) -> Path:
    """Write ``profile`` atomically; a stored one that is cheaper at the same or a stricter target is kept
    (this one goes beside it as ``.rejected``, with a warning) unless ``force``."""
    path = pool_path(store, profile.pool_key, profile.sampler, profile.reference)
    old = read_pool_profile(path) if path.exists() else None
    if old is not None and not force and old.plan.target >= profile.plan.target and \
            old.plan.fraction < profile.plan.fraction:
        rejected = atomic_write(path.with_suffix(".json.rejected"), json.dumps(profile.to_dict(), indent=1) + "\n")
        warnings.warn(f"kept the stored pool profile {path} ({old.plan.fraction:.2f} of the reference's compute) over "
                      f"this one ({profile.plan.fraction:.2f}), written to {rejected}; force=True replaces it",
                      stacklevel=3)
        return rejected
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(profile.to_dict(), indent=1) + "\n")


def read_pool_profile(path: Path) -> PoolProfile:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProfileError(f"{path}: unreadable pool profile ({err})") from err
    return PoolProfile.from_dict(data, str(path))


def boundary_ratio_of(pipe: Any) -> float | None:
    """The pipeline's Wan 2.2 expert boundary (``boundary_ratio`` of its config), if it has one."""
    config: Any = getattr(pipe, "config", None)
    value = config.get("boundary_ratio") if hasattr(config, "get") else None
    return None if value is None else float(value)


def pipeline_pool(pipe: Any, small: Any, guidance_scale: float | None, guidance_scale_2: float | None = None,
                  uncond: Mapping[str, Any] | None = None, x: torch.Tensor | None = None, **cond: Any) -> Any:
    """The pool of a Wan 2.2 pipeline: ``"high"`` (its ``transformer``) guided at ``guidance_scale``,
    ``"low"`` (``transformer_2``) and ``"small"`` at ``guidance_scale_2`` (default ``guidance_scale``,
    as diffusers does; Small mostly replaces steps below the expert boundary), ``uncond`` the
    unconditional inputs; costs measured in FLOPs on ``x`` with ``cond`` (:meth:`Pool.of`). This is
    the pool ``blend(pipe, small, "auto", ...)`` looks up."""
    from adaptive.denoisers import GuidedDenoiser, as_denoiser
    from adaptive.pool import Pool

    low_scale = guidance_scale if guidance_scale_2 is None else guidance_scale_2
    models = {"high": pipe.transformer, "low": pipe.transformer_2, "small": small}
    scales = {"high": _scale(guidance_scale), "low": _scale(low_scale), "small": _scale(low_scale)}
    if any(s is not None for s in scales.values()) and uncond is None:
        raise CalibrationError("a guided pool needs uncond= (the unconditional inputs, e.g. "
                               "{'encoder_hidden_states': negative_prompt_embeds})")
    members: dict[str, Any] = {}
    for name, model in models.items():
        scale = scales[name]
        members[name] = as_denoiser(model) if scale is None else GuidedDenoiser(as_denoiser(model), scale, uncond)
    return Pool.of(members, x=x, **cond)


def calibrate_pool(pool: Any, conds: Sequence[Mapping[str, Any]], axes: Sequence[Any] | None = None, *,
                   num_steps: int, shape: Sequence[int], shift: float | None = None, seeds: Sequence[int] = (0, 1),
                   reference: Schedule | None = None, boundary_ratio: float | None = None, metric: Any = None,
                   target: float = 0.95, n_trials: int = 12, store: ProfileStore | str | Path | None = None,
                   save: bool = True, force: bool = False, name: str | None = None, small: Any = None,
                   guidance_scale: float | None = None, guidance_scale_2: float | None = None,
                   uncond: Mapping[str, Any] | None = None, sampler: Any = None) -> PoolProfile:
    """Find the cheapest plan over ``pool`` (:func:`~adaptive.calibration.segments.find_plan`) and store it.

    ``pool`` is a :class:`~adaptive.Pool`, or a Wan 2.2 pipeline with ``small`` (its pool is
    :func:`pipeline_pool` at ``guidance_scale``/``guidance_scale_2`` with ``uncond``; its
    ``boundary_ratio`` and its scheduler are taken from it), which is what
    ``blend(pipe, small, "auto", ...)`` then finds::

        calibrate_pool(pipe, conds, small=small, guidance_scale=4.0, guidance_scale_2=3.0,
                       uncond={"encoder_hidden_states": negative_embeds}, num_steps=40, shape=(16, 21, 60, 104))

    For Wan 2.2 (a pool of ``"high"``, ``"low"`` and ``"small"``) give ``boundary_ratio`` (the
    pipeline's): the reference is the experts alone (:meth:`Schedule.experts`), and ``axes`` default
    to Small's window between or inside the experts, then the guidance interval when the members are
    guided. Every other argument is :func:`find_plan`'s; the plan is judged on ``sampler``'s steps (a
    name, a diffusers flow scheduler or a :class:`~adaptive.samplers.Sampler`; a pipeline's own
    scheduler by default, else Euler at ``shift``, default 1) and stored under that sampler's signature.
    Returns the :class:`PoolProfile` (stored in ``store`` with ``save``).
    """
    from adaptive.calibration.segments import GUIDANCE, find_plan, window
    from adaptive.samplers import sampler_for

    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise CalibrationError(f"num_steps is the step count the pipeline runs (one integer; the profile is stored "
                               f"for it), got {num_steps!r}")
    if hasattr(pool, "transformer_2") and hasattr(pool, "scheduler"):  # a Wan 2.2 pipeline
        from adaptive.samplers import scheduler_shift

        pipe = pool
        if small is None or boundary_ratio_of(pipe) is None:
            raise CalibrationError("calibrate_pool(pipe, ...) is for a Wan 2.2 pipeline (transformer_2 and "
                                   "boundary_ratio) and needs small= (the Small transformer)")
        boundary_ratio = boundary_ratio_of(pipe) if boundary_ratio is None else boundary_ratio
        shift = scheduler_shift(pipe.scheduler) if shift is None else shift
        sampler = pipe.scheduler if sampler is None else sampler  # judged on the solver the pipeline runs
        first = conds[0] if conds else {}
        pool = pipeline_pool(pipe, small, guidance_scale, guidance_scale_2, uncond,
                             x=torch.zeros((1, *shape), dtype=pipe.transformer.dtype,
                                           device=pipe.transformer.device), **first)
    try:
        solver = sampler_for(sampler, shift)
    except ValueError as err:
        raise CalibrationError(f"sampler: {err}") from err
    if boundary_ratio is not None:
        if reference is not None:
            raise CalibrationError("give reference= or boundary_ratio=, not both")
        reference = Schedule.experts(boundary_ratio)
    if axes is None:
        if not {"high", "low", "small"} <= set(pool):
            raise CalibrationError(f"axes= names the windows to search for this pool ({sorted(pool)}); they default "
                                   "only for Wan 2.2's pool of 'high', 'low' and 'small'")
        guided = any(scale is not None for scale in key_of(pool)[1].values())
        axes = [window("small", replaces=("high", "low"))] + ([GUIDANCE] if guided else [])
    if reference is None and {"high", "low"} <= set(pool):
        raise CalibrationError("a pool with two experts is judged against the experts alone: give boundary_ratio= "
                               "(the pipeline's config.boundary_ratio)")
    store = store if isinstance(store, ProfileStore) else ProfileStore(store)
    if save:
        store.check_writable()
    found = find_plan(pool, conds, axes, num_steps=num_steps, shift=solver.shift, seeds=seeds, shape=shape,
                      reference=reference, metric=metric, target=target, n_trials=n_trials, sampler=solver)
    key, scales = key_of(pool)
    profile = PoolProfile(key, solver.signature(found.num_steps), tuple(sorted(scales.items())),
                          reference or Schedule.large_only(pool.reference), found, name,
                          datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if save:
        save_pool_profile(store, profile, force)
    return profile


def find_pool_profile(key: str, grid: Sequence[float], sampler: Any = None, store: ProfileStore | None = None,
                      what: str = "this pool", reference: Schedule | None = None) -> PoolProfile:
    """The stored pool profile of ``key`` for ``grid``: the sampler's own (``sampler`` a
    :class:`~adaptive.samplers.Sampler`), else the Euler one of the same steps and shift, said in one
    line; judged against ``reference`` when given (else the only one stored); a clear error when none is."""
    from adaptive.samplers import Sampler

    store = store or ProfileStore()
    n = len(grid) - 1
    signatures = []
    if isinstance(sampler, Sampler):
        signatures.append(sampler.signature(n))
    shift = sampler.shift if isinstance(sampler, Sampler) else shift_of(list(grid))
    euler = Sampler.of("euler", shift).signature(n) if shift is not None else None
    if euler is not None and euler not in signatures:
        signatures.append(euler)
    for signature in signatures:
        found = sorted((store.root / "pools").glob(f"{safe_key(key)}__{safe_key(signature)}__*.json"))
        if reference is not None and pool_path(store, key, signature, reference) in found:
            found = [pool_path(store, key, signature, reference)]
        if len(found) > 1:
            raise CalibrationError(f"several pool profiles of {what} for {signature} (other reference plans: "
                                   f"{', '.join(p.name for p in found)}); name the one to run (PoolProfile)")
        if found:
            if signature != signatures[0]:
                warnings.warn(f"no pool profile for {signatures[0]}: running the one calibrated with Euler steps "
                              f"({signature}) by its sigma boundaries on this grid", stacklevel=3)
            return read_pool_profile(found[0])
    raise CalibrationError(f"no stored pool profile for {what} and {signatures[0] if signatures else 'this grid'} "
                           f"(key {key}) in {store.root}; calibrate it once with adaptive.calibrate_pool(pool, conds, "
                           f"num_steps={n}, shift=..., shape=..., boundary_ratio=...) with the same members and "
                           "guidance scales")


def load_pool_plan(pool: Any, grid: Sequence[float] | torch.Tensor, store: ProfileStore | str | Path | None = None
                   ) -> Schedule:
    """The stored plan for ``pool`` on ``grid`` (what ``sample(pool, ..., "auto")`` runs)."""
    store = store if isinstance(store, ProfileStore) else ProfileStore(store)
    values = grid.tolist() if isinstance(grid, torch.Tensor) else [float(s) for s in grid]
    return find_pool_profile(key_of(pool)[0], values, None, store).schedule()


def check_pool_profile(profile: PoolProfile, key: str, reference: Schedule | None = None) -> None:
    """Refuse ``profile`` for a pool of another key (members or guidance) or expert boundary, naming both."""
    name = f"{profile.pool_name!r} ({profile.pool_key})" if profile.pool_name else profile.pool_key
    if profile.pool_key != key:
        raise PairMismatchError(f"the pool profile of {name} was calibrated on other members or guidance scales than "
                                f"this pool ({key}: {dict(profile.guidance)} there); calibrate this pool "
                                "(adaptive.calibrate_pool) or pass its plan as a Schedule on purpose")
    if reference is not None and profile.reference != reference and \
            not math.isclose(_boundary(profile.reference), _boundary(reference)):
        raise PairMismatchError(f"the pool profile of {name} was judged against {profile.reference}, this pipeline "
                                f"runs {reference}; calibrate with this boundary_ratio")


def _boundary(schedule: Schedule) -> float:
    return schedule.stages[0].sigma_lo if len(schedule.stages) > 1 else 0.0


__all__ = ["PoolProfile", "boundary_ratio_of", "calibrate_pool", "check_pool_profile", "find_pool_profile", "key_of",
           "load_pool_plan", "pipeline_pool", "pool_key", "pool_path", "read_pool_profile", "save_pool_profile"]
