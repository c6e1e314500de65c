"""``flowblend bench``: the comparison table on the embedded pair (Large, fewer steps, Small, the
stored plan, per-prompt and online rows, a cache), measured side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from adaptive.cli.options import DEFAULT_WINDOW, add_common, configure, solver_of, stored_profile
from adaptive.schedule import Schedule


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="the comparison table on the embedded pair, measured side by side")
    add_common(p, out="outputs/bench")
    p.add_argument("--quick", action="store_true", help="CI smoke run: 4 videos, <= 10 steps, one round")
    p.add_argument("--num", type=int, default=0, help="videos (default 32, quick 4)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved timing rounds (default 2)")
    p.add_argument("--oracle", help="JSON with sigma_in/sigma_out of the exhaustive-sweep oracle "
                   "(oracle.json from flowblend oracle or benchmarks/oracle.py)")
    p.add_argument("--cache-threshold", type=float, default=0.1, help="First Block Cache threshold")
    return p


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.oracle and not Path(args.oracle).is_file():
        parser.error(f"--oracle {args.oracle!r} does not exist; make it with `flowblend oracle` (its oracle.json)")


def run(args: argparse.Namespace) -> int:
    """The comparison table on the embedded pair, measured side by side."""
    import warnings

    import numpy as np

    from adaptive.bench import BlendPlan, bench_rows, blend_plan, run_bench, write_outputs
    from adaptive.plots import plot_profile
    from adaptive.toy import load_pair, seeded_noise
    from adaptive.toy.data import DIRECTION_NAMES, encode_prompts, prompt_for
    from adaptive.toy.pair import pair_harness
    from adaptive.toy.video import save_strip

    n = args.num or (4 if args.quick else 32)
    steps = args.steps if not args.quick else min(args.steps, 10)
    repeats = 1 if args.quick else args.repeats
    pair = configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    rng = np.random.default_rng(2024)
    digits, directions = rng.integers(0, 10, n), rng.integers(0, len(DIRECTION_NAMES), n)
    prompts = [prompt_for(int(d), int(m)) for d, m in zip(digits, directions)]
    noise = seeded_noise(range(1000, 1000 + n), device=args.device)
    cond = {"encoder_hidden_states": encode_prompts(prompts).to(args.device)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = stored_profile(pair, args, steps)
    for w in caught:
        print(f"note: {w.message}")
    if isinstance(args.schedule, str):
        raise SystemExit("bench compares rows itself: the per-prompt and online rows come from the stored "
                         "profile; give --schedule a fixed schedule (lsl:0.85,0.3) or leave it out")
    given = args.schedule is not None
    plan = BlendPlan(args.schedule, steps, "--schedule") if given else \
        blend_plan(profile, steps, Schedule.lsl(*DEFAULT_WINDOW))
    rows = bench_rows(pair, noise, cond, steps, args.shift, plan, profile=None if given else profile,
                      oracle=oracle_window(args.oracle) if args.oracle else None,
                      other_noise=seeded_noise(range(5000, 5000 + n), device=args.device),
                      cache_threshold=args.cache_threshold, sampler=solver_of(args).name)
    harness = pair_harness(args.pair)  # the pair's own encoder, real videos of its own data
    result = run_bench(pair, rows, noise, cond, args.shift,
                       lambda videos, reference: harness.report(videos, digits, directions, reference), repeats=repeats)
    out = Path(args.out)
    meta = {"pair": args.pair, "videos": n, "steps": steps, "shift": args.shift, "repeats": repeats,
            "device": str(args.device), "dtype": str(args.dtype), "threads": torch.get_num_threads(),
            "blend_schedule": plan.schedule.to_dict(), "schedule_source": plan.source, "quick": args.quick}
    paths = write_outputs(result, out, meta)
    outputs = result["outputs"]
    save_strip(out / "strip.png", {"Large": outputs[rows[0].name][:4], "Row 3": outputs[rows[3].name][:4],
                                   "Small": outputs[rows[2].name][:4]}, prompts[:4])
    if profile is not None and profile.curve:
        plot_profile(profile, out / "divergence.png")
    print((out / "bench.md").read_text())
    print(f"{n} videos, {steps} steps, shift {args.shift}, {repeats} interleaved rounds on {args.device}; "
          f"files: {', '.join(str(p) for p in paths.values())}, {out / 'strip.png'}")
    return 0


def oracle_window(path: str) -> Schedule:
    """The exhaustive sweep's window from ``flowblend oracle``'s JSON (its ``oracle`` entry), or a
    JSON of just ``sigma_in`` and ``sigma_out``."""

    found = json.loads(Path(path).read_text())
    found = found.get("oracle", found)
    return Schedule.lsl(found["sigma_in"], found["sigma_out"])
