"""Quality vs compute of every one-window blend against Large with fewer steps, on the embedded pair.

    python scripts/frontier.py --prompts 32 --seeds 2 --out docs          # 64 videos; ~3 min on a GPU
    python scripts/frontier.py --prompts 2 --seeds 1 --steps 8 --out /tmp   # a quick run on a CPU

For each Small window ``[start, stop)`` of the default grid (Large elsewhere: Large-Small-Large,
Small-first and Small-last are all one-window blends) and for Large alone at every step count, it
records per video: feature similarity to Large with all steps (same noise and prompt), the grain the
encoder reads, whether digit and direction match the prompt; and per set the Frechet distance to real
videos. Compute is the fraction of Large-only FLOPs (Small calls weighted by the measured FLOP
ratio). Writes ``frontier.json`` (per-video values, so any metric can be scored later) and
``frontier.png`` (every blend and Large-with-fewer-steps against compute) and ``frontier.md``.

    python scripts/frontier.py --summarise docs/frontier/*.json --out docs/frontier   # tables + figure only
    python scripts/frontier.py --weights /tmp/candidate --prompts 8 --seeds 2 --out /tmp/candidate/frontier

``--weights`` checks another pair (a folder with ``large/``, ``small/`` and its ``encoder.safetensors``,
as ``scripts/train_candidates.py`` writes) with its own encoder and data variant. Each video also
gets its per-frame SSIM to Large's video, so blends are judged on structure as well as on the
pooled features; "worst" is the calibration metric of the embedded pair, min(feature sim, SSIM).

A blend "beats" Large with fewer steps when it scores better than Large with as many steps as the
blend's compute buys (``floor(cost * steps)``), on the same noise and prompts.

The measurement for any pair is the library's (``adaptive.frontier.measure_frontier``, ``flowblend
frontier``: per-sample scores on metrics, paired comparisons beyond sample noise). This script is the
embedded pair's research record: it also keeps what the toy encoder reads (grain, digit and direction,
the set's Frechet distance) in the layout of docs/frontier/*.json, which ``--summarise`` tabulates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adaptive import sample, sigmas
from adaptive.calibration import Evaluator, small_cost_ratio
from adaptive.metrics import StructuralSimilarity, frechet_distance
from adaptive.probing import run_probe
from adaptive.toy import load_pair, prompt_conds
from adaptive.toy.pair import GUIDANCE_SCALE
from adaptive.toy.data import variant_of
from adaptive.toy.harness import Harness, load_encoder
from evaluate_pair import heldout_prompts


class Recorder:
    """A calibration metric (feature similarity to Large's videos, whose features it is given) that
    keeps the last output's features, so each window's videos are encoded once and read by every metric."""

    name = "toy_feature_cosine"

    def __init__(self, harness: Harness, reference: torch.Tensor) -> None:
        self.harness, self.reference = harness, reference
        self.features: torch.Tensor | None = None
        self.videos: torch.Tensor | None = None

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        self.features, self.videos = self.harness.features(generated), generated
        return torch.nn.functional.cosine_similarity(self.features, self.reference, dim=1)


def _rounded(values: torch.Tensor | np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def scores(harness: Harness, features: torch.Tensor, reference: torch.Tensor, digits: np.ndarray,
           directions: np.ndarray, videos: torch.Tensor | None = None, reference_videos: torch.Tensor | None = None
           ) -> dict[str, object]:
    encoder = harness.encoder
    ssim = {} if videos is None or reference_videos is None else \
        {"ssim": _rounded(StructuralSimilarity(data_range=2.0)(videos.clamp(-1, 1), reference_videos.clamp(-1, 1)))}
    with torch.no_grad():
        sim = torch.nn.functional.cosine_similarity(features, reference, dim=1)
        grain = encoder.grain_from_features(features)
        digit_ok = encoder.digit_head(features).argmax(1).numpy() == digits
        direction_ok = encoder.direction_head(features).argmax(1).numpy() == directions
    return {"feature_sim": _rounded(sim), "grain": _rounded(grain),
            "digit_ok": digit_ok.astype(int).tolist(), "direction_ok": direction_ok.astype(int).tolist(),
            "frechet": frechet_distance(features.numpy(), harness.real_features()) if len(features) > 1 else None, **ssim}


def grid_steps(result: dict) -> int:
    """The default grid's step count of a frontier result (its most Large steps)."""
    return max(r["large_steps"] for r in result["rows"] if r["kind"] == "large")


def window_scores(result: dict, videos: np.ndarray | None = None
                  ) -> tuple[dict[int, dict[str, float]], list[dict[str, float]]]:
    """Mean feature similarity and mean |grain - reference grain| per row, over all videos or the
    boolean mask ``videos``: (Large by step count, blends)."""
    rows = result["rows"]
    steps = grid_steps(result)
    keep = np.ones(len(rows[0]["feature_sim"]), bool) if videos is None else np.asarray(videos, bool)
    reference = np.array(next(r["grain"] for r in rows if r["kind"] == "large" and r["large_steps"] == steps))[keep]

    def score(row: dict) -> dict[str, float]:
        sim = np.array(row["feature_sim"])[keep]
        out = {"cost": row["cost"], "feature_sim": float(sim.mean()),
               "grain_error": float(np.abs(np.array(row["grain"])[keep] - reference).mean()),
               "start": row.get("start", -1), "stop": row.get("stop", -1)}
        if "ssim" in row:  # results written before SSIM was recorded have none
            ssim = np.array(row["ssim"])[keep]
            out.update(ssim=float(ssim.mean()), worst=float(np.minimum(sim, ssim).mean()))
        return out

    large = {r["large_steps"]: score(r) for r in rows if r["kind"] == "large"}
    return large, [score(r) for r in rows if r["kind"] == "blend"]


def dominance(result: dict, videos: np.ndarray | None = None) -> dict[str, Any]:
    """How many blends beat Large with the steps their compute buys, per metric, and the blends that
    win on feature similarity (over all videos or the boolean mask ``videos``)."""
    large, blends = window_scores(result, videos)
    steps = max(large)
    affordable = [(b, large[int(np.floor(b["cost"] * steps + 1e-9))]) for b in blends if b["cost"] * steps >= 1 - 1e-9]
    beat_sim = [(b, k) for b, k in affordable if b["feature_sim"] > k["feature_sim"]]
    beat_grain = [(b, k) for b, k in affordable if b["grain_error"] < k["grain_error"]]
    structural = {f"beat_on_{key}": sum(1 for b, k in affordable if b[key] > k[key])
                  for key in ("ssim", "worst") if all(key in b for b in blends)}

    def window(b: dict) -> str:
        return f"Small {b['start']}-{b['stop'] - 1}"

    return {"steps": steps, "blends": len(affordable), "beat_on_feature_sim": len(beat_sim),
            "beat_on_grain_error": len(beat_grain), "beat_on_both": sum(1 for b, k in beat_sim if (b, k) in beat_grain),
            **structural,
            "winners": [f"{window(b)} ({b['cost']:.2f}): {b['feature_sim']:.4f} vs Large "
                         f"{round(k['cost'] * steps)} steps {k['feature_sim']:.4f}, grain error "
                         f"{b['grain_error']:.3f} vs {k['grain_error']:.3f}" for b, k in beat_sim],
            "large_third": large[max(1, steps // 3)]}


def plot_frontier(result: dict, path: Path) -> None:
    """Feature similarity and grain error against compute: every blend (dots) and Large with fewer
    steps (line), on the result's grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    large, blends = window_scores(result)
    steps = max(large)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "feature_sim", "feature similarity to Large (higher is better)"),
                           (axes[1], "grain_error", "|grain - Large's grain| (lower is better)")):
        centre = [(b["start"] + b["stop"]) / 2 / steps for b in blends]
        dots = ax.scatter([b["cost"] for b in blends], [b[key] for b in blends], c=centre, cmap="viridis", s=9,
                          label="one Small window (colour: its middle step / steps)")
        ax.plot([large[k]["cost"] for k in sorted(large)], [large[k][key] for k in sorted(large)], "r.-",
                label="Large alone with fewer steps")
        ax.set_xlabel("compute (fraction of Large-only FLOPs)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylim(0.85, 1.002)
    fig.colorbar(dots, ax=axes[1])
    fig.suptitle(f"{result['videos']} videos, {steps} Euler steps ({result['command'].split('--out')[0].strip()})",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def matched_table(result: dict) -> list[str]:
    """Per Large step count k: Large-k against the best blends whose compute buys k Large steps."""
    large, blends = window_scores(result)
    steps = max(large)
    lines = [f"| Large steps ({steps}-step grid) | Large sim | best blend by sim | its sim | (1 - sim) ratio "
             "| Large grain error | best blend by grain error | its grain error |", "|---:|---:|---|---:|---:|---:|---|---:|"]
    for k in range(1, steps):
        bought = [b for b in blends if k <= b["cost"] * steps + 1e-9 < k + 1]
        if not bought:
            continue
        by_sim = max(bought, key=lambda b: b["feature_sim"])
        by_grain = min(bought, key=lambda b: b["grain_error"])
        ratio = (1 - by_sim["feature_sim"]) / max(1e-9, 1 - large[k]["feature_sim"])
        lines.append(f"| {k} | {large[k]['feature_sim']:.4f} | Small {by_sim['start']}-{by_sim['stop'] - 1} | "
                     f"{by_sim['feature_sim']:.4f} | {ratio:.1f} | {large[k]['grain_error']:.3f} | "
                     f"Small {by_grain['start']}-{by_grain['stop'] - 1} | {by_grain['grain_error']:.3f} |")
    return lines


def small_right_note(result: dict) -> str:
    """Whether blends do better on the videos where Small alone draws the prompted digit."""
    steps = grid_steps(result)
    small = next(r for r in result["rows"] if r["kind"] == "blend" and (r["start"], r["stop"]) == (0, steps))
    right = np.array(small["digit_ok"], bool)
    parts = []
    for name, mask in (("draws", right), ("misses", ~right)):
        if mask.any():
            d = dominance(result, mask)
            sim = float(np.array(small["feature_sim"])[mask].mean())
            parts.append(f"on the {int(mask.sum())} videos where Small alone {name} the prompted digit, "
                         f"{d['beat_on_feature_sim']} of {d['blends']} blends beat Large-fewer on feature sim "
                         f"(Small alone: {sim:.3f} similarity to Large)")
    return f"{steps} steps: " + "; ".join(parts) + "."


def summarise(paths: list[Path], out: Path) -> str:
    """A markdown table of :func:`dominance` per result file (finest grid first), and its figure."""
    lines = ["| run | blends | beat Large-fewer on feature sim | on grain error | on both | on SSIM "
             "| on min(sim, SSIM) | Large at a third: sim, grain error |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    results = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: (-grid_steps(r), r["command"]))
    for result in results:
        d = dominance(result)
        third = d["large_third"]
        args = result["command"].replace("python scripts/frontier.py ", "").split(" --device")[0]
        lines.append(f"| `{args}` | {d['blends']} | {d['beat_on_feature_sim']} | {d['beat_on_grain_error']} | "
                     f"{d['beat_on_both']} | {d.get('beat_on_ssim', '-')} | {d.get('beat_on_worst', '-')} | "
                     f"{third['feature_sim']:.3f}, {third['grain_error']:.3f} |")
    winners = [f"- `{r['command'].split(' --device')[0].split('.py ')[1]}`: " + "; ".join(dominance(r)["winners"])
               for r in results]
    lines += ["", "Blends that beat Large-fewer on feature sim:", *winners, "",
              small_right_note(results[0]), "", *matched_table(results[0])]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.md").write_text(table + "\n")
    plot_frontier(results[0], out / "frontier.png")  # the finest grid
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--summarise", nargs="+", type=Path, help="only tabulate and plot these frontier.json files")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--guidance", type=float, default=GUIDANCE_SCALE)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--weights", type=Path, default=None, help="a pair folder (default: the shipped pair)")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise, Path(args.out)))
        return
    started = time.perf_counter()
    if args.weights is None:
        harness = Harness()
    else:
        harness = Harness(load_encoder(args.weights / "encoder.safetensors"), variant=variant_of(args.weights))
    if not harness.encoder.reads_grain:
        parser.error("this encoder cannot read grain (plain data); train one with --data grain")
    pair, _ = load_pair(args.weights, device=args.device, guidance_scale=args.guidance)
    prompts, digits, directions = heldout_prompts(args.prompts)
    seeds = list(range(1000, 1000 + args.seeds))
    # run_probe batches cond-major: video c * len(seeds) + s has prompt c.
    digits, directions = np.repeat(digits, len(seeds)), np.repeat(directions, len(seeds))
    curve, reference = run_probe(pair, prompt_conds(prompts, args.device), args.steps, seeds, args.shift)
    ref_features = harness.features(reference.final)
    small_cost = small_cost_ratio(pair, reference)
    recorder = Recorder(harness, ref_features)
    evaluator = Evaluator(pair, reference, recorder, small_cost)
    rows = []
    for k in tqdm(range(1, args.steps + 1), desc="Large, k steps"):
        with torch.no_grad():
            videos = sample(pair, reference.states[0], sigmas(k, args.shift), None, **reference.cond)
        rows.append({"kind": "large", "large_steps": k, "cost": k / args.steps,
                     **scores(harness, harness.features(videos), ref_features, digits, directions, videos,
                              reference.final)})
    windows = [(a, b) for a in range(args.steps) for b in range(a + 1, args.steps + 1)]
    for start, stop in tqdm(windows, desc="Small windows"):
        evaluator.qualities(start, stop)
        assert recorder.features is not None
        rows.append({"kind": "blend", "start": start, "stop": stop, "cost": evaluator.cost(start, stop),
                     **scores(harness, recorder.features, ref_features, digits, directions, recorder.videos,
                              reference.final)})
    real = torch.from_numpy(harness.real_features())
    with torch.no_grad():
        real_grain = harness.encoder.grain_from_features(real).numpy()
    options = {k: v for k, v in vars(args).items() if k != "summarise" and (k != "weights" or v is not None)}
    result = {"command": "python scripts/frontier.py " + " ".join(f"--{k} {v}" for k, v in options.items()),
              "device": str(args.device), "seconds": time.perf_counter() - started, "small_cost_ratio": small_cost,
              "videos": len(digits), "real_grain": _rounded(real_grain),
              "divergence": {"sigmas": curve.sigmas.tolist(), "rel_l2": curve.mean().tolist()}, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result) + "\n")
    print(f"{len(rows)} rows in {result['seconds']:.0f} s -> {out / 'frontier.json'}")
    print(summarise([out / "frontier.json"], out))


if __name__ == "__main__":
    main()
