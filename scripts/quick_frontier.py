"""A pair candidate's frontier on the windows that matter, in about a minute on two cores (issue #25).

    python scripts/quick_frontier.py DIR [--prompts 4] [--seeds 2] [--out docs/pair_design/cpu/NAME.frontier.json]

``DIR`` holds ``large/``, ``small/`` and the encoder (``scripts/train_candidates.py``'s ``pair-<recipe>``
layout). On ``--prompts`` training-check prompts (``evaluate_pair.heldout_prompts``, never the acceptance
set of ``adaptive.toy.heldout_prompts``) x seeds 1000.., 30 Euler steps at shift 3, guidance 4: Large
with every step count, Small-first windows (Small on steps 0..j-1, j = 6, 9, ..., 24), five
Large-Small-Large windows of 12 steps and Small alone, each against Large with the steps its compute
buys, on the pair's metric and its parts (paired difference +- 1 standard error; * beyond 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_pair import heldout_prompts  # noqa: E402

from adaptive.frontier import Frontier, measure_frontier  # noqa: E402
from adaptive.toy.pair import load_pair, prompt_conds  # noqa: E402

WINDOWS = [(30, 0, j) for j in (6, 9, 12, 15, 18, 21, 24)] + \
    [(30, a, a + 12) for a in (3, 6, 9, 12, 15)] + [(30, 0, 30)]


def measure(folder: Path, prompts: int, seeds: int) -> Frontier:
    pair, _ = load_pair(folder)
    texts, _, _ = heldout_prompts(prompts)
    with torch.no_grad():
        return measure_frontier(pair, prompt_conds(texts), 30, list(range(1000, 1000 + seeds)), 3.0, blend_steps=(),
                                extra=WINDOWS, progress=False,
                                command=f"python scripts/quick_frontier.py {folder} --prompts {prompts} --seeds {seeds}")


def report(f: Frontier) -> str:
    large = f.large_fewer()
    lines = [f"Small costs {f.small_cost:.3f} of a Large call; {f.samples} videos",
             "Large k: " + " ".join(f"{k}:{large[k].quality(f.metric):.3f}" for k in (6, 8, 10, 12, 14, 16, 18, 20))]
    for b in f.blends():
        bought = f.large_bought(b)
        parts = [f"{m} {b.quality(m):.3f} vs {bought.quality(m):.3f} {f.compare(b, bought, m).margin()}"
                 + ("*" if f.compare(b, bought, m).beats() else "") for m in f.metrics]
        lines.append(f"{b.label():28s} {b.cost:.2f} vs Large {bought.steps:2d} | " + " | ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Frontier:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="save the frontier JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    frontier = measure(args.folder, args.prompts, args.seeds)
    print(f"{args.folder.name}: {time.perf_counter() - started:.0f} s\n{report(frontier)}")
    if args.out:
        frontier.save(args.out)
    return frontier


if __name__ == "__main__":
    main()
