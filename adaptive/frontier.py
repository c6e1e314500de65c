"""The measured frontier: every one-window blend against Large with fewer steps, at the same compute.

A blend is only worth running if it beats the obvious alternative, Large alone with the steps its
compute buys. :func:`measure_frontier` measures, on the same noise and prompts, Large alone with
every step count ``1 .. num_steps`` and every Small window ``[start, stop)`` of each grid in
``blend_steps`` (Large elsewhere: Large-Small-Large, Small-first and Small-last are all one-window
blends), each judged per sample against Large with all ``num_steps`` steps on every metric asked
for. The :class:`Frontier` it returns says which blends beat Large-with-fewer-steps beyond the
sample noise (a paired comparison on the same noise), whether a plan is on the frontier, and writes
a table, a Pareto plot and JSON (``flowblend frontier``).

Example:
    >>> import torch
    >>> from adaptive import ModelPair
    >>> pair = ModelPair(lambda x, s: x - 0.5, lambda x, s: x - 0.5, sample_shape=(4,))  # Small exact
    >>> f = measure_frontier(pair, [{}], num_steps=4, seeds=[0, 1], progress=False)
    >>> len(f.large_fewer()), len(f.blends()), f.metric
    (4, 10, 'latent_structure')
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive.calibration import Evaluator, StepSearch, small_cost_ratio
from adaptive.metrics import LatentStructure, Metric, WorstOf
from adaptive.pair import ModelPair
from adaptive.probing import run_probe
from adaptive.profiles import atomic_write

Z_NOISE = 2.0  # a difference counts when it exceeds this many standard errors of the paired mean
MIN_MARGIN = 1e-4  # and this much: identical plans differ by float rounding with no spread at all


@dataclasses.dataclass(frozen=True)
class Point:
    """One measured plan: Small on steps ``start .. stop - 1`` of ``sigmas(steps, shift)`` (Large
    alone when ``start == stop``), its compute as a fraction of Large with all steps, and per metric
    the per-sample scores against Large with all steps."""

    steps: int
    start: int
    stop: int
    cost: float
    scores: Mapping[str, tuple[float, ...]]

    @property
    def is_large_only(self) -> bool:
        return self.start >= self.stop

    def quality(self, metric: str) -> float:
        """Mean score on ``metric`` (NaN when a sample's score is not finite)."""
        return float(np.mean(self.scores[metric]))

    def label(self) -> str:
        if self.is_large_only:
            return f"Large, {self.steps} step{'' if self.steps == 1 else 's'}"
        return f"Small on steps {self.start}-{self.stop - 1} of {self.steps}"

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "start": self.start, "stop": self.stop, "cost": self.cost,
                "scores": {k: list(v) for k, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Point:
        return cls(int(data["steps"]), int(data["start"]), int(data["stop"]), float(data["cost"]),
                   {str(k): tuple(float(x) for x in v) for k, v in data["scores"].items()})


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``point`` against ``other`` on one metric, sample by sample: mean difference and its
    standard error (sample noise)."""

    point: Point
    other: Point
    metric: str
    difference: float
    stderr: float

    def beats(self, z: float = Z_NOISE) -> bool:
        """Whether ``point`` scores higher than ``other`` by more than ``z`` standard errors (and
        more than float rounding, :data:`MIN_MARGIN`); never on one sample (no standard error)."""
        return math.isfinite(self.stderr) and self.difference > max(z * self.stderr, MIN_MARGIN)

    def margin(self) -> str:
        """``+0.0123 +- 0.0045``, or the difference and "one sample: no standard error"."""
        if not math.isfinite(self.stderr):
            return f"{self.difference:+.4f} (one sample: no standard error)"
        return f"{self.difference:+.4f} +- {self.stderr:.4f}"

    def describe(self) -> str:
        return (f"{self.point.label()} ({self.point.quality(self.metric):.4f} at {self.point.cost:.2f}) vs "
                f"{self.other.label()} ({self.other.quality(self.metric):.4f} at {self.other.cost:.2f}): "
                f"{self.margin()}")


@dataclasses.dataclass(frozen=True)
class Frontier:
    """Every measured plan of a pair on one grid (see the module doc). ``metric`` is the primary
    metric (the calibration's); ``scores`` of every point also hold the other metrics measured."""

    pair_name: str
    num_steps: int
    shift: float
    small_cost: float
    metric: str
    points: tuple[Point, ...]
    samples: int
    command: str = ""
    sampler: str = "euler"  # the solver every plan ran (adaptive.samplers)

    @property
    def metrics(self) -> list[str]:
        return list(self.points[0].scores) if self.points else [self.metric]

    def large_fewer(self) -> dict[int, Point]:
        """Large alone, by step count."""
        return {p.steps: p for p in self.points if p.is_large_only}

    def blends(self) -> list[Point]:
        return [p for p in self.points if not p.is_large_only]

    def large_bought(self, point: Point) -> Point:
        """Large alone with the most steps whose compute is at most ``point``'s: the alternative
        that costs no more (one step when even that costs more)."""
        large = self.large_fewer()
        affordable = [k for k, p in large.items() if p.cost <= point.cost + 1e-9]
        return large[max(affordable) if affordable else min(large)]

    def compare(self, point: Point, other: Point, metric: str | None = None) -> Comparison:
        """``point`` against ``other`` on ``metric`` (default: the primary one), paired by sample."""
        metric = metric or self.metric
        diff = np.asarray(point.scores[metric], float) - np.asarray(other.scores[metric], float)
        stderr = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan  # one: unknown
        return Comparison(point, other, metric, float(diff.mean()), stderr)

    def winners(self, metric: str | None = None, z: float = Z_NOISE) -> list[Comparison]:
        """The blends that beat Large with the steps their compute buys, beyond sample noise."""
        found = [self.compare(b, self.large_bought(b), metric) for b in self.blends()]
        return sorted((c for c in found if c.beats(z)), key=lambda c: -c.difference)

    def pareto(self, metric: str | None = None) -> list[Point]:
        """Points no other point beats on mean quality at no more compute, cheapest first."""
        metric = metric or self.metric
        front, best = [], -math.inf
        for p in sorted(self.points, key=lambda p: (p.cost, -p.quality(metric))):
            if p.quality(metric) > best:
                front.append(p)
                best = p.quality(metric)
        return front

    def find(self, steps: int, start: int, stop: int) -> Point | None:
        start, stop = (0, 0) if start >= stop else (start, stop)
        return next((p for p in self.points if (p.steps, p.start, p.stop) == (steps, start, stop)), None)

    def dominating(self, point: Point, metric: str | None = None, z: float = Z_NOISE) -> list[Comparison]:
        """Measured plans that cost no more than ``point`` and beat it beyond sample noise."""
        found = [self.compare(p, point, metric) for p in self.points if p.cost <= point.cost + 1e-9 and p is not point]
        return sorted((c for c in found if c.beats(z)), key=lambda c: -c.difference)

    def verdict(self, steps: int, start: int, stop: int, metric: str | None = None) -> str:
        """Whether the plan is on this frontier, in words (it must have been measured)."""
        point = self.find(steps, start, stop)
        if point is None:
            return f"the plan ({steps} steps, Small {start}..{stop - 1}) was not measured on this frontier"
        against = self.dominating(point, metric)
        if not against:
            if self.samples < 2:
                return (f"not judged: one sample has no standard error, so no plan at its compute ({point.cost:.2f}) "
                        f"can be said to beat {point.label()} or lose to it; measure more prompts or seeds")
            return (f"on the measured frontier: no measured plan at its compute ({point.cost:.2f}) beats "
                    f"{point.label()} beyond sample noise ({len(self.points)} plans, {self.samples} samples)")
        return f"NOT on the measured frontier: {against[0].describe()}"

    def cheapest(self, target: float, metric: str | None = None) -> Point:
        """The cheapest measured plan whose mean quality meets ``target``."""
        metric = metric or self.metric
        meeting = [p for p in self.points if p.quality(metric) >= target]
        return min(meeting, key=lambda p: (p.cost, -p.quality(metric))) if meeting else self.large_fewer()[self.num_steps]

    def table(self, z: float = Z_NOISE) -> str:
        """Markdown: per metric, how many blends beat Large-with-fewer-steps beyond noise, then per
        Large step count the best blend its compute buys on the primary metric."""
        lines = [f"{len(self.blends())} one-window blends and Large alone with 1..{self.num_steps} steps "
                 f"({self.sampler}, shift {self.shift:g}), "
                 f"{self.samples} samples, Small costs {self.small_cost:.3f} of a Large call; a blend beats "
                 f"Large-fewer when its paired mean exceeds Large with the steps its compute buys by > {z:g} "
                 "standard errors."]
        if self.samples < 2:
            lines.append("One sample has no standard error: no blend can be said to beat Large-fewer beyond noise; "
                         "measure more prompts or seeds.")
        lines += ["", "| metric | blends that beat Large-fewer | best margin |", "|---|---:|---|"]
        for metric in self.metrics:
            won = self.winners(metric, z)
            lines.append(f"| {metric} | {len(won)} of {len(self.blends())} | "
                         f"{won[0].describe() if won else '-'} |")
        large = self.large_fewer()
        lines += ["", f"| Large steps | Large ({self.metric}) | best blend whose compute buys that many | its "
                      "score | paired difference |", "|---:|---:|---|---:|---:|"]
        for k in sorted(large):
            bought = [b for b in self.blends() if self.large_bought(b).steps == k and b.cost >= large[k].cost - 1e-9]
            if not bought:
                continue
            best = max(bought, key=lambda b: b.quality(self.metric))
            c = self.compare(best, large[k])
            lines.append(f"| {k} | {large[k].quality(self.metric):.4f} | {best.label()} ({best.cost:.2f}) | "
                         f"{best.quality(self.metric):.4f} | {c.margin()} |")
        return "\n".join(lines)

    def plot(self, path: Path | str, highlight: Sequence[Point] = ()) -> Path:
        """Quality against compute per metric: every blend (dots, coloured by where its window
        sits), Large with fewer steps (line) and ``highlight`` (e.g. a profile's plan)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from adaptive.plots import save_figure

        metrics = self.metrics
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
        large = self.large_fewer()
        dots = None
        for ax, metric in zip(axes[0], metrics):
            blends = self.blends()
            dots = ax.scatter([b.cost for b in blends], [b.quality(metric) for b in blends], s=8, cmap="viridis",
                              c=[(b.start + b.stop) / 2 / b.steps for b in blends], label="one Small window")
            ax.plot([large[k].cost for k in sorted(large)], [large[k].quality(metric) for k in sorted(large)], "r.-",
                    label="Large alone, fewer steps")
            for p in highlight:
                ax.scatter([p.cost], [p.quality(metric)], marker="*", s=120, c="k", label=p.label())
            low = min(large[k].quality(metric) for k in large if large[k].cost >= 0.25) if large else 0.0
            ax.set_ylim(max(-0.05, low - 0.05), 1.005)
            ax.set_xlabel("compute (fraction of Large with all steps)")
            ax.set_title(f"{metric} vs Large with {self.num_steps} steps", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
        if dots is not None:
            fig.colorbar(dots, ax=axes[0][-1], label="window middle / steps")
        fig.suptitle(f"{self.pair_name}: {self.samples} samples, {self.sampler} on {self.num_steps} steps, "
                     f"shift {self.shift:g}",
                     fontsize=9)
        return save_figure(fig, path)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["points"] = [p.to_dict() for p in self.points]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict()) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Frontier:
        fields = {f.name for f in dataclasses.fields(cls)} - {"points"}
        return cls(points=tuple(Point.from_dict(p) for p in data["points"]), **{k: data[k] for k in fields if k in data})

    @classmethod
    def load(cls, path: Path | str) -> Frontier:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: Path | str) -> Path:
        return atomic_write(Path(path), self.to_json())


class _Recorder:
    """The primary metric, recording every metric's per-sample scores of the last call (so each
    blend's samples are produced once and read by all metrics)."""

    def __init__(self, metrics: Mapping[str, Metric], primary: str) -> None:
        self.metrics, self.primary, self.name = dict(metrics), primary, primary
        self.last: dict[str, tuple[float, ...]] = {}

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        scores = {name: m(generated, reference).detach().float().cpu() for name, m in self.metrics.items()}
        self.last = {name: tuple(float(v) for v in s) for name, s in scores.items()}
        return scores[self.primary]


def default_metrics(pair: ModelPair) -> tuple[str, dict[str, Metric]]:
    """The pair's calibration metric (latent cosine without one) and, for a worst-of metric, its parts."""
    metric = pair.metric or LatentStructure()
    name = getattr(metric, "name", type(metric).__name__)
    metrics: dict[str, Metric] = {name: metric}
    if isinstance(metric, WorstOf):
        metrics.update({getattr(m, "name", type(m).__name__): m for m in metric.metrics})
    return name, metrics


@torch.no_grad()
def measure_frontier(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int = 30,
                     seeds: Sequence[int] = (0, 1), shift: float = 1.0, shape: Sequence[int] | None = None,
                     metrics: Mapping[str, Metric] | None = None, blend_steps: Sequence[int] | None = None,
                     extra: Sequence[tuple[int, int, int]] = (), progress: bool = True,
                     command: str = "", sampler: Any = None) -> Frontier:
    """Measure the frontier of ``pair`` on ``sigmas(num_steps, shift)`` (see the module doc), or on
    ``sampler``'s grids and steps (``"unipc"``, ``"dpm++"`` or a diffusers flow scheduler: every plan
    runs that solver, its history carried across the model switch).

    Args:
        conds, seeds: the samples (every cond with every seed), as in :func:`~adaptive.calibrate`.
        metrics: name -> metric; the first is the primary one. Default: the pair's metric and, for a
            worst-of metric, each of its parts.
        blend_steps: grids whose every one-window blend is measured (default: ``num_steps`` only;
            a grid of n steps has n (n + 1) / 2 windows).
        extra: more plans ``(steps, start, stop)`` to measure, e.g. a profile's.

    Cost per sample: the Large trajectory on each grid (``n (n + 1) / 2`` Large calls for every
    step count) plus, per window, the Small steps not shared with the previous window of the same
    start and the Large steps after it.
    """
    from tqdm.auto import tqdm

    if not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    grids = sorted({num_steps} if blend_steps is None else {int(s) for s in blend_steps})
    if any(not 1 <= s <= num_steps for s in grids):
        raise ValueError(f"blend_steps must lie in 1..{num_steps}, got {sorted(grids)}")
    for steps, start, stop in extra:
        if not (1 <= steps <= num_steps and 0 <= start <= stop <= steps):
            raise ValueError(f"extra plan {(steps, start, stop)} is not a window of a grid of 1..{num_steps} steps")
    if metrics is None:
        primary, chosen = default_metrics(pair)
    else:
        if not metrics:
            raise ValueError("metrics must name at least one metric")
        primary, chosen = next(iter(metrics)), dict(metrics)
    recorder = _Recorder(chosen, primary)
    _, reference = run_probe(pair, conds, num_steps, seeds, shift, shape, [0], progress, sampler)
    search = StepSearch(Evaluator(pair, reference, recorder, small_cost_ratio(pair, reference)))
    samples = len(reference.final)
    identical = {name: (1.0,) * samples for name in chosen}

    def measure(steps: int, start: int, stop: int) -> Point:
        evaluator = search.at(steps)
        if start >= stop and steps == num_steps:
            return Point(steps, 0, 0, 1.0, identical)
        evaluator.qualities(start, stop)
        return Point(steps, start if start < stop else 0, stop if start < stop else 0, evaluator.cost(start, stop),
                     dict(recorder.last))

    plans = [(k, 0, 0) for k in range(1, num_steps + 1)]
    plans += [(n, a, b) for n in grids for a in range(n) for b in range(a + 1, n + 1)]
    plans += [p for p in extra if p not in plans and not (p[1] >= p[2] and (p[0], 0, 0) in plans)]
    points = [measure(*p) for p in tqdm(plans, desc="frontier", disable=not progress)]
    return Frontier(pair_name=pair.name or "pair", num_steps=num_steps, shift=search.shift,
                    small_cost=search.full.small_cost, metric=primary, points=tuple(points), samples=samples,
                    command=command, sampler=search.sampler.name)


def frontier_path(store_root: Path | str, pair_fingerprint: str, sampler: str) -> Path:
    """Where ``flowblend frontier`` keeps a pair's frontier in a profile store (read by calibrate)."""
    from adaptive.profile_store import safe_key
    return Path(store_root) / "frontiers" / f"{safe_key(pair_fingerprint)}__{safe_key(sampler)}.json"


__all__ = ["Comparison", "Frontier", "Point", "Z_NOISE", "default_metrics", "frontier_path", "measure_frontier"]
