"""The one model contract, ``model(x, sigma, **cond) -> velocity``, and adapters onto it.

``sigma`` is a tensor of shape ``(batch,)`` in [0, 1] (a float is accepted and broadcast). The
velocity is ``noise - x0`` (diffusers' flow-matching convention), so an Euler step is
``x + (sigma_next - sigma) * v``.

Example:
    >>> import torch
    >>> model = as_denoiser(lambda x, sigma: -x)
    >>> model(torch.ones(2, 3), 0.5).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from adaptive.errors import PairMismatchError
from adaptive.schedule import is_unguided, unguided

NUM_TRAIN_TIMESTEPS = 1000


@runtime_checkable
class Denoiser(Protocol):
    """Anything called as ``model(x, sigma, **cond)`` that returns a velocity shaped like ``x``."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor: ...


def sigma_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` as a float32 tensor of shape ``(batch,)`` on ``x``'s device."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    return sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma.reshape(-1)


class FunctionDenoiser:
    """A plain callable ``f(x, sigma, **cond)`` made to follow the contract (sigma as a tensor)."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        return self.fn(x, sigma_batch(sigma, x), **cond)

    def __repr__(self) -> str:
        return f"FunctionDenoiser({self.name})"


def _is_ltx(transformer: Any) -> bool:
    config = getattr(transformer, "config", None)
    return config is not None and "patch_size_t" in config and "caption_channels" in config


def pack_ltx(latents: torch.Tensor, patch: int, patch_t: int) -> torch.Tensor:
    """(B, C, F, H, W) -> LTX's token layout (B, F/pt * H/p * W/p, C * pt * p * p)."""
    b, c, f, h, w = latents.shape
    tokens = latents.reshape(b, c, f // patch_t, patch_t, h // patch, patch, w // patch, patch)
    return tokens.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_ltx(tokens: torch.Tensor, frames: int, height: int, width: int, patch: int, patch_t: int) -> torch.Tensor:
    """Inverse of :func:`pack_ltx` for a grid of ``frames x height x width`` patches."""
    b = tokens.shape[0]
    grid = tokens.reshape(b, frames, height, width, -1, patch_t, patch, patch)
    return grid.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


class TransformerDenoiser:
    """A diffusers flow-matching transformer behind the contract.

    Converts sigma to the transformer's ``timestep = sigma * num_train_timesteps``, casts the input
    and floating conditioning to the transformer's dtype and the velocity back to ``x``'s dtype. Wan
    (``WanTransformer3DModel``) and any transformer taking ``hidden_states, timestep,
    encoder_hidden_states`` are called as they are; LTX-Video (``LTXVideoTransformer3DModel``) gets
    its packed tokens and ``num_frames``, ``height``, ``width`` from the (B, C, F, H, W) latent, so
    callers never pack.
    """

    def __init__(self, transformer: torch.nn.Module, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> None:
        self.transformer = transformer
        self.num_train_timesteps = num_train_timesteps
        self.layout = "ltx" if _is_ltx(transformer) else "generic"

    @property
    def dtype(self) -> torch.dtype:
        # diffusers' ModelMixin.dtype skips the modules from_pretrained keeps in fp32 (Wan's time
        # embedder and norms), whose parameters may come first; the first parameter would say fp32.
        dtype = getattr(self.transformer, "dtype", None)
        return dtype if isinstance(dtype, torch.dtype) else next(self.transformer.parameters()).dtype

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        if getattr(self.transformer, "is_cache_enabled", False):
            # diffusers' caches (First Block Cache, ...) keep state per named context: one per batch
            # size, so a plan's batched guided calls and its conditional-only calls (half the rows) never
            # meet each other's cached activations (with batched=False, cond and uncond share one, as
            # before). A cache that counts steps per context (MagCache) counts the two kinds apart.
            with self.transformer.cache_context(f"rows-{x.shape[0]}"):
                return self._call(x, sigma, cond)
        return self._call(x, sigma, cond)

    def reset_cache(self) -> None:
        """Forget cached activations of a diffusers cache hook (call before a new video)."""
        if hasattr(self.transformer, "_reset_stateful_cache"):
            self.transformer._reset_stateful_cache()

    def _call(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict[str, Any]) -> torch.Tensor:
        timestep = sigma_batch(sigma, x) * self.num_train_timesteps
        dtype = self.dtype
        hidden = x.to(dtype)
        # Text embeddings come in whatever precision the encoder ran; the transformer wants its own.
        cond = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in cond.items()}
        if self.layout == "ltx":
            return self._call_ltx(hidden, timestep, cond).to(x.dtype)
        out = self.transformer(hidden_states=hidden, timestep=timestep, return_dict=False, **cond)[0]
        return out.to(x.dtype)

    def _call_ltx(self, hidden: torch.Tensor, timestep: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        config = self.transformer.config
        patch, patch_t = config.patch_size, config.patch_size_t
        _, _, f, h, w = hidden.shape
        grid = (f // patch_t, h // patch, w // patch)
        cond = dict(cond)
        if "encoder_attention_mask" not in cond and "encoder_hidden_states" in cond:
            text = cond["encoder_hidden_states"]
            cond["encoder_attention_mask"] = torch.ones(text.shape[:2], dtype=torch.long, device=text.device)
        tokens = self.transformer(
            hidden_states=pack_ltx(hidden, patch, patch_t), timestep=timestep, num_frames=grid[0],
            height=grid[1], width=grid[2], return_dict=False, **cond,
        )[0]
        return unpack_ltx(tokens, *grid, patch, patch_t)

    def __repr__(self) -> str:
        return f"TransformerDenoiser({type(self.transformer).__name__}, layout={self.layout})"


def select_rows(cond: Mapping[str, Any], batch: int, rows: Sequence[int] | slice) -> dict[str, Any]:
    """The conditioning of some samples of a batch: tensors batched along dim 0 keep ``rows``;
    anything else (a shared embedding, a flag) is passed through."""
    index: Any = rows if isinstance(rows, slice) else torch.as_tensor(list(rows), dtype=torch.long)
    out = {}
    for key, value in cond.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
            out[key] = value[index] if isinstance(index, slice) else value[index.to(value.device)]
        else:
            out[key] = value
    return out


def first_row(cond: Mapping[str, Any], batch: int) -> dict[str, Any]:
    """The conditioning of a batch's first sample (see :func:`select_rows`)."""
    return select_rows(cond, batch, slice(0, 1))


def _batched(value: Any, n: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == 1 and n > 1:
        return value.expand(n, *value.shape[1:])
    return value


def _concat(a: Mapping[str, Any], b: Mapping[str, Any], n: int) -> dict[str, Any]:
    out = {}
    for key, value in a.items():
        other = b.get(key, value)
        if isinstance(value, torch.Tensor):
            out[key] = torch.cat([_batched(value, n), _batched(other, n)])
        else:
            out[key] = value
    return out


def check_guidance_scale(scale: Any) -> float:
    """``scale`` as a float when it is a finite number >= 1; a clear error otherwise.

    One rule for every guidance scale the library takes (``ModelPair.guided``, ``GuidedDenoiser``,
    ``--guidance``): 1 is no guidance (diffusers' pipelines guide only when ``guidance_scale > 1``), above 1 is
    classifier-free guidance, and a scale below 1 (which would weigh the unconditional velocity more than the
    conditional one) or a non-finite one is refused before any model runs.

    Example:
        >>> check_guidance_scale(4)
        4.0
        >>> check_guidance_scale(0.0)
        Traceback (most recent call last):
        ...
        adaptive.errors.PairMismatchError: guidance scale must be a finite number >= 1 (1: no guidance, as diffusers treats guidance_scale <= 1), got 0.0
    """
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(scale, bool) or not math.isfinite(value) or value < 1.0:
        raise PairMismatchError(f"guidance scale must be a finite number >= 1 (1: no guidance, as diffusers treats "
                                f"guidance_scale <= 1), got {scale!r}")
    return value


class GuidedDenoiser:
    """Classifier-free guidance as a denoiser: ``v_u + scale * (v_c - v_u)``.

    ``uncond`` holds the unconditional keyword arguments (e.g. the null prompt's
    ``encoder_hidden_states``; a batch of 1 is broadcast); a call may override it with ``uncond=``.
    ``batched=True`` runs cond and uncond in one call of twice the batch (faster on GPUs),
    ``False`` in two calls (less memory). Either way both halves see the same model, so a schedule
    never splits a CFG pair.

    Example:
        >>> import torch
        >>> base = as_denoiser(lambda x, sigma, shift=0.0: x + shift)
        >>> guided = GuidedDenoiser(base, scale=3.0, uncond={"shift": torch.zeros(1, 1)})
        >>> float(guided(torch.zeros(1, 2), 1.0, shift=torch.ones(1, 1))[0, 0])
        3.0
    """

    def __init__(self, model: Denoiser, scale: float, uncond: Mapping[str, Any] | None = None,
                 batched: bool = True) -> None:
        self.model = as_denoiser(model)
        self.scale = check_guidance_scale(scale)
        if isinstance(self.model, GuidedDenoiser):
            raise PairMismatchError(
                f"{self.model!r} is already guided (scale {self.model.scale:g}); guidance would be applied twice. "
                "Guide the unguided model once, e.g. keep `base = ModelPair(large, small)` and call "
                "`base.guided(scale, uncond)` for each scale you need")
        self.uncond = dict(uncond or {})
        self.batched = batched

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, uncond: Mapping[str, Any] | None = None,
                 **cond: Any) -> torch.Tensor:
        uncond = self.uncond if uncond is None else uncond
        sigma = sigma_batch(sigma, x)
        n = x.shape[0]
        if self.scale == 1.0:
            return self.model(x, sigma, **cond)
        if self.batched:
            both = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]), **_concat(cond, uncond, n))
            v_cond, v_uncond = both.chunk(2)
        else:
            v_cond = self.model(x, sigma, **cond)
            v_uncond = self.model(x, sigma, **{**cond, **{k: _batched(v, n) for k, v in uncond.items()}})
        return v_uncond + self.scale * (v_cond - v_uncond)

    def __repr__(self) -> str:
        return f"GuidedDenoiser({self.model!r}, scale={self.scale})"


def with_unguided(models: Mapping[str, Any], plain: bool = False) -> dict[str, Any]:
    """``models`` and, for each guided one (:class:`GuidedDenoiser`, scale != 1), its conditional-only
    variant under ``name + ":cond"`` (the same model, one call, no guidance): what a plan that runs
    guidance only in an interval calls outside it. ``plain``: a model without guidance answers for
    its variant as it is (its one call is already conditional-only), so a plan calibrated on a guided
    pair also runs on the same models unguided.

    Example:
        >>> guided = GuidedDenoiser(as_denoiser(lambda x, sigma: x), scale=4.0)
        >>> sorted(with_unguided({"large": guided, "small": lambda x, s: x}))
        ['large', 'large:cond', 'small']
        >>> sorted(with_unguided({"large": guided, "small": lambda x, s: x}, plain=True))
        ['large', 'large:cond', 'small', 'small:cond']
    """
    out = dict(models)
    for name, model in models.items():
        variant = unguided(name)
        if is_unguided(name) or variant in out:
            continue
        if isinstance(model, GuidedDenoiser) and model.scale != 1.0:
            out[variant] = GuidedDenoiser(model.model, 1.0, model.uncond, model.batched)
        elif plain:
            out[variant] = model
    return out


class Passthrough:
    """A denoiser that changes how ``model`` is called (where it runs, who counts its calls), not what it
    computes: fingerprints and module lookups see through it to ``model``."""

    model: Denoiser

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        return self.model(x, sigma, **cond)


class DeviceDenoiser(Passthrough):
    """Run ``model`` on its own device (and dtype): the input and the conditioning move there, the
    velocity comes back to the caller's device and dtype. How a pair keeps Small on a second GPU.

    ``offload=True`` keeps the weights in CPU memory and moves the module to ``device`` for each
    call and back after it: the device holds Small only while Small runs (one weight transfer per
    call each way; for Wan 1.3B in bf16 about 2.6 GB).

    Example:
        >>> import torch
        >>> half = DeviceDenoiser(as_denoiser(lambda x, s: 2 * x), "cpu", dtype=torch.float64)
        >>> half(torch.ones(1, 2), 0.5).dtype
        torch.float32
    """

    def __init__(self, model: Any, device: torch.device | str, dtype: torch.dtype | None = None,
                 offload: bool = False) -> None:
        self.model = as_denoiser(model)
        self.device, self.dtype, self.offload = torch.device(device), dtype, offload
        self.module = underlying_module(self.model)
        if self.module is not None:
            self.module.to(device="cpu" if offload else self.device, dtype=dtype)

    def _move(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        dtype = self.dtype if self.dtype is not None and value.is_floating_point() else value.dtype
        return value.to(self.device, dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        if self.offload and self.module is not None:
            self.module.to(self.device)
        try:
            out = self.model(self._move(x), self._move(sigma_batch(sigma, x)),
                             **{k: self._move(v) for k, v in cond.items()})
        finally:
            if self.offload and self.module is not None:
                self.module.to("cpu")
        return out.to(x.device, x.dtype)

    def __repr__(self) -> str:
        return f"DeviceDenoiser({self.model!r}, device={self.device})"


def as_denoiser(model: Any) -> Denoiser:
    """Adapt ``model`` to the contract: a diffusers transformer, a callable, or a denoiser as is.

    Example:
        >>> import torch
        >>> as_denoiser(lambda x, sigma: -x)(torch.ones(1, 2), 0.5).tolist()
        [[-1.0, -1.0]]
    """
    if isinstance(model, (FunctionDenoiser, TransformerDenoiser, GuidedDenoiser, Passthrough)):
        return model
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        return TransformerDenoiser(model)
    if callable(model):
        return FunctionDenoiser(model)
    raise TypeError(
        f"cannot use {type(model).__name__} as a denoiser: pass a diffusers transformer or a callable "
        "model(x, sigma, **cond) -> velocity"
    )


def underlying_module(model: Denoiser) -> torch.nn.Module | None:
    """The torch module behind a denoiser, if any (for fingerprints and device moves)."""
    while isinstance(model, (GuidedDenoiser, Passthrough)):
        model = model.model
    if isinstance(model, TransformerDenoiser):
        return model.transformer
    if isinstance(model, FunctionDenoiser) and isinstance(model.fn, torch.nn.Module):
        return model.fn
    return model if isinstance(model, torch.nn.Module) else None
