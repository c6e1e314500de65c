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

from adaptive.denoisers import NUM_TRAIN_TIMESTEPS
from adaptive.errors import PairMismatchError
from adaptive.schedule import Schedule

_SHARED_CONFIG_KEYS = ("in_channels", "out_channels", "patch_size", "patch_size_t", "text_dim", "caption_channels")


class BlendedTransformer(nn.Module):
    """Several transformers behind one, picked per call by ``schedule.model_for(timestep / 1000)``.

    ``trace`` records ``(sigma, model_name)`` for every call, so a user can see which model ran.
    Reading the timestep is one scalar read per call (free on CPU timesteps; on CUDA it waits for
    the queued work, as diffusers' own Wan 2.2 boundary switch does).
    """

    def __init__(self, transformers: Mapping[str, nn.Module], schedule: Schedule, primary: str = "large",
                 num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> None:
        super().__init__()
        if primary not in transformers:
            raise PairMismatchError(f"primary model {primary!r} is not among {sorted(transformers)}")
        schedule.check_models(transformers)
        check_compatible(transformers)
        self.transformers = nn.ModuleDict(dict(transformers))
        self.schedule = schedule
        self.primary = primary
        self.num_train_timesteps = num_train_timesteps
        self.trace: list[tuple[float, str]] = []

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
        value = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        sigma = min(max(value / self.num_train_timesteps, 0.0), 1.0)
        name = self.schedule.model_for(sigma)
        self.trace.append((sigma, name))
        return name

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        name = self.model_for_timestep(timestep)
        return self.transformers[name](hidden_states, timestep, *args, **kwargs) if args else \
            self.transformers[name](hidden_states=hidden_states, timestep=timestep, **kwargs)


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


def _auto_schedule(pipe: Any, large: nn.Module, small: nn.Module, num_inference_steps: int | None,
                   guidance_scale: float | None, store: Any) -> Schedule:
    from adaptive.errors import CalibrationError
    from adaptive.pair import ModelPair
    from adaptive.profiles import ProfileStore, sampler_signature

    if num_inference_steps is None:
        raise CalibrationError("blend(..., 'auto') needs num_inference_steps= (the steps you will pass to the "
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
    return profile.schedule()


def _schedule_of(schedule_or_profile: Any) -> Schedule:
    if isinstance(schedule_or_profile, Schedule):
        return schedule_or_profile
    if hasattr(schedule_or_profile, "schedule") and callable(schedule_or_profile.schedule):
        return schedule_or_profile.schedule()
    raise TypeError(f"expected an adaptive.Schedule or a Profile, got {type(schedule_or_profile).__name__}")


def blend(pipe: Any, small_transformer: nn.Module, schedule_or_profile: Any, *, num_inference_steps: int | None = None,
          guidance_scale: float | None = None, store: Any = None) -> Any:
    """Make ``pipe`` run its own transformer (Large) and ``small_transformer`` by a schedule.

    ``schedule_or_profile`` is an :class:`~adaptive.Schedule`, a calibrated profile, or ``"auto"``:
    the stored profile for this pair, guidance scale and ``num_inference_steps`` on the pipeline's
    scheduler shift (a clear error says how to calibrate when there is none). Returns the
    same pipeline object; :func:`unblend` restores it. Blending a blended pipeline replaces the
    schedule and Small model rather than nesting.
    """
    current = getattr(pipe, "transformer", None)
    if current is None:
        raise ValueError("the pipeline has no transformer to blend; load it with its transformer first")
    large = current.transformers[current.primary] if isinstance(current, BlendedTransformer) else current
    if isinstance(schedule_or_profile, str) and schedule_or_profile == "auto":
        schedule = _auto_schedule(pipe, large, small_transformer, num_inference_steps, guidance_scale, store)
    else:
        schedule = _schedule_of(schedule_or_profile)
    if small_transformer.dtype != large.dtype or small_transformer.device != large.device:
        small_transformer = small_transformer.to(device=large.device, dtype=large.dtype)
    pipe.transformer = BlendedTransformer({"large": large, "small": small_transformer}, schedule)
    return pipe


def unblend(pipe: Any) -> Any:
    """Undo :func:`blend`: the pipeline gets its Large transformer back."""
    current = getattr(pipe, "transformer", None)
    if isinstance(current, BlendedTransformer):
        pipe.transformer = current.primary_model
    return pipe
