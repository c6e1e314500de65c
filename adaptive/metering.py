"""Count what sampling costs: calls and rows per model, time inside the models, FLOPs.

Example:
    >>> import torch
    >>> from adaptive import ModelPair, Schedule, sample, sigmas
    >>> meter = Meter(ModelPair(lambda x, s: x, lambda x, s: x))
    >>> _ = sample(meter.pair, torch.ones(2, 3), sigmas(10), Schedule.lsl(0.8, 0.3))
    >>> meter.calls
    {'large': 5, 'small': 5}
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from adaptive.denoisers import Denoiser, first_row
from adaptive.pair import ModelPair


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


class _Counted:
    def __init__(self, name: str, model: Denoiser, meter: Meter) -> None:
        self.name, self.model, self.meter = name, model, meter

    def __call__(self, x: torch.Tensor, sigma: Any, **cond: Any) -> torch.Tensor:
        meter = self.meter
        meter.calls[self.name] += 1
        meter.rows[self.name] += x.shape[0]
        if not meter.timed:
            return self.model(x, sigma, **cond)
        _sync(x)
        start = time.perf_counter()
        out = self.model(x, sigma, **cond)
        _sync(out)
        meter.seconds[self.name] += time.perf_counter() - start
        return out


class Meter:
    """Wraps a pair so each model call is counted (and, with ``timed=True``, timed with CUDA syncs,
    which is for measurement runs only). Use ``meter.pair`` in place of the pair."""

    def __init__(self, pair: ModelPair, timed: bool = False) -> None:
        self.timed = timed
        self.calls = {k: 0 for k in pair.models}
        self.rows = {k: 0 for k in pair.models}
        self.seconds = {k: 0.0 for k in pair.models}
        counted = {k: _Counted(k, v, self) for k, v in pair.models.items()}
        large, small = counted.pop("large"), counted.pop("small")
        self.pair = ModelPair(large, small, sample_shape=pair.sample_shape, name=pair.name, metric=pair.metric,
                              **counted)
        self.pair.check = pair.check  # type: ignore[method-assign]  # the dry run is not a sampling call

    def reset(self) -> None:
        for table in (self.calls, self.rows):
            for k in table:
                table[k] = 0
        for k in self.seconds:
            self.seconds[k] = 0.0

    def flops(self, per_row: dict[str, int]) -> int:
        """Total FLOPs of the counted calls given each model's FLOPs per latent row."""
        return sum(self.rows[k] * per_row[k] for k in self.rows)


def count_flops(model: Denoiser, x: torch.Tensor, sigma: float = 0.5, **cond: Any) -> int:
    """FLOPs of one call ``model(x, sigma, **cond)`` counted by torch's ``FlopCounterMode``.

    Example:
        >>> linear = torch.nn.Linear(4, 4, bias=False)
        >>> count_flops(lambda x, s: linear(x), torch.ones(3, 4))   # 2 * rows * in * out
        96
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, torch.full((x.shape[0],), sigma, device=x.device), **cond)
    return int(counter.get_total_flops())


def flops_per_row(pair: ModelPair, x: torch.Tensor, **cond: Any) -> dict[str, int]:
    """FLOPs per latent row (one sample, one call, guidance included) for each model of ``pair``.

    Example:
        >>> big, small = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)
        >>> flops_per_row(ModelPair(lambda x, s: big(big(x)), lambda x, s: small(x)), torch.ones(3, 4))
        {'large': 64, 'small': 32}
    """
    row = x[:1]
    row_cond = first_row(cond, x.shape[0])
    return {k: count_flops(m, row, **row_cond) for k, m in pair.models.items()}
