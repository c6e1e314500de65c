"""Judge a pair's stored plan on videos it was not calibrated on (issue #25's acceptance).

    python scripts/heldout_check.py --pair toy-two-digits --prompts 8 --seeds 2 --out docs/two_digits

On ``--prompts`` held-out prompts x ``--seeds`` held-out noise seeds (``adaptive.toy.heldout_prompts``:
prompts no default calibration uses, seeds from 10000), against Large with all ``--steps`` Euler steps
at ``--shift`` on the same noise: the stored profile's recommended plan, Large alone with the steps its
compute buys (the obvious alternative), Small alone and Large with a third of the steps, on the pair's
metric and each of its parts (feature cosine, SSIM), paired by video with two standard errors. The
plan passes when it saves at least 30% and beats Large-fewer beyond two paired standard errors on
every metric. Writes ``heldout.json``, ``heldout.md`` and ``heldout.png`` (the videos side by side).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from adaptive.frontier import Z_NOISE, measure_frontier
from adaptive.profile_store import ProfileStore
from adaptive.toy import HELDOUT_SEED_START, PAIRS, heldout_prompts, load_pair, prompt_conds
from adaptive.toy.pair import DEFAULT_PAIR, generate


def check(pair_name: str, prompts: int, seeds: int, steps: int, shift: float, store: str | None,
          out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    pair, _ = load_pair(pair_name)
    profile = ProfileStore(store).for_grid(pair, steps, shift)
    if profile is None or profile.plan is None:
        raise SystemExit(f"no stored profile with a plan for {pair_name} on {steps} steps, shift {shift:g}; run "
                         f"`flowblend calibrate --pair {pair_name}` first")
    texts, _ = heldout_prompts(prompts)
    seed_list = list(range(HELDOUT_SEED_START, HELDOUT_SEED_START + seeds))
    plan = (profile.plan.steps, profile.plan.start, profile.plan.stop)
    third = (max(1, steps // 3), 0, 0)
    command = f"python scripts/heldout_check.py --pair {pair_name} --prompts {prompts} --seeds {seeds}"
    with torch.no_grad():
        frontier = measure_frontier(pair, prompt_conds(texts), steps, seed_list, shift, blend_steps=(),
                                    extra=[plan, (steps, 0, steps), third], progress=True, command=command)
    point = frontier.find(*plan)
    bought = frontier.large_bought(point)
    rows: dict[str, Any] = {}
    for metric in frontier.metrics:
        c = frontier.compare(point, bought, metric)
        rows[metric] = {"plan": point.quality(metric), "large_fewer": bought.quality(metric),
                        "difference": c.difference, "stderr": c.stderr, "beats": c.beats(),
                        "small_alone": frontier.find(steps, 0, steps).quality(metric),
                        "large_third": frontier.large_fewer()[third[0]].quality(metric)}
    saved = 1.0 - point.cost
    result = {"command": command, "pair": pair_name, "profile": profile.sampler, "decision": profile.decision,
              "plan": point.label(), "cost": point.cost, "saved": saved, "large_fewer": bought.label(),
              "videos": frontier.samples, "prompts": texts, "seeds": seed_list, "metrics": rows,
              "passes": saved >= 0.3 and all(r["beats"] for r in rows.values()),
              "seconds": round(time.perf_counter() - started, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "heldout.md").write_text(markdown(result) + "\n")
    picture(pair, texts, seed_list, profile, point.label(), bought.steps, steps, shift, out / "heldout.png")
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [f"`{r['command']}` ({r['seconds']:.0f} s on this machine)", "",
             f"Pair {r['pair']}, profile {r['profile']}: {r['decision']}", "",
             f"{r['videos']} held-out videos; the plan ({r['plan']}, {r['cost']:.2f} of Large's compute, "
             f"{100 * r['saved']:.0f}% saved) against {r['large_fewer']} (what its compute buys), both scored "
             f"against Large with all steps on the same noise; a win is a paired difference above "
             f"{Z_NOISE:g} standard errors.", "",
             "| metric | the plan | Large-fewer | paired difference | beats | Small alone | Large, a third of the steps |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for name, m in r["metrics"].items():
        lines.append(f"| {name} | {m['plan']:.4f} | {m['large_fewer']:.4f} | {m['difference']:+.4f} ± "
                     f"{m['stderr']:.4f} | {'yes' if m['beats'] else 'no'} | {m['small_alone']:.4f} | "
                     f"{m['large_third']:.4f} |")
    lines += ["", "Passes (>= 30% saved, beats Large-fewer on every metric): " + ("yes" if r["passes"] else "no")]
    return "\n".join(lines)


def picture(pair, texts, seeds, profile, label: str, fewer: int, steps: int, shift: float, path: Path) -> None:
    """Large with all steps | the plan | Large with the steps its compute buys, 8 held-out videos."""
    from adaptive.toy.video import save_side_by_side

    prompts, noise_seeds = texts[:4] * 2, [seeds[0]] * 4 + [seeds[-1]] * 4
    with torch.no_grad():
        videos = {f"Large, {steps} steps": generate(pair, prompts, noise_seeds, None, num_steps=steps, shift=shift),
                  f"plan: {label}": generate(pair, prompts, noise_seeds, profile.plan_schedule(),
                                             num_steps=profile.plan.steps, shift=shift),
                  f"Large, {fewer} steps (same compute)": generate(pair, prompts, noise_seeds, None, num_steps=fewer,
                                                                    shift=shift)}
    save_side_by_side(path, videos, [f"{p} (seed {s})" for p, s in zip(prompts, noise_seeds)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=list(PAIRS), default=DEFAULT_PAIR)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--store", default=None, help="profile store (default $ADAPTIVE_PROFILES or ./profiles)")
    parser.add_argument("--out", type=Path, default=Path("outputs/heldout"))
    args = parser.parse_args(argv)
    result = check(args.pair, args.prompts, args.seeds, args.steps, args.shift, args.store, args.out)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
