"""An exact-velocity pair whose Small is safe only inside a prompt-dependent sigma window.

Data is Gaussian, ``x0 ~ N(mu, std^2 I)`` in ``D`` dimensions, so Large's velocity
``E[noise - x0 | x_sigma]`` is known in closed form. Small returns the same velocity for
``sigma`` in ``(lo, hi]`` and that velocity plus a fixed vector of norm ``offset`` elsewhere; the
window ``(lo, hi)`` is part of the conditioning (``window``, shape ``(batch, 2)``), so each "prompt"
has a known safe window (``lo = hi``: never safe). FLOPs are ballast matmuls of widths
``large_width``/``small_width``, so Small costs ``small_width / large_width`` of Large.

Used by the controller's tests and ``benchmarks/online_windows.py``.

Example:
    >>> import torch
    >>> from adaptive import sigmas
    >>> pair, grid, window = windowed_pair(), sigmas(10), torch.tensor([[0.2, 0.6]])
    >>> safe_steps(grid, (0.2, 0.6))
    [4, 5, 6, 7]
    >>> x = torch.randn(1, 16)
    >>> [round(float((pair.small(x, torch.tensor([s]), window=window) - pair.large(x, torch.tensor([s]),
    ...       window=window)).norm()), 3) for s in (0.8, 0.4)]      # off outside the window, exact inside
    [3.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adaptive.pair import ModelPair

DIM = 16


def _exact(x: torch.Tensor, sigma: torch.Tensor, mu: float, std: float) -> torch.Tensor:
    s = sigma.view(-1, 1).to(x.dtype)
    var = (1 - s) ** 2 * std ** 2 + s ** 2
    cov = s - (1 - s) * std ** 2
    return -mu + cov / var * (x - (1 - s) * mu)


def windowed_pair(mu: float = 0.5, std: float = 0.3, offset: float = 3.0, large_width: int = 64,
                  small_width: int = 8, dim: int = DIM) -> ModelPair:
    """The pair (see the module docstring); ``sample_shape=(dim,)``."""
    direction = torch.ones(dim) / dim ** 0.5
    ballast = {"large": torch.zeros(dim, large_width), "small": torch.zeros(dim, small_width)}

    def large(x: torch.Tensor, sigma: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        return _exact(x, sigma, mu, std) + (x @ ballast["large"]).sum(-1, keepdim=True) * 0

    def small(x: torch.Tensor, sigma: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, 1).to(x.dtype)
        inside = (s > window[:, :1]) & (s <= window[:, 1:2])
        error = torch.where(inside, torch.zeros_like(s), torch.full_like(s, offset)) * direction
        return _exact(x, sigma, mu, std) + error + (x @ ballast["small"]).sum(-1, keepdim=True) * 0

    return ModelPair(large, small, sample_shape=(dim,), name="windowed-gaussian")


def safe_steps(grid: torch.Tensor | Sequence[float], window: Sequence[float]) -> list[int]:
    """The steps ``i`` whose sigma lies in ``(lo, hi]``: where Small is exact."""
    values = [float(v) for v in grid][:-1]
    lo, hi = float(window[0]), float(window[1])
    return [i for i, s in enumerate(values) if lo < s <= hi]


def window_conds(windows: Sequence[Sequence[float]]) -> list[dict[str, torch.Tensor]]:
    """One conditioning dict per window (the calibration prompts)."""
    return [{"window": torch.tensor([[float(lo), float(hi)]])} for lo, hi in windows]


__all__ = ["DIM", "safe_steps", "window_conds", "windowed_pair"]
