"""The earlier frontier study of the embedded pair (old metric: feature cosine and a grain error), tabulated
from its per-video records in ``docs/frontier/*.json``.

    python benchmarks/frontier.py docs/frontier/s*.json --out docs/frontier   # frontier.md and frontier.png

Those records (one H200, several grids, shifts and guidance scales) hold, per video, Large with every
step count and every one-window blend: feature similarity to Large with all steps, the grain the
encoder reads, whether digit and direction match the prompt, and per-frame SSIM where recorded. A
blend "beats" Large with fewer steps when it scores better than Large with as many steps as its
compute buys (``floor(cost * steps)``), on the same noise and prompts. The frontier of any pair is now
measured by the library (``flowblend frontier``, :func:`adaptive.frontier.measure_frontier`: paired
comparisons beyond sample noise on the calibration metric and its parts); for a candidate pair's
folder, ``python benchmarks/pair_triage.py DIR --stride 1``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


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
    """A markdown table of :func:`dominance` per result file (finest grid first; SSIM columns where the
    records have SSIM), and the finest grid's figure."""
    results = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: (-grid_steps(r), r["command"]))
    found = [dominance(r) for r in results]
    ssim = any("beat_on_ssim" in d for d in found)
    lines = ["| run | blends | beat Large-fewer on feature sim | on grain error | on both | "
             + ("on SSIM | on min(sim, SSIM) | " if ssim else "") + "Large at a third: sim, grain error |",
             "|---|---:|---:|---:|---:|" + ("---:|---:|" if ssim else "") + "---|"]
    for result, d in zip(results, found):
        third = d["large_third"]
        args = result["command"].split("frontier.py ")[-1].split(" --device")[0]
        lines.append(f"| `{args}` | {d['blends']} | {d['beat_on_feature_sim']} | {d['beat_on_grain_error']} | "
                     f"{d['beat_on_both']} | " + (f"{d.get('beat_on_ssim', '-')} | {d.get('beat_on_worst', '-')} | "
                                                  if ssim else "") + f"{third['feature_sim']:.3f}, {third['grain_error']:.3f} |")
    winners = [f"- `{r['command'].split(' --device')[0].split('.py ')[1]}`: " + "; ".join(d["winners"])
               for r, d in zip(results, found)]
    lines += ["", "Blends that beat Large-fewer on feature sim:", *winners, "",
              small_right_note(results[0]), "", *matched_table(results[0])]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.md").write_text(table + "\n")
    plot_frontier(results[0], out / "frontier.png")  # the finest grid
    return table


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="frontier records (docs/frontier/*.json)")
    parser.add_argument("--out", type=Path, default=Path("docs/frontier"))
    args = parser.parse_args(argv)
    table = summarise(args.records, args.out)
    print(table)
    return table


if __name__ == "__main__":
    main()
