"""A diffusers drop-in: one module that wraps several transformers and runs a schedule.

Assign it to ``pipe.transformer`` of an unmodified ``WanPipeline`` or ``LTXPipeline`` (or use
:func:`blend`): on each forward call it reads the timestep the pipeline passes, turns it into sigma
and calls the transformer the schedule names. Everything the pipeline reads from its transformer
(``config``, ``dtype``, ``device``, ``cache_context`` and other methods) is the Large model's.

Example (tiny random models, as in the tests)::

    pipe = WanPipeline(...)                               # any Wan 2.1 pipeline
    blend(pipe, small_transformer, Schedule.lsl(0.85, 0.3))
    video = pipe(prompt_embeds=..., num_inference_steps=30).frames
    unblend(pipe)                                         # back to the Large model alone
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from adaptive.controller import ControllerConfig, Decisions, OnlineController
from adaptive.denoisers import NUM_TRAIN_TIMESTEPS
from adaptive.errors import PairMismatchError
from adaptive.schedule import Schedule, check_grid

_SHARED_CONFIG_KEYS = ("in_channels", "out_channels", "patch_size", "patch_size_t", "text_dim", "caption_channels")


class BlendedTransformer(nn.Module):
    """Several transformers behind one, picked per call by ``schedule.model_for(timestep / 1000)``.

    ``trace`` records ``(sigma, model_name)`` for every call, so a user can see which model ran.
    Reading the timestep is one scalar read per call (free on CPU timesteps; on CUDA it waits for
    the queued work, as diffusers' own Wan 2.2 boundary switch does).

    With ``controller`` (and the pipeline's sigma ``grid``) the online controller decides instead,
    one decision per denoising step for the whole pipeline batch (``batch_decisions="shared"``):
    on probe steps every call also runs Small on the same input, the divergence is pooled over the
    step's calls (cond and uncond alike, so both always run the same model) and decides the next
    step. ``decisions`` holds the last run's :class:`~adaptive.controller.Decisions`.
    """

    def __init__(self, transformers: Mapping[str, nn.Module], schedule: Schedule, primary: str = "large",
                 num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, controller: ControllerConfig | None = None,
                 grid: list[float] | None = None) -> None:
        super().__init__()
        if primary not in transformers:
            raise PairMismatchError(f"primary model {primary!r} is not among {sorted(transformers)}")
        schedule.check_models(transformers)
        check_compatible(transformers)
        if controller is not None and (grid is None or not {"large", "small"} <= set(transformers)):
            raise ValueError("online blending needs the sigma grid (num_inference_steps) and models named "
                             "'large' and 'small'")
        self.transformers = nn.ModuleDict(dict(transformers))
        self.schedule = schedule
        self.primary = primary
        self.num_train_timesteps = num_train_timesteps
        self.trace: list[tuple[float, str]] = []
        self.controller_config = controller
        self.grid = check_grid(grid) if grid is not None else None
        self._online: OnlineController | None = None
        self._step = -1
        self._pooled = [0.0, 0.0]  # sum ||v_L - v_S||^2, sum ||v_L||^2 over the probe step's calls
        self._step_model = ""

    @property
    def decisions(self) -> Decisions | None:
        return None if self._online is None else self._online.decisions

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
            yield

    def _reset_stateful_cache(self, recurse: bool = True) -> None:
        """What a pipeline calls after a run: reset every wrapped model's cache hooks."""
        for model in self.transformers.values():
            if hasattr(model, "_reset_stateful_cache"):
                model._reset_stateful_cache(recurse)

    def model_for_timestep(self, timestep: torch.Tensor | float) -> str:
        value = _scalar(timestep)
        sigma = min(max(value / self.num_train_timesteps, 0.0), 1.0)
        name = self.schedule.model_for(sigma)
        self.trace.append((sigma, name))
        return name

    def _online_model(self, timestep: torch.Tensor | float) -> str:
        """The online controller's model for this call's step; closes the previous step's probes."""
        assert self.grid is not None and self.controller_config is not None
        value = _scalar(timestep)
        sigma = value / self.num_train_timesteps
        grid = self.grid
        step = min(range(len(grid) - 1), key=lambda i: abs(grid[i] - sigma))
        if self._online is None or step < self._step:  # a new pipeline run
            self._online, self._step = OnlineController(self.controller_config, grid, 1, shared=True), -1
            self._pooled = [0.0, 0.0]
        if step != self._step:
            self._close_probe()
            for skipped in range(self._step + 1, step + 1):  # steps the pipeline never called stay unprobed
                self._step_model = self._online.models_at(skipped)[0]
            self._step = step
        self.trace.append((sigma, self._step_model))
        return self._step_model

    def _close_probe(self) -> None:
        if self._online is not None and self._pooled[1] > 0:
            divergence = (self._pooled[0] / self._pooled[1]) ** 0.5
            self._online.observe(self._step, {0: divergence})
        self._pooled = [0.0, 0.0]

    def _call(self, name: str, hidden_states: torch.Tensor, timestep: torch.Tensor, args: tuple, kwargs: dict
              ) -> Any:
        model = self.transformers[name]
        return model(hidden_states, timestep, *args, **kwargs) if args else \
            model(hidden_states=hidden_states, timestep=timestep, **kwargs)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.controller_config is None:
            return self._call(self.model_for_timestep(timestep), hidden_states, timestep, args, kwargs)
        name = self._online_model(timestep)
        out = self._call(name, hidden_states, timestep, args, kwargs)
        assert self._online is not None
        if name == "large" and self._online.probe_rows(self._step):
            probe = self._call("small", hidden_states, timestep, args, kwargs)
            v_large, v_small = _sample_of(out).float(), _sample_of(probe).float()
            self._pooled[0] += float((v_large - v_small).pow(2).sum())
            self._pooled[1] += float(v_large.pow(2).sum())
        return out


def _scalar(timestep: torch.Tensor | float) -> float:
    """The call's timestep as a number (every sample of a pipeline batch shares it)."""
    return float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep)


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


def _stored_profile(pipe: Any, large: nn.Module, small: nn.Module, num_inference_steps: int | None,
                    guidance_scale: float | None, store: Any, mode: str) -> Any:
    from adaptive.errors import CalibrationError
    from adaptive.pair import ModelPair
    from adaptive.profiles import ProfileStore, sampler_signature

    if num_inference_steps is None:
        raise CalibrationError(f"blend(..., {mode!r}) needs num_inference_steps= (the steps you will pass to the "
                               "pipeline) to pick the profile calibrated for that grid")
    pair = ModelPair(large, small)
    if guidance_scale is not None and guidance_scale != 1.0:
        pair = pair.guided(guidance_scale)
    shift = float(getattr(pipe.scheduler.config, "shift", 1.0))
    signature = sampler_signature("euler", num_inference_steps, shift)
    profile = (store if isinstance(store, ProfileStore) else ProfileStore(store)).find(pair, signature)
    if profile is None:
        raise CalibrationError(f"no stored profile for this pair and {signature}; calibrate it once with "
                               "`flowblend calibrate --large DIR --small DIR --embeddings E.safetensors --shape ...` "
                               "(same guidance scale) or adaptive.calibrate(), then blend again")
    return profile


def _schedule_of(schedule_or_profile: Any) -> Schedule:
    if isinstance(schedule_or_profile, Schedule):
        return schedule_or_profile
    if hasattr(schedule_or_profile, "schedule") and callable(schedule_or_profile.schedule):
        return schedule_or_profile.schedule()
    raise TypeError(f"expected an adaptive.Schedule or a Profile, got {type(schedule_or_profile).__name__}")


def blend(pipe: Any, small_transformer: nn.Module, schedule_or_profile: Any, *, num_inference_steps: int | None = None,
          guidance_scale: float | None = None, store: Any = None) -> Any:
    """Make ``pipe`` run its own transformer (Large) and ``small_transformer`` by a schedule.

    ``schedule_or_profile`` is an :class:`~adaptive.Schedule`, a calibrated profile, ``"auto"``:
    the stored profile for this pair, guidance scale and ``num_inference_steps`` on the pipeline's
    scheduler shift (a clear error says how to calibrate when there is none), ``"online"``: that
    profile's online controller, or a :class:`~adaptive.controller.ControllerConfig` (both need
    ``num_inference_steps``; after a run ``pipe.transformer.decisions`` says which model ran each
    step and why). Returns the same pipeline object; :func:`unblend` restores it. Blending a
    blended pipeline replaces the schedule and Small model rather than nesting.
    """
    current = getattr(pipe, "transformer", None)
    if current is None:
        raise ValueError("the pipeline has no transformer to blend; load it with its transformer first")
    large = current.transformers[current.primary] if isinstance(current, BlendedTransformer) else current
    controller, grid = None, None
    if isinstance(schedule_or_profile, str) and schedule_or_profile in ("auto", "online"):
        profile = _stored_profile(pipe, large, small_transformer, num_inference_steps, guidance_scale, store,
                                  schedule_or_profile)
        if schedule_or_profile == "online":
            controller = ControllerConfig.from_dict(profile.controller)
        schedule_or_profile = profile
    elif isinstance(schedule_or_profile, ControllerConfig):
        controller, schedule_or_profile = schedule_or_profile, Schedule.large_only()
    if controller is not None:
        from adaptive.sampling import sigmas

        if num_inference_steps is None:
            raise ValueError("online blending needs num_inference_steps= (the steps you will pass to the pipeline)")
        grid = sigmas(num_inference_steps, float(getattr(pipe.scheduler.config, "shift", 1.0))).tolist()
        schedule = Schedule.large_only()
    else:
        schedule = _schedule_of(schedule_or_profile)
    if small_transformer.dtype != large.dtype or small_transformer.device != large.device:
        small_transformer = small_transformer.to(device=large.device, dtype=large.dtype)
    pipe.transformer = BlendedTransformer({"large": large, "small": small_transformer}, schedule,
                                          controller=controller, grid=grid)
    return pipe


def unblend(pipe: Any) -> Any:
    """Undo :func:`blend`: the pipeline gets its Large transformer back."""
    current = getattr(pipe, "transformer", None)
    if isinstance(current, BlendedTransformer):
        pipe.transformer = current.primary_model
    return pipe
