"""Check candidate embedded pairs on a CPU (issue #18): a frontier on a coarse window grid, minutes each.

    python benchmarks/pair_triage.py /tmp/cand/pairs/* --prompts 4 --seeds 2 --stride 3 --out docs/pair_design/triage
    python benchmarks/pair_triage.py DIR --windows quick --out docs/pair_design/cpu   # the windows that matter

For each pair folder (``large/``, ``small/``, ``encoder.safetensors``, as ``training/candidates.py``
writes them) it measures, on the same noise and held-out prompts, against Large with all ``--steps``
Euler steps at ``--shift``, on the pair's metric and each of its parts:

- the velocity divergence of Small from Large along Large's trajectory (relative L2 per step, and its
  mean over the middle, sigma in [0.3, 0.7]: issue #18 asks for a few percent);
- the frontier (:func:`adaptive.frontier.measure_frontier`): Large alone at every step count, and every
  one-window blend whose ends lie on multiples of ``--stride`` (Small alone among them), each against
  Large with the steps its compute buys, beyond the paired seed noise; or, with ``--windows quick``,
  only the windows that matter (:func:`quick_windows`: Small-first windows up to four fifths of the
  steps, five Large-Small-Large windows of two fifths, Small alone; about a minute on two cores).

The prompts are ``adaptive.toy.data.check_prompts`` (training checks, never the acceptance set of
``adaptive.toy.heldout_prompts``), the noise seeds 1000 on.

The full frontier (every window, ``benchmarks/frontier.py``) costs about ten times the Large calls: too
slow for a CPU, and on a shared GPU it did not finish in the device call's budget. ``--stride 1`` runs
it anyway. Writes ``<name>.json`` (the frontier, :meth:`Frontier.load` reads it), ``<name>.png`` and
``triage.md`` with one section per pair.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from adaptive.frontier import Frontier, measure_frontier
from adaptive.probing import probe
from adaptive.toy.data import check_prompts
from adaptive.toy.pair import GUIDANCE_SCALE, load_pair, prompt_conds


def quick_windows(steps: int) -> list[tuple[int, int, int]]:
    """The windows that decide a candidate, on ``steps`` (30: Small on steps 0..j-1 for j = 6, 9, ..., 24,
    Small on a + 0..11 for a = 3, 6, ..., 15, and Small alone)."""
    tenth = max(1, steps // 10)
    return ([(steps, 0, j) for j in range(steps // 5, 4 * steps // 5 + 1, tenth)]
            + [(steps, a, a + 2 * steps // 5) for a in range(tenth, steps // 2 + 1, tenth)] + [(steps, 0, steps)])


def stride_windows(steps: int, stride: int) -> list[tuple[int, int, int]]:
    """Every one-window blend whose ends lie on multiples of ``stride`` (and on ``steps``)."""
    cuts = sorted({*range(0, steps + 1, stride), steps})
    return [(steps, a, b) for a in cuts for b in cuts if a < b]


def check(folder: Path, prompts: int, seeds: int, steps: int, shift: float, stride: int | None, out: Path,
          device: str = "cpu", guidance: float = GUIDANCE_SCALE) -> str:
    """Measure one pair on the ``stride`` grid (None: :func:`quick_windows`); write its frontier and
    figure into ``out``; return its markdown section, with every blend against Large-fewer."""
    started = time.perf_counter()
    pair, _ = load_pair(folder, device=device, guidance_scale=guidance)
    texts, _, _ = check_prompts(prompts)
    conds, noise_seeds = prompt_conds(texts, device), list(range(1000, 1000 + seeds))
    curve = probe(pair, conds, steps, noise_seeds, shift)
    windows = quick_windows(steps) if stride is None else stride_windows(steps, stride)
    grid = "--windows quick" if stride is None else f"--stride {stride}"
    command = (f"python benchmarks/pair_triage.py {folder} --prompts {prompts} --seeds {seeds} {grid} "
               f"--guidance {guidance}")
    frontier = measure_frontier(pair, conds, steps, noise_seeds, shift, blend_steps=(), extra=windows,
                                progress=False, command=command)
    name = folder.name
    frontier.save(out / f"{name}.json")
    frontier.plot(out / f"{name}.png")
    sig, rel = curve.sigmas[curve.steps], curve.mean()
    middle = float(rel[(sig >= 0.3) & (sig <= 0.7)].mean())
    (out / f"{name}.divergence.json").write_text(json.dumps(
        {"sigmas": [round(float(s), 4) for s in sig], "rel_l2": [round(float(v), 4) for v in rel],
         "middle": middle}) + "\n")
    return section(name, summary(frontier, middle), time.perf_counter() - started) + "\n" + versus(frontier)


def versus(frontier: Frontier) -> str:
    """Every blend against Large with the steps its compute buys, per metric: paired difference +- one
    standard error, * beyond two."""
    lines = ["| blend (compute) | Large bought | " + " | ".join(frontier.metrics) + " |",
             "|---|---:|" + "---|" * len(frontier.metrics)]
    for blend in frontier.blends():
        bought = frontier.large_bought(blend)
        cells = [f"{blend.quality(m):.3f} vs {bought.quality(m):.3f} {frontier.compare(blend, bought, m).margin()}"
                 + (" *" if frontier.compare(blend, bought, m).beats() else "") for m in frontier.metrics]
        lines.append(f"| {blend.label()} ({blend.cost:.2f}) | {bought.steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(frontier: Frontier, middle: float) -> dict[str, Any]:
    """What issue #18's acceptance reads off a frontier, per metric: how many blends beat Large with
    the steps their compute buys (beyond the paired seed noise), the best blend's margin, Small alone
    and Large with a third of the steps."""
    n = frontier.num_steps
    small_alone, third = frontier.find(n, 0, n), frontier.large_fewer()[max(1, n // 3)]
    per_metric = {}
    for metric in frontier.metrics:
        found = [frontier.compare(b, frontier.large_bought(b), metric) for b in frontier.blends()]
        best = max(found, key=lambda c: c.difference)
        winners = frontier.winners(metric)
        # A win only counts where the blend is at least as good as Large with a third of the steps:
        # below that, a blend "beats" a Large with 1-3 steps and both are broken.
        useful = [c for c in winners if c.point.quality(metric) >= third.quality(metric)]
        per_metric[metric] = {
            "winners": len(winners), "useful_winners": len(useful),
            "best_useful": useful[0].describe() if useful else None,
            "best_margin": best.difference, "best_stderr": best.stderr,
            "best_plan": best.point.label(), "best_cost": best.point.cost,
            "small_alone": small_alone.quality(metric) if small_alone else None,
            "large_third": third.quality(metric)}
    return {"middle_divergence": middle, "small_cost": frontier.small_cost, "videos": frontier.samples,
            "blends": len(frontier.blends()), "metrics": per_metric}


def section(name: str, result: dict[str, Any], seconds: float) -> str:
    lines = [f"### {name}", "",
             f"Middle divergence (sigma 0.3-0.7) {result['middle_divergence']:.3f}; Small costs "
             f"{result['small_cost']:.3f} of a Large call; {result['videos']} videos; {result['blends']} blends; "
             + ("" if seconds != seconds else f"{seconds:.0f} s."), "",
             "| metric | blends beating Large-fewer | of them at least Large-a-third's quality | "
             "largest margin (plan, compute) | Small alone | Large, a third of the steps |",
             "|---|---|---|---|---|---|"]
    for metric, m in result["metrics"].items():
        alone = "n/a" if m["small_alone"] is None else f"{m['small_alone']:.3f}"
        lines.append(f"| {metric} | {m['winners']} | {m['useful_winners']} | {m['best_margin']:+.3f} ± "
                     f"{m['best_stderr']:.3f} ({m['best_plan']}, {m['best_cost']:.2f}) | {alone} | "
                     f"{m['large_third']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("pairs", nargs="+", type=Path)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--windows", choices=("stride", "quick"), default="stride",
                        help="quick: only the windows of quick_windows (about a minute a pair on two cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--guidance", type=float, default=GUIDANCE_SCALE)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summarise", action="store_true",
                        help="only rewrite triage.md from the frontiers already in --out, for the pairs named")
    args = parser.parse_args(argv)
    if args.summarise:
        text = []
        for folder in args.pairs:
            divergence = json.loads((args.out / f"{folder.name}.divergence.json").read_text())
            frontier = Frontier.load(args.out / f"{folder.name}.json")
            text.append(section(folder.name, summary(frontier, divergence["middle"]), float("nan")))
        (args.out / "triage.md").write_text("\n".join(text))
        print("\n".join(text))
        return
    if not 1 <= args.stride <= args.steps:
        parser.error(f"--stride must lie in 1..{args.steps}")
    args.out.mkdir(parents=True, exist_ok=True)
    sections = []
    for folder in args.pairs:
        with torch.no_grad():
            sections.append(check(folder, args.prompts, args.seeds, args.steps, args.shift,
                                  None if args.windows == "quick" else args.stride, args.out, args.device, args.guidance))
        print(sections[-1], flush=True)
        (args.out / "triage.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
