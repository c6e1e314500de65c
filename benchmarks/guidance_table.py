"""Does a guidance interval pay on the embedded pair, alone and with the blend? (docs/guidance/)

Searches, with :func:`adaptive.calibration.segments.find_plan` on the embedded pair (guided at its
scale 4, costs measured in FLOPs), three plan families on the caller's grid and fewer steps:
guidance interval alone, Small window alone, both; then judges every plan and the obvious
alternatives at equal compute (guided Large with fewer steps, no guidance with more steps) on
held-out prompts and seeds against guided Large with all steps, and draws them side by side.

    python benchmarks/guidance_table.py --out docs/guidance --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adaptive.calibration.segments import GUIDANCE, find_plan, window
from adaptive.pool import Pool
from adaptive.schedule import Schedule, sigmas, unguided
from adaptive.toy.data import calibration_prompts, heldout_prompts
from adaptive.toy.pair import NUM_STEPS, SHIFT, load_pair, prompt_conds, seeded_noise
from adaptive.toy.video import save_side_by_side
from adaptive.sampling import sample

FAMILIES = {"guidance interval": [GUIDANCE], "blend": [window("small")], "both": [GUIDANCE, window("small")]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/guidance"))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[NUM_STEPS, 16, 10, 8])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pair, _ = load_pair()
    conds = prompt_conds(calibration_prompts(args.prompts))
    noise = seeded_noise([0])
    pool = Pool.of(pair, x=noise, **conds[0])
    print("pool costs per call:", {k: round(v, 4) for k, v in pool.costs.items()}, flush=True)
    reference = Schedule.large_only()
    rows: dict[str, dict] = {}
    for label, axes in FAMILIES.items():
        began = time.perf_counter()
        found = find_plan(pool, conds, axes, num_steps=args.steps, shift=SHIFT, seeds=range(args.seeds),
                          shape=pair.sample_shape, metric=pair.metric, target=args.target, n_trials=args.trials)
        rows[label] = found.to_dict()
        print(f"{label}: {found.num_steps} steps, {found.schedule}, cost {found.cost:.2f} of "
              f"{found.reference_cost:.2f}, calibration quality {found.quality:.4f}, "
              f"{found.trials} trials, {time.perf_counter() - began:.0f} s; alternatives {found.alternatives}",
              flush=True)

    # Held-out judgement: every plan and its equal-compute alternatives, against guided Large, all steps.
    prompts, seeds = heldout_prompts(args.heldout)
    held_noise = seeded_noise(seeds)
    cond = {"encoder_hidden_states": torch.cat([c["encoder_hidden_states"] for c in prompt_conds(prompts)])}
    full = sample(pool, held_noise, sigmas(NUM_STEPS, SHIFT), reference, check_every=0, **cond)

    def judged(plan: Schedule, steps: int) -> dict:
        grid = sigmas(steps, SHIFT)
        out = sample(pool, held_noise, grid, plan, check_every=0, **cond)
        quality = pair.metric(out, full).float()
        return {"steps": steps, "cost": pool.cost(plan, grid), "heldout_mean": float(quality.mean()),
                "heldout_min": float(quality.min()), "video": out}

    table, pictures, seen = [], {f"guided Large, {NUM_STEPS} steps (1.00)": full}, set()
    ref_cost = pool.cost(reference, sigmas(NUM_STEPS, SHIFT))

    def shown(title: str, plan: Schedule, run: dict) -> None:  # one column per distinct plan and step count
        video = run.pop("video")
        if (str(plan), run["steps"]) not in seen:
            seen.add((str(plan), run["steps"]))
            pictures[f"{title} ({run['cost'] / ref_cost:.2f})"] = video

    for label, data in rows.items():
        plan = Schedule.from_dict(data["schedule"])
        no_guidance = reference.relabel(0.0, 0.0, outside=unguided)
        result = judged(plan, data["num_steps"])
        shown(f"{label}: {data['num_steps']} steps", plan, result)
        # the alternatives with the steps the plan's compute buys (at least one step: the cheapest there is)
        fewer = judged(reference, data["alternatives"].get("large_fewer", {}).get("steps", 1))
        unguided_run = judged(no_guidance, data["alternatives"].get("no_guidance", {}).get("steps", 1))
        shown(f"Large {fewer['steps']} steps", reference, fewer)
        shown(f"no guidance, {unguided_run['steps']} steps", no_guidance, unguided_run)
        table.append({"family": label, "plan": str(plan), "calibration": data, "heldout": result,
                      "large_fewer": fewer, "no_guidance": unguided_run})
    (args.out / "table.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "costs": pool.costs, "rows": table}, indent=1))
    save_side_by_side(args.out / "side_by_side.png", {k: v[:4] for k, v in pictures.items()},
                      captions=[f"{p} (seed {s})" for p, s in zip(prompts, seeds)])
    print("\n| family | plan (steps) | cost / guided Large 30 | held-out mean (min) | Large-fewer same compute | "
          "no guidance same compute |")
    print("|---|---|---:|---:|---:|---:|")
    for row in table:
        h, f, u = row["heldout"], row["large_fewer"], row["no_guidance"]
        print(f"| {row['family']} | {row['plan']} ({h['steps']}) | {h['cost'] / ref_cost:.3f} | "
              f"{h['heldout_mean']:.4f} ({h['heldout_min']:.4f}) | {f['steps']} steps: {f['heldout_mean']:.4f} "
              f"({f['heldout_min']:.4f}) | {u['steps']} steps: {u['heldout_mean']:.4f} ({u['heldout_min']:.4f}) |")
    return {"rows": table, "costs": pool.costs}


if __name__ == "__main__":
    main()
