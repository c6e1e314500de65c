"""``ModelPair``: the Large and Small denoisers of one family, checked once at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from adaptive.denoisers import Denoiser, DeviceDenoiser, GuidedDenoiser, as_denoiser, first_row, underlying_module
from adaptive.errors import NonFiniteVelocityError, PairMismatchError


class ModelPair:
    """Two (or more) denoisers that share a latent space and conditioning.

    ``large`` and ``small`` may be diffusers transformers (adapted with
    :class:`~adaptive.denoisers.TransformerDenoiser`) or callables ``model(x, sigma, **cond)``.
    Extra models (e.g. a medium one for three-stage schedules) are given by keyword.
    ``sample_shape`` is the per-sample latent shape, used when a caller gives no ``shape``;
    ``metric`` the pair's default quality metric for calibration (see :mod:`adaptive.metrics`).

    Example:
        >>> import torch
        >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -0.9 * x, sample_shape=(3,))
        >>> sorted(pair.models)
        ['large', 'small']
    """

    def __init__(self, large: Any, small: Any, *, sample_shape: tuple[int, ...] | None = None,
                 name: str | None = None, metric: Any = None, **others: Any) -> None:
        self.models: dict[str, Denoiser] = {"large": as_denoiser(large), "small": as_denoiser(small)}
        self.models.update({k: as_denoiser(v) for k, v in others.items()})
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        self.name = name
        self.metric = metric  # the pair's own quality metric (e.g. the toy encoder); None: latent cosine
        self._checked: set[tuple] = set()

    @property
    def large(self) -> Denoiser:
        return self.models["large"]

    @property
    def small(self) -> Denoiser:
        return self.models["small"]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.models.items())
        return f"ModelPair({inner})"

    def guided(self, scale: float, uncond: Mapping[str, Any] | None = None, batched: bool = True) -> ModelPair:
        """The same pair with classifier-free guidance applied to every model, once.

        ``scale`` is a finite number >= 1 (1: no guidance, as diffusers treats ``guidance_scale <= 1``);
        anything else, or a pair that is already guided, is refused (:class:`PairMismatchError`): keep the
        unguided pair and guide it once per scale you need.

        Example:
            >>> import torch
            >>> base = ModelPair(lambda x, s, c: x + c, lambda x, s, c: x)
            >>> pair = base.guided(4.0, {"c": torch.zeros(1, 1)})
            >>> pair.guided(4.0)
            Traceback (most recent call last):
            ...
            adaptive.errors.PairMismatchError: GuidedDenoiser(FunctionDenoiser(...), scale=4.0) is already guided (scale 4); guidance would be applied twice. Guide the unguided model once, e.g. keep `base = ModelPair(large, small)` and call `base.guided(scale, uncond)` for each scale you need
        """
        wrapped = {k: GuidedDenoiser(v, scale, uncond, batched) for k, v in self.models.items()}
        large, small = wrapped.pop("large"), wrapped.pop("small")
        return ModelPair(large, small, sample_shape=self.sample_shape, name=self.name, metric=self.metric, **wrapped)

    def placed(self, name: str, device: torch.device | str, dtype: torch.dtype | None = None,
               offload: bool = False) -> ModelPair:
        """The same pair with model ``name`` run on ``device`` (e.g. Small on a second GPU) or, with
        ``offload=True``, streamed from CPU memory at each call; guidance stays around it.

        Example:
            >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -x).placed("small", "cpu")
            >>> pair.small
            DeviceDenoiser(FunctionDenoiser(...), device=cpu)
        """
        if name not in self.models:
            raise PairMismatchError(f"no model named {name!r}; the pair has {sorted(self.models)}")
        models = dict(self.models)
        model = models[name]
        if isinstance(model, GuidedDenoiser):
            models[name] = GuidedDenoiser(DeviceDenoiser(model.model, device, dtype, offload), model.scale,
                                          model.uncond, model.batched)
        else:
            models[name] = DeviceDenoiser(model, device, dtype, offload)
        large, small = models.pop("large"), models.pop("small")
        return ModelPair(large, small, sample_shape=self.sample_shape, name=self.name, metric=self.metric, **models)

    def compile(self, regional: bool = False, **options: Any) -> ModelPair:
        """``torch.compile`` every model's module in place (``module.compile(**options)``, e.g.
        ``mode="max-autotune"``); the sampler loop has no per-step host sync, so graphs stay whole.

        ``regional=True`` compiles only the repeated transformer blocks of diffusers models
        (``compile_repeated_blocks``: one block graph per model, so a 40-layer Wan 14B compiles in
        seconds rather than minutes, at nearly the same speed); a module without repeated blocks
        is compiled whole.

        Example:
            >>> import torch
            >>> class Velocity(torch.nn.Module):
            ...     def forward(self, x, sigma):
            ...         return -x
            >>> pair = ModelPair(Velocity(), Velocity()).compile(backend="eager")
            >>> float(pair.large(torch.ones(1, 2), 0.5)[0, 0])
            -1.0
        """
        for module in self.modules().values():
            if module is None:
                continue
            if regional and getattr(module, "_repeated_blocks", None):
                module.compile_repeated_blocks(**options)
            else:
                module.compile(**options)
        return self

    def modules(self) -> dict[str, torch.nn.Module | None]:
        """The torch module behind each model (None for plain functions)."""
        return {k: underlying_module(v) for k, v in self.models.items()}

    def reset_caches(self) -> None:
        """Reset diffusers cache hooks (e.g. First Block Cache) of every model before a new video."""
        for module in self.modules().values():
            if module is not None and getattr(module, "is_cache_enabled", False):
                module._reset_stateful_cache()

    def check(self, x: torch.Tensor, **cond: Any) -> None:
        """One tiny dry call of every model on ``x[:1]``: same output shape as the input, finite.

        Raises :class:`~adaptive.errors.NonFiniteVelocityError` if ``x`` (the noise) or a model's
        velocity holds NaN/Inf, and :class:`PairMismatchError` on a shape mismatch, naming the model
        and the fix. The noise is checked on every call (one host read); the dry call runs once per
        input shape/dtype and conditioning shapes. Cheap next to sampling (one row, one call per model).

        Example:
            >>> import torch
            >>> pair = ModelPair(lambda x, s: -x, lambda x, s: x / 0)
            >>> pair.check(torch.ones(2, 3))
            Traceback (most recent call last):
            ...
            adaptive.errors.NonFiniteVelocityError: model 'small' returned NaN/Inf in the dry run ...
        """
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteVelocityError("the noise holds NaN/Inf before any model ran; draw it again (e.g. "
                                         "torch.randn) and check what produced it")
        # Cond shapes are part of the key: a later call whose conditioning differs (another batch,
        # another text width) is checked again, not waved through to fail deep inside a model.
        key = (tuple(x.shape), x.dtype, x.device,
               tuple((k, tuple(v.shape) if isinstance(v, torch.Tensor) else None) for k, v in sorted(cond.items())))
        if key in self._checked:
            return
        check_models(self.models, x, cond, self.sample_shape)
        self._checked.add(key)


def check_models(models: Mapping[str, Denoiser], x: torch.Tensor, cond: Mapping[str, Any],
                 sample_shape: tuple[int, ...] | None = None) -> None:
    """One dry call of each of ``models`` on ``x[:1]`` at sigma 1 (no cache): a velocity tensor shaped like
    its input, finite; :class:`PairMismatchError` or :class:`NonFiniteVelocityError` naming the model and the
    fix otherwise. What :meth:`ModelPair.check` and :meth:`adaptive.Pool.check` run before any real work."""
    batch = x.shape[0]
    # A tensor whose first dimension is neither the batch nor 1 is passed whole to every row (a
    # shared table); when a model then fails, that is the likely cause and is named first.
    misbatched = {k: v.shape[0] for k, v in cond.items()
                  if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] not in (1, batch)}
    blame = (f"conditioning {misbatched} (rows per tensor) does not match the noise batch of {batch}: give one "
             "row per sample (or a single row shared by all samples). ") if misbatched else ""
    if sample_shape is not None and tuple(x.shape[1:]) != sample_shape:
        raise PairMismatchError(f"noise has per-sample shape {tuple(x.shape[1:])} but the pair expects "
                                f"{sample_shape}; draw noise of shape (batch, *pair.sample_shape)")
    row = x[:1]
    row_cond = first_row(cond, x.shape[0])
    with torch.no_grad():
        for name, model in models.items():
            try:
                out = model(row, torch.ones(1, device=x.device), **row_cond)
            except (RuntimeError, TypeError, ValueError) as err:
                raise PairMismatchError(
                    blame + f"model {name!r} failed on a latent of shape {tuple(row.shape)} with conditioning "
                    f"{sorted(cond)}: {err}." + ("" if blame else " Check that both models take the same "
                    "channels, patch size and text embedding width (text_dim), and that cond has their "
                    "argument names")) from err
            if not isinstance(out, torch.Tensor):
                raise PairMismatchError(
                    f"model {name!r} returned {type(out).__name__}, not a velocity tensor; a denoiser is "
                    "model(x, sigma, **cond) -> tensor shaped like x (did a function forget `return`?)")
            if tuple(out.shape) != tuple(row.shape):
                raise PairMismatchError(
                    blame + f"model {name!r} returned shape {tuple(out.shape)} for input {tuple(row.shape)}"
                    + ("" if blame else "; Large and Small must map a latent to a velocity of the same shape "
                       "(same in/out channels and patch size)"))
            if not bool(torch.isfinite(out).all()):
                raise NonFiniteVelocityError(
                    f"model {name!r} returned NaN/Inf in the dry run (one row at sigma 1, before sampling "
                    "step 0) on finite noise; check its weights and dtype (fp16 overflows: try bf16 or "
                    "fp32) and its conditioning")
