"""A diffusers drop-in: one module that wraps several transformers and runs a schedule.

Assign it to ``pipe.transformer`` of an unmodified ``WanPipeline`` or ``LTXPipeline`` (or use
:func:`blend`): on each forward call it reads the timestep the pipeline passes, finds the step of
the pipeline's scheduler grid it belongs to and calls the transformer the schedule (or the online
controller) names for that step. Any flow-matching scheduler works (Euler, UniPC and DPM-Solver++
with ``use_flow_sigmas=True``, ...): steps are matched by the scheduler's own timesteps, so a
scheduler that rounds timesteps to integers (UniPC, DPM-Solver) still lands on the right step.
Everything the pipeline reads from its transformer (``config``, ``dtype``, ``device``,
``cache_context`` and other methods) is the Large model's.

Example (tiny random models, as in the tests)::

    pipe = WanPipeline(...)                               # any Wan 2.1 pipeline, any flow scheduler
    blend(pipe, small_transformer, Schedule.lsl(0.85, 0.3))
    video = pipe(prompt_embeds=..., num_inference_steps=30).frames
    pipe.transformer.decisions.models[0]                  # the model of each of the 30 steps
    unblend(pipe)                                         # back to the Large model alone
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptive.controller import ControllerConfig, Decisions
from adaptive.denoisers import NUM_TRAIN_TIMESTEPS
from adaptive.errors import PairMismatchError, SigmaGridError
from adaptive.pair import ModelPair
from adaptive.plans import resolve_plan
from adaptive.pool_profiles import boundary_ratio_of
from adaptive.samplers import scheduler_shift
from adaptive.schedule import Schedule, base_of, check_grid, is_unguided, unguided
from adaptive.switch import Plan, Switch, plan_decisions

_SHARED_CONFIG_KEYS = ("in_channels", "out_channels", "patch_size", "patch_size_t", "text_dim", "caption_channels")


@dataclass(frozen=True)
class StepGrid:
    """The steps a scheduler runs: ``sigmas`` (``num_steps + 1`` values down to 0) and the
    ``timesteps`` it hands the transformer, one per step; ``scheduler`` names its class.

    Example:
        >>> steps = StepGrid((1.0, 0.9001, 0.5, 0.0), (999.0, 900.0, 500.0))
        >>> steps.step_of(900), steps.num_steps
        (1, 3)
    """

    sigmas: tuple[float, ...]
    timesteps: tuple[float, ...]
    scheduler: str = "scheduler"

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def step_of(self, timestep: float) -> int:
        """The step whose timestep is ``timestep`` (within rounding: int casts, bf16 timesteps)."""
        i = min(range(len(self.timesteps)), key=lambda k: abs(self.timesteps[k] - timestep))
        if not abs(self.timesteps[i] - timestep) <= max(1.0, 0.005 * abs(self.timesteps[i])):
            shown = ", ".join(f"{t:g}" for t in self.timesteps[:12]) + (", ..." if self.num_steps > 12 else "")
            raise SigmaGridError(
                f"the transformer was called with timestep {timestep:g}, which is no step of the {self.scheduler} "
                f"grid of {self.num_steps} steps (timesteps {shown}). Run the blended transformer inside the "
                "pipeline (it sets its scheduler's timesteps first), pass blend() the num_inference_steps you "
                "give the pipeline, and blend again after replacing pipe.scheduler")
        return i


def grid_of(scheduler: Any) -> StepGrid | None:
    """The grid ``scheduler`` is set to run now (after its ``set_timesteps``), or None when it is not
    a flow-matching grid of one call per step (sigmas in [0, 1], one more sigma than timesteps)."""
    sigmas, timesteps = getattr(scheduler, "sigmas", None), getattr(scheduler, "timesteps", None)
    if not isinstance(sigmas, torch.Tensor) or not isinstance(timesteps, torch.Tensor):
        return None
    if sigmas.ndim != 1 or timesteps.ndim != 1 or len(sigmas) != len(timesteps) + 1:
        return None
    try:
        grid = check_grid(sigmas)
    except SigmaGridError:
        return None
    return StepGrid(tuple(grid), tuple(timesteps.detach().double().cpu().tolist()), type(scheduler).__name__)


def scheduler_grid(scheduler: Any, num_inference_steps: int) -> StepGrid | None:
    """The grid a pipeline runs for ``num_inference_steps``: ``set_timesteps`` on a copy of its scheduler.

    None when the scheduler needs run-time inputs to build it (dynamic shifting needs the latent
    size) or is no flow-matching scheduler; the drop-in then reads the grid when the pipeline runs.

    Example:
        >>> from diffusers import UniPCMultistepScheduler
        >>> unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        >>> steps = scheduler_grid(unipc, 8)
        >>> steps.timesteps[:3], round(steps.sigmas[2], 4), steps.step_of(900)
        ((999.0, 954.0, 900.0), 0.9001, 2)
    """
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    copy = type(scheduler).from_config(scheduler.config)
    try:
        copy.set_timesteps(num_inference_steps)
    except (ValueError, TypeError):  # e.g. use_dynamic_shifting: mu depends on the latent size
        return None
    return grid_of(copy)


def fixed_decisions(grid: Sequence[float], plan: list[str], reason: str) -> Decisions:
    """:class:`~adaptive.controller.Decisions` of a fixed plan (one shared row, no probes)."""
    return plan_decisions(grid, [plan], [reason], shared=True)


class BlendedTransformer(nn.Module):
    """Several transformers behind one: each call runs the one named for the call's step.

    The step is found by matching the call's timestep against the grid the pipeline's scheduler
    runs (read from ``pipeline.scheduler`` when a run starts, else ``steps``), and the schedule
    names the model of that step's sigma; with no flow grid known (no pipeline, a scheduler that
    is not flow matching) a fixed schedule falls back to ``sigma = timestep / num_train_timesteps``.
    ``trace`` records ``(sigma, model_name)`` for every call and ``decisions`` the last run's
    :class:`~adaptive.controller.Decisions` (one entry per step of the grid that ran). Reading the
    timestep is one scalar read per call (free on CPU timesteps; on CUDA it waits for the queued
    work, as diffusers' own Wan 2.2 boundary switch does).

    With ``controller`` the online controller decides instead, one decision per denoising step for
    the whole pipeline batch (``batch_decisions="shared"``): on probe steps every call also runs
    Small on the same input, the divergence is pooled over the step's calls (cond and uncond alike,
    so both always run the same model) and decides the next step.

    The deciding is done by ``switch`` (:class:`~adaptive.switch.Switch`, the object the samplers
    run): this module only turns a call's timestep into its sigma. A new pipeline run is seen from
    sigma (a sigma that rises again) or from the scheduler's grid being set again.

    **Guidance only where the plan says.** A stage naming a conditional-only variant
    (``"large:cond"``, :meth:`~adaptive.Schedule.guided_within`) skips the unconditional prediction
    in an unmodified pipeline, whose combination ``uncond + scale * (cond - uncond)`` then gives the
    conditional one: a pipeline that calls cond and uncond separately inside ``cache_context("cond")``
    and ``("uncond")`` (Wan) gets the step's cond output back for its uncond call, with no model call;
    one that batches them inside ``cache_context("cond_uncond")`` (LTX) gets the conditional half run
    alone and repeated (``uncond_first``: the pipeline stacks the unconditional rows first, as
    diffusers' LTX does). A pipeline that says neither runs guidance, with a warning.
    ``skipped`` counts the unconditional predictions not computed.
    """

    def __init__(self, transformers: Mapping[str, nn.Module], schedule: Schedule, primary: str = "large",
                 num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, controller: ControllerConfig | None = None,
                 steps: StepGrid | None = None, pipeline: Any = None, uncond_first: bool = True) -> None:
        super().__init__()
        if primary not in transformers:
            raise PairMismatchError(f"primary model {primary!r} is not among {sorted(transformers)}")
        names = {**{unguided(k): v for k, v in transformers.items()}, **transformers}
        schedule.check_models(names)
        check_compatible(transformers)
        if controller is not None and not {"large", "small"} <= set(transformers):
            raise ValueError("online blending needs models named 'large' and 'small'")
        self.transformers = nn.ModuleDict(dict(transformers))
        self.schedule = schedule
        self.primary = primary
        self.num_train_timesteps = num_train_timesteps
        self.trace: list[tuple[float, str]] = []
        self.controller_config = controller
        self.steps = steps
        self._pipeline = weakref.ref(pipeline) if pipeline is not None else None
        self._run: tuple[Any, StepGrid | None] = (None, None)  # (the scheduler's timesteps tensor, its grid)
        self.uncond_first = uncond_first
        self.skipped = 0
        self._context: str | None = None  # the pipeline's cache context: "cond", "uncond", "cond_uncond"
        self._cond_out: tuple[float, Any] | None = None  # (sigma, output) of the step's cond call
        self._warned_guidance = False
        self.slots: dict[str, nn.Module] = {}  # pipeline attribute -> module it held before blend()
        plan = Plan.online(controller, 1, shared=True) if controller is not None else \
            Plan.fixed([schedule], shared=True)
        self.switch = Switch(names, plan, pool_calls=True)

    @property
    def grid(self) -> list[float] | None:
        """The sigma grid expected at blend time (``num_inference_steps`` on the pipeline's scheduler)."""
        return None if self.steps is None else list(self.steps.sigmas)

    @property
    def decisions(self) -> Decisions | None:
        """Which model ran each step of the last run, and why (None before a run on a known grid)."""
        return self.switch.decisions

    @property
    def primary_model(self) -> nn.Module:
        return self.transformers[self.primary]

    @property
    def config(self) -> Any:
        return self.primary_model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.primary_model.dtype

    @property
    def device(self) -> torch.device:
        return self.primary_model.device

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # What the pipeline asks of its transformer that we do not define is the Large model's.
            return getattr(super().__getattr__("transformers")[super().__getattribute__("primary")], name)

    @contextlib.contextmanager
    def cache_context(self, name: str, **kwargs: Any) -> Iterator[None]:
        """Enter the cache context of every wrapped model (each has its own cache hooks)."""
        with contextlib.ExitStack() as stack:
            for model in self.transformers.values():
                if hasattr(model, "cache_context"):
                    stack.enter_context(model.cache_context(name, **kwargs))
            outer, self._context = self._context, name  # which prediction the pipeline asks for
            try:
                yield
            finally:
                self._context = outer

    def _reset_stateful_cache(self, recurse: bool = True) -> None:
        """What a pipeline calls after a run: reset every wrapped model's cache hooks."""
        for model in self.transformers.values():
            if hasattr(model, "_reset_stateful_cache"):
                model._reset_stateful_cache(recurse)

    def _run_grid(self) -> tuple[StepGrid | None, bool]:
        """The grid of the current run and whether a new run began (the scheduler was set again)."""
        pipe = self._pipeline() if self._pipeline is not None else None
        scheduler = getattr(pipe, "scheduler", None)
        timesteps = getattr(scheduler, "timesteps", None)
        if timesteps is None:
            return self.steps, False
        if timesteps is self._run[0]:
            return self._run[1] or self.steps, False
        self._run = (timesteps, grid_of(scheduler))
        return self._run[1] or self.steps, True

    def model_for_timestep(self, timestep: torch.Tensor | float) -> str:
        """The model for a call at ``timestep`` (records it in ``trace``; advances the online controller)."""
        value = _scalar(timestep)
        steps, new_run = self._run_grid()
        if steps is None:
            if self.controller_config is not None:
                raise SigmaGridError("online blending needs the sigma grid the pipeline runs: use a flow-matching "
                                     "scheduler (Euler, or UniPC/DPM-Solver with use_flow_sigmas=True) and "
                                     "blend(..., num_inference_steps=) with the steps you pass the pipeline")
            sigma = min(max(value / self.num_train_timesteps, 0.0), 1.0)
        else:
            sigma = steps.sigmas[steps.step_of(value)]
            if new_run or self.switch.grid != list(steps.sigmas):
                self.switch.start(steps.sigmas, f"fixed schedule on the {steps.scheduler} grid")
                self._cond_out = None
        name = self.switch.route(sigma)[0]
        self.trace.append((sigma, name))
        return name

    def _call(self, name: str, hidden_states: torch.Tensor, timestep: torch.Tensor, args: tuple, kwargs: dict
              ) -> Any:
        model = self.transformers[name]
        return model(hidden_states, timestep, *args, **kwargs) if args else \
            model(hidden_states=hidden_states, timestep=timestep, **kwargs)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        name = self.model_for_timestep(timestep)
        sigma = self.trace[-1][0]
        if is_unguided(name):
            out = self._unguided(base_of(name), sigma, hidden_states, timestep, args, kwargs)
            if out is not None:
                return out
        out = self._call(base_of(name), hidden_states, timestep, args, kwargs)
        if self._context == "cond" and is_unguided(name):
            self._cond_out = (sigma, out)  # the answer to this step's uncond call
        if name == "large" and self.switch.probe_rows():  # Small beside Large: pooled over the step's calls
            self.switch.pool(_sample_of(out), _sample_of(self._call("small", hidden_states, timestep, args, kwargs)))
        return out

    def _unguided(self, name: str, sigma: float, hidden_states: torch.Tensor, timestep: torch.Tensor, args: tuple,
                  kwargs: dict) -> Any:
        """The call's output without an unconditional prediction, or None when the pipeline does not
        say which rows are unconditional (the call then runs as it is)."""
        kept, self._cond_out = self._cond_out, None  # used once, by the uncond call of the same step
        if self._context == "uncond" and kept is not None and kept[0] == sigma \
                and _sample_of(kept[1]).shape[0] == hidden_states.shape[0]:
            self.skipped += 1
            return kept[1]  # uncond + scale * (cond - uncond) == cond
        if self._context == "cond":
            return None  # the cond call runs; the uncond call that follows is skipped
        pipe = self._pipeline() if self._pipeline is not None else None
        guiding = getattr(pipe, "do_classifier_free_guidance", None)
        batch = hidden_states.shape[0]
        if self._context == "cond_uncond" and guiding is False:
            return None  # no guidance in this run: nothing to skip
        if self._context == "cond_uncond" and guiding and batch % 2 == 0:
            half = batch // 2
            rows = slice(half, batch) if self.uncond_first else slice(0, half)
            cut = lambda v: v[rows] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == batch else v  # noqa: E731
            out = self._call(name, hidden_states[rows], cut(timestep), tuple(cut(a) for a in args),
                             {k: cut(v) for k, v in kwargs.items()})
            self.skipped += half
            return _repeated(out)
        if not self._warned_guidance and self._context != "cond":
            self._warned_guidance = True
            warnings.warn(f"the plan skips guidance at sigma {sigma:.3g}, but this pipeline does not say which call "
                          "(or rows) are unconditional (no cache_context 'cond'/'uncond'/'cond_uncond'): guidance "
                          "runs as the pipeline asks", stacklevel=3)
        return None


def _scalar(timestep: torch.Tensor | float) -> float:
    """The call's timestep as a number: the largest entry (a pipeline batch shares one timestep;
    Wan 2.2's per-token timesteps give conditioning frames 0 and the rest the step's timestep)."""
    return float(timestep.detach().amax()) if isinstance(timestep, torch.Tensor) else float(timestep)


def _repeated(output: Any) -> Any:
    """A transformer output with its prediction stacked twice along the batch (both CFG halves)."""
    if isinstance(output, torch.Tensor):
        return torch.cat([output, output])
    if isinstance(output, tuple):
        return (torch.cat([output[0], output[0]]), *output[1:])
    output.sample = torch.cat([output.sample, output.sample])
    return output


def _sample_of(output: Any) -> torch.Tensor:
    """The predicted tensor of a transformer output (``return_dict`` either way)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.sample


def check_compatible(transformers: Mapping[str, nn.Module]) -> None:
    """Raise :class:`PairMismatchError` if the transformers disagree on channels, patch or text width."""
    items = list(transformers.items())
    ref_name, ref = items[0]
    for name, model in items[1:]:
        if type(model).__name__ != type(ref).__name__:
            raise PairMismatchError(f"{name!r} is a {type(model).__name__} but {ref_name!r} is a "
                                    f"{type(ref).__name__}; blend models of one family")
        for key in _SHARED_CONFIG_KEYS:
            a, b = ref.config.get(key), model.config.get(key)
            if isinstance(a, list):
                a, b = tuple(a), tuple(b) if b is not None else b
            if a != b:
                raise PairMismatchError(f"{name!r} has {key}={b} but {ref_name!r} has {key}={a}; the two models "
                                        "must share latent channels, patch size and text embedding width")


def pipeline_sampler(scheduler: Any) -> Any:
    """The :class:`~adaptive.samplers.Sampler` a pipeline's scheduler is (its profiles are keyed by it),
    or ``"euler"`` for a scheduler this package cannot step itself (its Euler profile at the same
    shift is then used by sigma, with a warning)."""
    from adaptive.samplers import Sampler

    try:
        return Sampler.of(scheduler)
    except (ValueError, SigmaGridError):
        return "euler"


def _note_other_grid(profile: Any, steps: StepGrid | None, what: str, sampler: Any = "euler") -> None:
    """Warn once, in one line, when ``profile`` was calibrated on another sampler or grid than the
    pipeline runs (``sampler``: the pipeline's, from :func:`pipeline_sampler`)."""
    if steps is None or not hasattr(profile, "num_steps") or not hasattr(profile, "grid"):
        return
    family = getattr(sampler, "family", "euler")
    # the grid it was calibrated on, and the recommended plan's grid (measured by the same calibration)
    counts = sorted({int(profile.num_steps), int(getattr(profile, "steps", profile.num_steps))})
    grids = [profile.grid(n) for n in counts]
    same = profile.family == family and any(
        len(grid) == len(steps.sigmas) and all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(grid, steps.sigmas))
        for grid in grids)
    if same:
        return
    calibrated = profile.grid() or grids[0]
    shown = ", ".join(f"{s:.3f}" for s in steps.sigmas[:6]) + (", ..." if len(steps.sigmas) > 6 else "")
    kind = {"euler": "Euler", "unipc": "UniPC", "dpmpp": "DPM-Solver++"}.get(profile.family, profile.family)
    how = (f"calibrate(..., sampler=pipe.scheduler) or `flowblend calibrate --sampler {sampler.name}`"
           if hasattr(sampler, "name") else "calibrate on this scheduler's grid")
    warnings.warn(f"the profile was calibrated with the {kind} sampler for {profile.sampler} (sigmas "
                  f"{', '.join(f'{s:.3f}' for s in calibrated[:6])}, ...) but this pipeline runs {steps.scheduler} "
                  f"over {steps.num_steps} steps (sigmas {shown}); its {what} are in sigma and are used by sigma on "
                  f"this grid; {how} for a plan measured on it.", stacklevel=3)


def _plan_of(pipe: Any, large: nn.Module, small: nn.Module | None, schedule_or_profile: Any,
             num_inference_steps: int | None, guidance_scale: float | None, store: Any
             ) -> tuple[Schedule, ControllerConfig | None, StepGrid | None]:
    """The schedule, the online controller (or None) and the grid expected at blend time."""
    steps = None if num_inference_steps is None else scheduler_grid(pipe.scheduler, num_inference_steps)
    models: Any = {"large": large, "small": small}
    shift = None
    sampler = pipeline_sampler(pipe.scheduler)
    if isinstance(schedule_or_profile, str):  # a stored profile: keyed by the pair and the scheduler's grid
        models, shift = ModelPair(large, small), scheduler_shift(pipe.scheduler)
        if guidance_scale is not None and guidance_scale > 1.0:  # diffusers guides only above 1
            models = models.guided(guidance_scale)
    plan = resolve_plan(models, schedule_or_profile, None if steps is None else steps.sigmas, pipeline=True,
                        shift=shift, num_steps=num_inference_steps, store=store, guidance_scale=guidance_scale,
                        solver=sampler)
    if plan.profile is not None:
        _note_other_grid(plan.profile, steps, "controller's sigmas" if plan.controller else "boundaries", sampler)
    if plan.controller is not None:
        return Schedule.large_only(), plan.controller, steps
    return plan.schedules[0], None, steps


def blend(pipe: Any, small_transformer: nn.Module | None, schedule_or_profile: Any, *,
          num_inference_steps: int | None = None, guidance_scale: float | None = None, store: Any = None,
          uncond_first: bool = True, guidance_scale_2: float | None = None) -> Any:
    """Make ``pipe`` run its own transformer (Large) and ``small_transformer`` by a schedule.

    ``schedule_or_profile`` is an :class:`~adaptive.Schedule`, a calibrated profile, ``"auto"``:
    the stored profile for this pair, guidance scale and ``num_inference_steps`` at the shift the
    pipeline's scheduler applies (``flow_shift`` of UniPC/DPM-Solver, ``shift`` of Euler; a clear
    error says how to calibrate when there is none), ``"online"``: that profile's online
    controller, or a :class:`~adaptive.controller.ControllerConfig` (both need
    ``num_inference_steps``). Every call is mapped to a step of the grid the pipeline's scheduler
    runs, whatever the scheduler (Euler, UniPC, DPM-Solver++ on flow sigmas); profile boundaries
    are in sigma and apply by sigma, with a warning when the profile was calibrated on another
    solver or grid. After a run ``pipe.transformer.decisions`` says which model ran each step and
    why. Returns the same pipeline object; :func:`unblend` restores it. Blending a blended
    pipeline replaces the schedule and Small model rather than nesting.

    A schedule may skip guidance outside an interval (``Schedule.lsl(...).guided_within(hi, lo)``):
    the unconditional prediction is then not computed on those steps (see
    :class:`BlendedTransformer`; ``uncond_first`` says where a batching pipeline puts its
    unconditional rows). ``small_transformer=None`` runs such a plan on the pipeline's own model.

    **Wan 2.2's two experts.** A ``WanPipeline`` with ``transformer_2`` and ``boundary_ratio``
    blends as a pool of ``"high"`` (its ``transformer``), ``"low"`` (``transformer_2``) and
    ``"small"``: the plan takes over the expert switch (both slots hold the blended module), e.g.
    ``Schedule.experts(0.875).relabel(0.8, 0.4, inside={"high": "small", "low": "small"})`` for
    high -> small -> low. A schedule that names ``"large"`` runs the high expert where the
    pipeline's ``boundary_ratio`` would (steps starting at sigma >= boundary_ratio, within 1e-5, as
    diffusers' ``t >= boundary_ratio * 1000`` decides) and the low expert elsewhere; ``None`` runs the
    experts as the pipeline would. ``guidance_scale`` vs ``guidance_scale_2`` still follows the
    pipeline's own ``boundary_ratio``. ``"auto"`` on a Wan 2.2 pipeline runs the stored pool profile
    (:func:`adaptive.pool_profiles.calibrate_pool`) of its two experts and ``small_transformer`` at
    ``guidance_scale`` (high) and ``guidance_scale_2`` (low and Small; default ``guidance_scale``,
    as diffusers does) for ``num_inference_steps``; a :class:`~adaptive.pool_profiles.PoolProfile`
    of another pool or boundary is refused by name. ``"online"`` stays for two-model pairs.

    Example:
        >>> import sys; sys.path.insert(0, "tests")
        >>> from diffusers import UniPCMultistepScheduler, WanPipeline
        >>> from conftest import tiny_wan
        >>> unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
        >>> pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=tiny_wan(), vae=None, scheduler=unipc)
        >>> pipe = blend(pipe, tiny_wan(heads=1, layers=1), Schedule.lsl(0.85, 0.3), num_inference_steps=8)
        >>> pipe.transformer.steps.timesteps[:3]
        (999.0, 954.0, 900.0)
    """
    current = getattr(pipe, "transformer", None)
    if current is None:
        raise ValueError("the pipeline has no transformer to blend; load it with its transformer first")
    slots = dict(current.slots) if isinstance(current, BlendedTransformer) and current.slots else \
        {"transformer": current.primary_model if isinstance(current, BlendedTransformer) else current}
    second = getattr(pipe, "transformer_2", None)
    if "transformer_2" not in slots and second is not None:
        slots["transformer_2"] = second
    ratio = boundary_ratio_of(pipe) if "transformer_2" in slots else None
    if ratio is not None and small_transformer is not None and not (
            schedule_or_profile is None or isinstance(schedule_or_profile, Schedule) or schedule_or_profile == "online"):
        schedule_or_profile = _pool_plan(pipe, slots, small_transformer, schedule_or_profile, ratio,
                                         num_inference_steps, guidance_scale, guidance_scale_2, store)
    if (small_transformer is None or ratio is not None) and not (
            schedule_or_profile is None or isinstance(schedule_or_profile, Schedule)):
        raise ValueError("a stored profile, 'auto' and 'online' are for a Large and Small pair; "
                         + ("a Wan 2.2 pipeline with two experts takes 'auto' (its stored pool profile, from "
                            "adaptive.calibrate_pool), a PoolProfile or an adaptive.Schedule over 'high', 'small', "
                            "'low'; the online controller is for a Large and Small pair"
                            if ratio is not None else "pass small_transformer, or a Schedule"))
    large = slots["transformer"]
    if ratio is not None:
        models, primary = {"high": large, "low": slots["transformer_2"]}, "high"
        schedule, controller = experts_plan(schedule_or_profile, ratio), None
        steps = None if num_inference_steps is None else scheduler_grid(pipe.scheduler, num_inference_steps)
    else:
        models, primary = {"large": large}, "large"
        schedule, controller, steps = _plan_of(pipe, large, small_transformer, schedule_or_profile,
                                               num_inference_steps, guidance_scale, store)
    if small_transformer is not None:
        if small_transformer.dtype != large.dtype or small_transformer.device != large.device:
            small_transformer = small_transformer.to(device=large.device, dtype=large.dtype)
        models["small"] = small_transformer
    blended = BlendedTransformer(models, schedule, primary=primary, controller=controller, steps=steps,
                                 pipeline=pipe, uncond_first=uncond_first)
    blended.slots = slots
    for slot in slots:
        setattr(pipe, slot, blended)
    return pipe


def _pool_plan(pipe: Any, slots: Mapping[str, nn.Module], small: nn.Module, chosen: Any, ratio: float,
               num_inference_steps: int | None, guidance_scale: float | None, guidance_scale_2: float | None,
               store: Any) -> Schedule:
    """The plan ``"auto"`` (or a pool profile given) runs on a Wan 2.2 pipeline: the stored pool profile
    of its experts and ``small`` at the pipeline's guidance scales, for its grid; checked to be theirs."""
    from adaptive.pool_profiles import PoolProfile, check_pool_profile, find_pool_profile, pool_key
    from adaptive.profile_store import ProfileStore

    if not (chosen == "auto" or isinstance(chosen, PoolProfile)):
        raise TypeError(f"a Wan 2.2 pipeline takes 'auto', a PoolProfile or a Schedule, got {chosen!r}")
    if num_inference_steps is None:
        raise ValueError("blend(..., 'auto') on Wan 2.2 needs num_inference_steps= (the steps you will pass to the "
                         "pipeline) to pick the pool profile calibrated for that grid")
    low_scale = guidance_scale if guidance_scale_2 is None else guidance_scale_2
    key = pool_key({"high": slots["transformer"], "low": slots["transformer_2"], "small": small},
                   {"high": guidance_scale, "low": low_scale, "small": low_scale})
    steps = scheduler_grid(pipe.scheduler, num_inference_steps)
    if steps is None:
        raise SigmaGridError("the pipeline's scheduler needs run-time inputs to build its grid; pass the plan as a "
                             "Schedule (PoolProfile.schedule())")
    profile = chosen if isinstance(chosen, PoolProfile) else find_pool_profile(
        key, steps.sigmas, pipeline_sampler(pipe.scheduler), store if isinstance(store, ProfileStore) else
        ProfileStore(store), what=f"these experts, this Small and guidance {guidance_scale}/{low_scale}",
        reference=Schedule.experts(ratio))
    check_pool_profile(profile, key, Schedule.experts(ratio))
    return profile.schedule()


def experts_plan(schedule: Schedule | None, boundary_ratio: float) -> Schedule:
    """``schedule`` on Wan 2.2's experts: its ``"large"`` stages become ``"high"`` for steps starting
    at sigma >= ``boundary_ratio`` (diffusers' rule) and ``"low"`` below; None: the experts alone.

    Example:
        >>> experts_plan(Schedule.lsl(0.8, 0.4), 0.875).step_models([1.0, 0.875, 0.85, 0.6, 0.3, 0.0])
        ['high', 'high', 'low', 'small', 'low']
    """
    split = Schedule.experts(boundary_ratio)
    if schedule is None:
        return split
    return schedule.relabel(1.0, split.stages[0].sigma_lo, inside={"large": "high"}, outside={"large": "low"})


def unblend(pipe: Any) -> Any:
    """Undo :func:`blend`: the pipeline gets its own transformers back (both of Wan 2.2's experts)."""
    current = getattr(pipe, "transformer", None)
    if isinstance(current, BlendedTransformer):
        for slot, module in (current.slots or {"transformer": current.primary_model}).items():
            setattr(pipe, slot, module)
    return pipe
