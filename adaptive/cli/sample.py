"""``flowblend sample``: videos from the embedded pair with the stored plan (or ``--schedule``),
written as a PNG strip and GIFs."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptive.cli.options import (DEFAULT_WINDOW, add_common, add_pipeline_options, configure, given_prompts,
                                  solver_of, stored_profile)
from adaptive.schedule import Schedule


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sample", help="sample videos from the embedded pair, or a --pipeline folder blended with --small")
    add_common(p)
    p.add_argument("--num", type=int, default=8, help="videos (default 8)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first video; the others follow (default 0)")
    add_pipeline_options(p, models=True)
    return p


def _default_plan(pair, args: argparse.Namespace) -> tuple[Schedule, int]:
    """The stored profile's recommended plan (its schedule and step count) for ``--steps``; said
    in words. Without a profile: the uncalibrated default window on ``--steps``."""
    profile = stored_profile(pair, args, args.steps)
    if profile is None:
        print(f"plan: no stored profile for {args.steps} steps; the uncalibrated window "
              f"lsl:{DEFAULT_WINDOW[0]},{DEFAULT_WINDOW[1]}")
        return Schedule.lsl(*DEFAULT_WINDOW), args.steps
    from adaptive.auto import warn_if_other_metric

    warn_if_other_metric(profile, pair)
    if profile.num_steps != args.steps:  # another grid's profile: its plan for this grid, else its window by sigma
        print(f"plan: the profile stored for {profile.sampler} (the nearest stored grid), mapped by sigma onto "
              f"{args.steps} steps, shift {args.shift:g}")
        return profile.schedule_for_steps(args.steps), args.steps
    print(f"plan: {profile.decision} (--schedule auto keeps all {args.steps} steps)")
    return profile.plan_schedule(), profile.steps


def run(args: argparse.Namespace) -> int:
    """Sample videos from the embedded pair and write a PNG strip and GIFs (a --pipeline: its videos)."""
    if args.pipeline:
        from adaptive.cli.pipelines import sample_pipeline

        return sample_pipeline(args)
    from adaptive.toy import generate, load_pair
    from adaptive.toy.video import save_gif, save_strip

    pair = configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    schedule, steps = (args.schedule, args.steps) if args.schedule else _default_plan(pair, args)
    prompts = given_prompts(args, args.num)
    seeds = list(range(args.seed, args.seed + args.num))
    if isinstance(schedule, str):
        from adaptive.sampling import SAMPLERS, sample, sigmas
        from adaptive.toy import seeded_noise
        from adaptive.toy.data import encode_prompts

        # Heun looks for its own profile and says so when it runs Euler's; UniPC/DPM++ look for theirs
        noise, cond = seeded_noise(seeds, device=args.device), encode_prompts(prompts).to(args.device, args.dtype)
        if args.sampler in SAMPLERS:
            videos, decisions = SAMPLERS[args.sampler](pair, noise, sigmas(args.steps, args.shift), schedule,
                                                       return_decisions=True, encoder_hidden_states=cond)
        else:
            videos, decisions = sample(pair, noise, args.steps, schedule, return_decisions=True,
                                       sampler=solver_of(args), encoder_hidden_states=cond)
        print(decisions.summary())
    else:
        videos = generate(pair, prompts, seeds, schedule, num_steps=steps, shift=args.shift, sampler=args.sampler)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_strip(out / "samples.png", {str(schedule): videos}, prompts)
    for i, video in enumerate(videos):
        save_gif(out / f"sample_{i:03d}.gif", video)
    stale = [p for p in out.glob("sample_*.gif") if p.stem[len("sample_"):].isdigit() and
             int(p.stem[len("sample_"):]) >= len(videos)]
    for path in stale:  # an earlier run's extra GIFs would pass for this run's
        path.unlink()
    print(f"wrote {out / 'samples.png'} and {len(videos)} GIFs with schedule {schedule}"
          + (f"; removed {len(stale)} GIFs of an earlier run" if stale else ""))
    return 0
