"""Count what sampling costs: calls and rows per model, time inside the models, FLOPs; and the one
measuring loop, :func:`interleaved`, that times several ways of sampling side by side.

Example:
    >>> import torch
    >>> from adaptive import ModelPair, Schedule, sample, sigmas
    >>> meter = Meter(ModelPair(lambda x, s: x, lambda x, s: x))
    >>> _ = sample(meter.pair, torch.ones(2, 3), sigmas(10), Schedule.lsl(0.8, 0.3))
    >>> meter.calls
    {'large': 5, 'small': 5}
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

from adaptive.denoisers import Denoiser, Passthrough, first_row
from adaptive.pair import ModelPair


T = TypeVar("T")


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def _sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Counted(Passthrough):
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


def flops_of(run: Callable[[], Any]) -> int:
    """FLOPs of everything ``run()`` computes, counted by torch's ``FlopCounterMode`` (skipped
    work, e.g. a cached block, is not counted).

    Example:
        >>> linear = torch.nn.Linear(4, 4, bias=False)
        >>> flops_of(lambda: linear(linear(torch.ones(3, 4))))   # two calls of 2 * rows * in * out
        192
    """
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())


@dataclass
class Measurement(Generic[T]):
    """What :func:`interleaved` measured, per run name: wall seconds of every round (device
    synchronised before and after), peak device memory in GiB (NaN off CUDA), the output of the
    first round (to judge quality against a reference run of the same inputs) and, with a meter,
    the first round's model calls, its FLOPs and, per round, the seconds spent inside the models."""

    seconds: dict[str, list[float]]
    outputs: dict[str, T]
    peak_gib: dict[str, float]
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    model_seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Median seconds of one round of ``name``."""
        return statistics.median(self.seconds[name])

    def best(self, name: str) -> float:
        """Fewest seconds of one round of ``name``."""
        return min(self.seconds[name])

    def total(self, name: str) -> float:
        """Seconds of ``name`` summed over the rounds."""
        return sum(self.seconds[name])


def interleaved(runs: Mapping[str, Callable[[], T]], rounds: int = 1, device: torch.device | str = "cpu",
                meter: Meter | None = None, per_row: Mapping[str, int] | None = None, progress: bool = False,
                desc: str = "rounds") -> Measurement[T]:
    """Run every callable of ``runs`` once per round, in order, ``rounds`` times, so machine noise
    hits all of them alike; time each run between device synchronisations.

    Args:
        runs: name -> a callable that samples (its return value is kept from the first round).
        device: where the runs compute: CUDA devices are synchronised and their peak memory read.
        meter: a :class:`Meter` whose ``pair`` the runs use: reset before each run, read after it.
        per_row: FLOPs per latent row of each model (:func:`flops_per_row`): with a meter, each
            run's FLOPs are its counted rows times these.

    Example:
        >>> from adaptive import ModelPair, Schedule, sample, sigmas
        >>> meter = Meter(ModelPair(lambda x, s: x, lambda x, s: x))
        >>> runs = {"large": lambda: sample(meter.pair, torch.ones(2, 3), sigmas(4), None),
        ...         "blend": lambda: sample(meter.pair, torch.ones(2, 3), sigmas(4), Schedule.lsl(0.8, 0.3))}
        >>> m = interleaved(runs, rounds=3, meter=meter, per_row={"large": 10, "small": 1})
        >>> [len(m.seconds[k]) for k in runs], m.calls["blend"], m.flops
        ([3, 3], {'large': 2, 'small': 2}, {'large': 80.0, 'blend': 44.0})
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    cuda = device.type == "cuda"
    measured: Measurement[T] = Measurement({name: [] for name in runs}, {}, dict.fromkeys(runs, math.nan))
    for _ in tqdm(range(rounds), desc=desc, disable=not progress):
        for name, run in runs.items():
            if meter is not None:
                meter.reset()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            _sync_device(device)
            start = time.perf_counter()
            out = run()
            _sync_device(device)
            measured.seconds[name].append(time.perf_counter() - start)
            if cuda:
                peak = torch.cuda.max_memory_allocated(device) / 2**30
                measured.peak_gib[name] = peak if math.isnan(measured.peak_gib[name]) else max(peak, measured.peak_gib[name])
            measured.outputs.setdefault(name, out)
            if meter is not None:
                measured.calls.setdefault(name, dict(meter.calls))
                measured.model_seconds.setdefault(name, []).append(sum(meter.seconds.values()))
                if per_row is not None:
                    measured.flops.setdefault(name, float(meter.flops(dict(per_row))))
    return measured
