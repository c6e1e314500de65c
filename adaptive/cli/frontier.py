"""``flowblend frontier``: every one-window blend against Large with fewer steps (table, Pareto plot,
JSON), kept beside the pair's profiles for calibration to cite."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptive.cli.options import (add_common, add_pair_options, given_prompts, grid_of, pair_and_conds,
                                  replay_command, solver_of)
from adaptive.schedule import Schedule


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("frontier", help="every one-window blend against Large with fewer steps: table, plot, JSON")
    add_common(p, schedule=False, out="outputs/frontier")
    add_pair_options(p)
    p.add_argument("--blend-steps", help="grids whose every window is measured, e.g. 30,15 (default: --steps)")
    p.add_argument("--no-store", dest="store_result", action="store_false",
                   help="don't keep the frontier in the profile store (calibrate reads it from there)")
    return p


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--blend-steps are step counts of the grid; the store takes the frontier (unless --no-store)."""
    if args.blend_steps:
        try:
            counts = [int(v) for v in args.blend_steps.split(",")]
        except ValueError:
            counts = []
        if not counts or any(not 1 <= n <= args.steps for n in counts):
            parser.error(f"--blend-steps must be step counts in 1..{args.steps} (--steps) separated by commas, "
                         f"got {args.blend_steps!r}")
    if args.store_result:  # it writes the frontier beside the profiles at the end
        from adaptive.errors import StorageError
        from adaptive.profile_store import ProfileStore

        try:
            ProfileStore(args.store).check_writable()
        except StorageError as err:
            parser.error(f"{err}; or pass --no-store to keep the frontier only in --out")


def run(args: argparse.Namespace) -> int:
    """Every one-window blend against Large with fewer steps: table, Pareto plot, JSON."""
    from adaptive.frontier import frontier_path, measure_frontier
    from adaptive.profiles import fingerprint
    from adaptive.profile_store import ProfileStore
    blend_steps = [int(v) for v in args.blend_steps.split(",")] if args.blend_steps else [args.steps]  # validate
    pair, conds = pair_and_conds(args)
    store, signature = ProfileStore(args.store), solver_of(args).signature(args.steps)
    fp = fingerprint(pair)
    profile = store.get(fp, signature)
    extra = []
    if profile is not None and profile.plan:
        extra.append((int(profile.plan["steps"]), int(profile.plan["start"]), int(profile.plan["stop"])))
    windows = sum(n * (n + 1) // 2 for n in blend_steps)
    print(f"measuring Large alone with 1..{args.steps} steps and {windows} one-window blends on "
          f"{len(conds)} prompts x {args.seeds} seeds ({pair.name or 'pair'}, {args.sampler}, shift {args.shift})")
    command = replay_command(args, f"--blend-steps {','.join(map(str, blend_steps))}")
    frontier = measure_frontier(pair, conds, args.steps, seeds=list(range(args.seeds)), shift=args.shift,
                                blend_steps=blend_steps, extra=extra, command=command, sampler=solver_of(args))
    out = Path(args.out)
    plan = frontier.find(*extra[0]) if extra else None
    paths = [frontier.save(out / "frontier.json"), frontier.plot(out / "frontier.png", [plan] if plan else [])]
    (out / "frontier.md").write_text(frontier.table() + "\n")
    paths.append(out / "frontier.md")
    if args.store_result:
        paths.append(frontier.save(frontier_path(store.root, fp, signature)))
    print(frontier.table())
    if profile is not None and extra:
        print(f"the stored profile's plan ({profile.decision.split(';')[0]}) is {frontier.verdict(*extra[0])}")
    if not (args.large or args.small):  # an embedded pair: does each plan draw what was asked?
        points = [frontier.find(args.steps, 0, 0), frontier.large_fewer()[max(1, args.steps // 3)]]
        if plan is not None:
            points += [plan, frontier.large_bought(plan)]
        print(_prompt_alignment(args, pair, [p for p in points if p is not None]))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _prompt_alignment(args: argparse.Namespace, pair, points: list) -> str:
    """Prompt alignment of frontier points on the frontier's own prompts and seeds: the share of videos whose
    prompted digit and direction the pair's encoder reads (the CLIP-score analogue), beside their similarity to
    Large (calibration's target stays that similarity)."""
    from adaptive.toy import generate, parse_prompt
    from adaptive.toy.pair import pair_harness

    harness = pair_harness(args.pair)
    prompts = [p for p in given_prompts(args, args.num_prompts) for _ in range(args.seeds)]
    seeds = [s for _ in range(args.num_prompts) for s in range(args.seeds)]
    labels = [parse_prompt(p) for p in prompts]
    lines = [f"prompt alignment on these {len(prompts)} videos (digit / direction read by the pair's encoder):"]
    for point in points:
        schedule = Schedule.from_steps(grid_of(args, point.steps), ["small" if point.start <= i < point.stop
                                                                    else "large" for i in range(point.steps)])
        videos = generate(pair, prompts, seeds, schedule, num_steps=point.steps, shift=args.shift,
                          sampler=args.sampler)
        digit, direction = harness.alignment(videos, [d for d, _ in labels], [m for _, m in labels])
        lines.append(f"  {point.label():32s} compute {point.cost:.2f}: {digit:.2f} / {direction:.2f}")
    return "\n".join(lines)
