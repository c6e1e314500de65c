"""``flowblend bench``: the FlowBlending comparison table, measured side by side in one process.

:func:`bench_rows` builds the table's rows for a pair: Large only, the noise band, Small only,
FlowBlending with the chosen plan (:func:`blend_plan`), the stored profile's per-prompt and online
rows, the oracle window, and its peers at the same compute (Small-first, Small-last, SRDiffusion's
hand-over, Large with fewer steps, Heun, First Block Cache). :func:`run_bench` samples every row on
the same prompts and seeds in interleaved rounds (:func:`adaptive.metering.interleaved`), so
machine noise hits all of them alike and every ratio in the table comes from that one run. FLOPs
are counted by torch's ``FlopCounterMode`` on one video per row (caching rows included, so skipped
blocks are not counted).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive.metering import flops_of, flops_per_row, interleaved
from adaptive.metrics import rel_l2
from adaptive.pair import ModelPair
from adaptive.profiles import Profile
from adaptive.samplers import Sampler
from adaptive.sampling import SAMPLERS, sample, sigmas
from adaptive.schedule import Schedule, base_of, call_cost, is_unguided


@dataclass
class Row:
    """One way of sampling: a schedule, a step count, a solver, optionally a cache accelerator.

    ``schedule`` is anything :func:`adaptive.sample` takes: a :class:`Schedule`, None (Large only), a
    per-prompt :class:`~adaptive.Profile` or a :class:`~adaptive.controller.ControllerConfig`. Rows
    whose plan differs per sample count FLOPs over the whole batch (probes included).
    """

    name: str
    schedule: Any
    num_steps: int
    sampler: str = "euler"
    cache: float | None = None  # First Block Cache threshold on the Large model
    noise: torch.Tensor | None = None  # other noise (the seed-to-seed noise band row)
    metrics: dict[str, float] = field(default_factory=dict)


def matched_steps(fraction: float, num_steps: int) -> int:
    """Large-only step count with the same compute as ``fraction`` of ``num_steps`` Large steps."""
    return max(1, int(round(fraction * num_steps)))


def matched_switch(fraction: float, small_cost: float, num_steps: int) -> int:
    """Small steps k for a two-stage schedule costing ``fraction`` of Large-only: (k r + n - k) / n."""
    return int(np.clip(round(num_steps * (1 - fraction) / max(1e-9, 1 - small_cost)), 0, num_steps))


def _falls_too_little(previous: torch.Tensor, change: torch.Tensor, threshold: float) -> torch.Tensor:
    """SRDiffusion's hand-over test per row: the relative change of Large's velocity fell by less
    than ``threshold`` (relative) since the previous step."""
    return (previous - change) < threshold * previous


@dataclass(frozen=True)
class SRDiffusionRule:
    """SRDiffusion's online rule (Cheng et al., arXiv 2505.19151) as a bench competitor: Large
    first; a sample hands over to Small for all its remaining steps once the relative change of
    Large's velocity between consecutive steps, ``||v_t - v_(t-1)|| / ||v_(t-1)||``, stops falling
    by more than ``threshold`` (relative to its previous value); never back. The decision reads only
    Large's own velocities, so it costs no extra call.

    Example:
        >>> rule = SRDiffusionRule(0.2)
        >>> changes = np.array([[1.0, 0.5, 0.45, 0.4]]).T   # steps 1..4 against the step before
        >>> rule.handover(changes)   # at step 3 the change fell by 10% < 20%: Small from step 4 on
        array([4])
    """

    threshold: float

    def handover(self, changes: np.ndarray) -> np.ndarray:
        """The first Small step per row, from Large's velocity changes ``changes[t - 1, row]``
        (step t against step t - 1, t >= 1) along Large's own trajectory; the number of steps
        (never) where the rule does not fire."""
        c = torch.as_tensor(np.asarray(changes, float))
        first = np.full(c.shape[1], c.shape[0] + 1)
        for t in range(1, c.shape[0]):
            fired = _falls_too_little(c[t - 1], c[t], self.threshold).numpy() & (first > c.shape[0])
            first[fired] = t + 2  # decided after step t + 1's velocity: Small from the next step
        return first

    @classmethod
    def matched(cls, changes: np.ndarray, fraction: float, small_cost: float, num_steps: int) -> SRDiffusionRule:
        """The threshold whose mean compute over these rows is closest to ``fraction`` of Large-only."""
        c = np.asarray(changes, float)
        falls = (c[:-1] - c[1:]) / np.maximum(c[:-1], 1e-12)
        seen = np.unique(falls[np.isfinite(falls)])
        # midway between observed falls, so float rounding online cannot flip a row's decision
        candidates = np.concatenate([[-np.inf, np.inf], (seen[:-1] + seen[1:]) / 2, seen[-1:] + 1.0, seen[:1] - 1.0])

        def cost(threshold: float) -> float:
            small = np.clip(num_steps - cls(threshold).handover(c), 0, num_steps)
            return float(np.mean(1 - small * (1 - small_cost) / num_steps))

        best = min(candidates, key=lambda th: abs(cost(th) - fraction))
        return cls(float(best) if np.isfinite(best) else (1e9 if best > 0 else -1e9))

    def denoiser(self, pair: ModelPair) -> _Handover:
        """A fresh switch for one sampling run (it keeps each row's last velocity and change)."""
        return _Handover(self, pair.large, pair.small)


class _Handover:
    """The rule run online: Large on rows not yet handed over (their velocities decide), Small on the rest."""

    def __init__(self, rule: SRDiffusionRule, large: Any, small: Any) -> None:
        self.rule, self.large, self.small = rule, large, small
        self.on_small: torch.Tensor | None = None
        self.last_v: torch.Tensor | None = None
        self.last_change: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        from adaptive.denoisers import select_rows, sigma_batch

        batch, sigma = x.shape[0], sigma_batch(sigma, x)
        on_small = torch.zeros(batch, dtype=torch.bool) if self.on_small is None else self.on_small
        v = torch.empty_like(x)
        for model, mask in ((self.large, ~on_small), (self.small, on_small)):
            rows = mask.nonzero().flatten().tolist()
            if rows:
                index = torch.as_tensor(rows, device=x.device)
                v[index] = model(x[index], sigma[index], **select_rows(cond, batch, rows))
        if self.last_v is not None:
            change = rel_l2(v, self.last_v).cpu()  # one host read per step: the rule decides on the host
            if self.last_change is not None:
                on_small = on_small | (~on_small & _falls_too_little(self.last_change, change, self.rule.threshold))
            self.last_change = change
        self.last_v, self.on_small = v, on_small  # v is this step's own tensor: no copy
        return v


def velocity_changes(pair: ModelPair, noise: torch.Tensor, grid: torch.Tensor, cond: dict[str, Any]) -> np.ndarray:
    """``||v_t - v_(t-1)|| / ||v_(t-1)||`` per step t >= 1 and row along Large's own trajectory."""
    from adaptive.sampling import sample

    seen: list[torch.Tensor] = []
    sample(pair, noise, grid, None, callback=lambda info: seen.append(info["v"]), **cond)
    return np.stack([rel_l2(b, a).cpu().numpy() for a, b in zip(seen, seen[1:])])


@dataclass(frozen=True)
class BlendPlan:
    """The plan of the table's FlowBlending row (row 3): its schedule, its step count (calibration
    may recommend fewer steps than the table's grid) and where it came from, in words."""

    schedule: Schedule
    steps: int
    source: str


def plan_label(schedule: Schedule, steps: int) -> str:
    """``Large, 9 steps`` or ``Large-Small-Large, 30 steps``: a plan named by its stages, with the
    sigma interval where guidance runs when it does not run everywhere.

    Example:
        >>> plan_label(Schedule.lsl(0.85, 0.3), 30)
        'Large-Small-Large, 30 steps'
        >>> plan_label(Schedule.large_only().guided_within(0.97, 0.44), 8)
        'Large, 8 steps, guidance for sigma in (0.44, 0.97]'
    """
    names = [base_of(stage.model).capitalize() for stage in schedule.stages]
    stages = "-".join(name for i, name in enumerate(names) if i == 0 or name != names[i - 1])
    guided = [stage for stage in schedule.stages if not is_unguided(stage.model)]
    if len(guided) == len(schedule.stages):
        return f"{stages}, {steps} steps"
    if not guided:
        return f"{stages}, {steps} steps, no guidance"
    return (f"{stages}, {steps} steps, guidance for sigma in ({min(s.sigma_lo for s in guided):.2g}, "
            f"{max(s.sigma_hi for s in guided):.2g}]")


def plan_fraction(schedule: Schedule, steps: int, num_steps: int, shift: float, small_cost: float,
                  sampler: str = "euler") -> float:
    """``schedule`` on ``sampler``'s grid of ``steps`` at ``shift`` (Euler: ``sigmas(steps, shift)``) as a
    fraction of Large with ``num_steps`` (Small at ``small_cost`` a call, a step without guidance half
    its model's call).

    Example:
        >>> plan_fraction(Schedule.large_only().guided_within(0.97, 0.44), 8, 30, 3.0, 0.1)
        0.21666666666666667
    """
    return sum(call_cost(m, small_cost) for m in schedule.step_models(_grid(sampler, steps, shift))) / num_steps


def _grid(sampler: str, steps: int, shift: float) -> list[float]:
    """The grid a row's solver runs: Euler's and Heun's ``sigmas(steps, shift)``, else the sampler's own."""
    return sigmas(steps, shift).tolist() if sampler in SAMPLERS else Sampler.of(sampler, shift).grid(steps)


def blend_plan(profile: Profile | None, num_steps: int, fallback: Schedule) -> BlendPlan:
    """The FlowBlending row's plan on ``num_steps``: the stored profile's recommended plan (a blend,
    or Large with fewer steps) when it was calibrated on this grid; else its window (mapped by
    sigma); else ``fallback``, an uncalibrated window.

    Example:
        >>> blend_plan(None, 30, Schedule.lsl(0.85, 0.3)).source
        'default window (no profile stored)'
    """
    if profile is not None and profile.plan and num_steps == profile.num_steps:
        # what calibration recommends (a blend, or Large with fewer steps); peers match its compute
        schedule = profile.plan_schedule()
        return BlendPlan(schedule, profile.steps,
                         f"recommended plan, profile {profile.sampler}: {plan_label(schedule, profile.steps)}")
    if profile is not None:
        return BlendPlan(profile.schedule(), num_steps, f"profile {profile.sampler}")
    return BlendPlan(fallback, num_steps, "default window (no profile stored)")


def _profile_rows(profile: Profile, plan: BlendPlan, cond: Mapping[str, Any], n: int, num_steps: int) -> list[Row]:
    """The stored profile's own rows: its best full-grid window (when the plan takes fewer steps),
    its per-prompt windows and its online controller."""
    from adaptive.denoisers import select_rows
    from adaptive.profiles import prompt_key

    rows = []
    if plan.steps != num_steps and not profile.is_large_only:
        rows.append(Row(f"3b. best {num_steps}-step window (profile {profile.sampler})", profile.schedule(), num_steps))
    if profile.has_per_prompt:
        known = sum(prompt_key(select_rows(dict(cond), n, [b])) in profile.windows for b in range(n))
        rows.append(Row(f"4a. per-prompt profile ({known}/{n} prompts calibrated, rest pair-level)", profile,
                        num_steps))
    if profile.controller:
        controller = profile.controller
        if controller.fallback:  # not validated at calibration: "online" runs the stored windows
            rows.append(Row("4b. online controller (fallback: stored windows)", profile, num_steps))
        else:
            # alone on every prompt (probes included); schedule="online" runs calibrated prompts' windows (4a)
            rows.append(Row("4b. online controller alone (probes included)", controller, num_steps))
    return rows


def bench_rows(pair: ModelPair, noise: torch.Tensor, cond: Mapping[str, Any], num_steps: int, shift: float,
               plan: BlendPlan, profile: Profile | None = None, oracle: Schedule | None = None,
               other_noise: torch.Tensor | None = None, cache_threshold: float = 0.1,
               sampler: str = "euler") -> list[Row]:
    """The comparison table's rows for ``pair`` on ``sigmas(num_steps, shift)`` (see the module doc),
    every row but the Heun ones on ``sampler`` (``"euler"``, ``"unipc"``, ``"dpm++"``).

    Peers (rows 6a-7) get the compute of ``plan``, with Small's cost measured in FLOPs on
    ``noise``; SRDiffusion's threshold is matched on Large's own trajectories from ``noise``.
    ``profile`` adds its rows (3b, 4a, 4b); ``oracle`` (the exhaustive sweep's window, e.g.
    ``flowblend oracle``'s) adds row 5; ``other_noise`` adds row 1b, Large only on other seeds
    (the seed-to-seed noise band). Feed the rows to :func:`run_bench`.

    Example:
        >>> from adaptive import ModelPair
        >>> big, small = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        >>> pair = ModelPair(lambda x, s: big(big(x)), lambda x, s: small(x), sample_shape=(4,))
        >>> plan = BlendPlan(Schedule.lsl(0.85, 0.3), 6, "an example")
        >>> with torch.no_grad():
        ...     rows = bench_rows(pair, torch.randn(2, 4), {}, 6, 3.0, plan)
        >>> [row.name.split(" ")[0] for row in rows]
        ['1.', '2.', '3.', '6a.', '6b.', '6c.', '7.', '8a.', '8b.', '8c.', '8d.']
    """
    cond = dict(cond)
    n = noise.shape[0]
    per_row = flops_per_row(pair, noise, **cond)
    small_cost = per_row["small"] / per_row["large"]
    grid = torch.tensor(_grid(sampler, num_steps, shift))
    fraction = plan_fraction(plan.schedule, plan.steps, num_steps, shift, small_cost, sampler)
    k = matched_switch(fraction, small_cost, num_steps)
    srd = SRDiffusionRule.matched(velocity_changes(pair, noise, sigmas(num_steps, shift), cond), fraction, small_cost,
                                  num_steps)
    rows = [Row("1. Large only", None, num_steps)]
    if other_noise is not None:
        rows.append(Row("1b. Large only, other seeds (noise band)", None, num_steps, noise=other_noise))
    rows += [
        Row("2. Small only", Schedule.from_stages([(1.0, 0.0, "small")]), num_steps),
        Row(f"3. FlowBlending ({plan.source})", plan.schedule, plan.steps),
    ]
    if profile is not None:
        rows += _profile_rows(profile, plan, cond, n, num_steps)
    if oracle is not None:
        rows.append(Row("5. oracle window (exhaustive sweep)", oracle, num_steps))
    fewer, heun = matched_steps(fraction, num_steps), max(2, num_steps // 2)
    return [_on(row, sampler) for row in rows] + [_on(row, sampler) for row in [
        Row(f"6a. Small->Large (T-Stitch), {k} Small steps",
            Schedule.from_steps(grid, ["small"] * k + ["large"] * (num_steps - k)), num_steps),
        Row(f"6b. Large->Small (Wan 2.2 style), {k} Small steps",
            Schedule.from_steps(grid, ["large"] * (num_steps - k) + ["small"] * k), num_steps),
        Row(f"6c. SRDiffusion rule (Large until its velocity change stops falling by {srd.threshold:.3g}, then "
            "Small)", srd, num_steps),
        Row(f"7. Large only, {fewer} steps (same compute as 3)", None, fewer),
        Row(f"8a. Large only, Heun {heun} steps", None, heun, sampler="heun"),
        Row(f"8b. FlowBlending + Heun {heun} steps", plan.schedule, heun, sampler="heun"),
        Row("8c. Large only + First Block Cache", None, num_steps, cache=cache_threshold),
        Row("8d. FlowBlending + First Block Cache", plan.schedule, num_steps, cache=cache_threshold),
    ]]


def _on(row: Row, sampler: str) -> Row:
    """``row`` on ``sampler`` (its Heun rows keep Heun)."""
    if row.sampler != "euler" or sampler == "euler":
        return row
    return replace(row, sampler=sampler)


def _set_cache(pair: ModelPair, threshold: float | None) -> None:
    large = pair.modules()["large"]
    if large is None or not hasattr(large, "enable_cache"):
        return
    if large.is_cache_enabled:
        large.disable_cache()
    if threshold is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        large.enable_cache(FirstBlockCacheConfig(threshold=threshold))


def _run(pair: ModelPair, row: Row, noise: torch.Tensor, shift: float, cond: dict[str, Any]) -> torch.Tensor:
    _set_cache(pair, row.cache)
    noise = noise if row.noise is None else row.noise[: noise.shape[0]].to(noise.device)
    try:
        if isinstance(row.schedule, SRDiffusionRule):
            switch = {"large": row.schedule.denoiser(pair), "small": pair.small}
            return _solve(row.sampler, switch, noise, row.num_steps, shift, None, cond)
        return _solve(row.sampler, pair, noise, row.num_steps, shift, row.schedule, cond)
    finally:
        _set_cache(pair, None)


def _solve(sampler: str, models: Any, noise: torch.Tensor, steps: int, shift: float, schedule: Any,
           cond: dict[str, Any]) -> torch.Tensor:
    if sampler in SAMPLERS:
        return SAMPLERS[sampler](models, noise, sigmas(steps, shift), schedule, **cond)
    return sample(models, noise, steps, schedule, sampler=Sampler.of(sampler, shift), **cond)


def _per_sample(row: Row) -> bool:
    return row.schedule is not None and not isinstance(row.schedule, Schedule)


def _flops(pair: ModelPair, row: Row, noise: torch.Tensor, shift: float, cond: dict[str, Any]) -> float:
    """FLOPs per video: one video, or the whole batch averaged when plans differ per sample."""
    rows = noise.shape[0] if _per_sample(row) else 1
    return flops_of(lambda: _run(pair, row, noise[:rows], shift, {k: v[:rows] for k, v in cond.items()})) / rows


@torch.no_grad()
def run_bench(pair: ModelPair, rows: list[Row], noise: torch.Tensor, cond: dict[str, Any], shift: float,
              quality: Callable[[torch.Tensor, torch.Tensor | None], dict[str, float]], repeats: int = 2,
              progress: bool = True) -> dict[str, Any]:
    """Sample every row ``repeats`` times, interleaved; return per-row metrics relative to row 0.

    ``quality(videos, reference)`` scores a row's videos against row 0's (``reference`` is None
    for row 0 itself). Returns ``{"rows": [...], "seconds_raw": {name: [...]}, "outputs": {name:
    videos}}``, what :func:`write_outputs` writes.
    """
    _run(pair, Row("warm-up", None, 2), noise[:1], shift, {k: v[:1] for k, v in cond.items()})
    runs = {row.name: functools.partial(_run, pair, row, noise, shift, cond) for row in rows}
    measured = interleaved(runs, rounds=repeats, device=noise.device, progress=progress, desc="bench rounds")
    outputs = measured.outputs
    reference = outputs[rows[0].name]
    n = noise.shape[0]
    base_flops = _flops(pair, rows[0], noise, shift, cond)
    base_time = measured.median(rows[0].name)
    for row in rows:
        flops = _flops(pair, row, noise, shift, cond)
        t = measured.median(row.name)
        row.metrics = {"gflops_per_video": flops / 1e9, "flops_saved_pct": 100 * (1 - flops / base_flops),
                       "seconds_per_video": t / n, "speedup": base_time / t, "peak_gib": measured.peak_gib[row.name],
                       **quality(outputs[row.name], None if row is rows[0] else reference)}
    return {"rows": [{"name": r.name, "steps": r.num_steps, "sampler": r.sampler, "cache": r.cache,
                      "schedule": _describe(r.schedule), **r.metrics} for r in rows],
            "seconds_raw": measured.seconds, "outputs": outputs}


def _describe(schedule: Any) -> Any:
    if schedule is None or isinstance(schedule, Schedule):
        return None if schedule is None else schedule.to_dict()
    if isinstance(schedule, SRDiffusionRule):
        return {"srdiffusion_threshold": schedule.threshold}
    return type(schedule).__name__


COLUMNS = [("gflops_per_video", "GFLOPs/video", "{:.2f}"), ("flops_saved_pct", "FLOPs saved", "{:.0f}%"),
           ("seconds_per_video", "s/video", "{:.3f}"), ("speedup", "speed-up", "{:.2f}x"),
           ("feature_sim", "feature sim", "{:.4f}"), ("frechet", "Frechet", "{:.2f}"),
           ("digit_acc", "digit acc", "{:.3f}"), ("direction_acc", "direction acc", "{:.3f}"),
           ("frame_agreement", "frame agreement", "{:.3f}"), ("grain", "grain", "{:.3f}"), ("peak_gib", "peak GiB", "{:.2f}")]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The bench table in Markdown."""
    present = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| row | " + " | ".join(c[1] for c in present) + " |", "|---|" + "---:|" * len(present)]
    for r in rows:
        cells = []
        for key, _, fmt in present:
            value = r.get(key)
            cells.append("-" if value is None or (isinstance(value, float) and np.isnan(value)) else fmt.format(value))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Markdown, CSV and JSON with every raw number, and the quality-vs-compute Pareto plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    paths = {"markdown": out / "bench.md", "csv": out / "bench.csv", "json": out / "bench.json",
             "pareto": out / "pareto.png"}
    paths["markdown"].write_text(markdown_table(rows) + "\n")
    keys = sorted({k for r in rows for k in r if k != "schedule"})
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps({"meta": meta, "rows": rows, "seconds_raw": result["seconds_raw"]},
                                        indent=2, default=str) + "\n")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        y = r.get("feature_sim", 1.0 if r is rows[0] else np.nan)
        ax.scatter(r["gflops_per_video"], y, s=30)
        ax.annotate(r["name"], (r["gflops_per_video"], y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("GFLOPs per video")
    ax.set_ylabel("feature similarity to Large-only")
    ax.set_title("quality vs compute (same prompts and seeds)")
    fig.tight_layout()
    fig.savefig(paths["pareto"], dpi=120)
    plt.close(fig)
    return paths
