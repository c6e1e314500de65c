"""``flowblend calibrate``: probe, propose, refine; store the pair's profile and say what it decided,
what it cost and what the budget left unexplored."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptive.cli.options import add_common, add_pair_options, budget_arg, pair_and_conds, solver_of
from adaptive.controller import ControllerConfig


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("calibrate", help="find the Small window for a pair and store its profile")
    add_common(p, schedule=False)
    add_pair_options(p)
    p.add_argument("--trials", type=int, default=24, help="Optuna trials (default 24)")
    p.add_argument("--budget", type=budget_arg, default=3.0,
                   help="what calibration may spend, in Large passes per calibration sample (one pass: Large "
                        "with every step), probe included (default 3; 'none': no limit); the output says what "
                        "the budget left unexplored")
    p.add_argument("--target", type=float, default=0.95, help="least similarity to Large-only (default 0.95)")
    p.add_argument("--storage", help="Optuna storage URL shared by workers (default: SQLite in the store)")
    p.add_argument("--study", help="study name, to join other workers (default: derived from the inputs)")
    p.add_argument("--per-prompt", action="store_true",
                   help="also store a window per prompt and fit the online controller (--schedule online)")
    p.add_argument("--force", action="store_true",
                   help="replace a stored profile even if this calibration is weaker (fewer trials, costlier plan)")
    p.add_argument("--search-steps", action=argparse.BooleanOptionalAction, default=True,
                   help="also search fewer steps: Large alone with fewer steps and blends on coarser grids "
                        "are candidates (default on; --no-search-steps keeps the grid of --steps)")
    p.add_argument("--guidance-interval", action=argparse.BooleanOptionalAction, default=True,
                   help="for a guided pair, also search where guidance pays (one call per step outside it; "
                        "default on; --no-guidance-interval guides every step)")
    return p


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The store must take the profile, and a shared Optuna storage must open, before any model loads."""
    from adaptive.errors import StorageError
    from adaptive.profile_store import ProfileStore
    from adaptive.storage import open_storage

    try:
        ProfileStore(args.store).check_writable()
        if args.storage:
            open_storage(args.storage)
    except (StorageError, ValueError) as err:  # ProfileError is a ValueError
        parser.error(str(err))


def run(args: argparse.Namespace) -> int:
    """Probe, detect, refine; store the profile and plot the curve (a Wan 2.2 --pipeline: its pool's plan)."""
    import optuna

    if args.pipeline:
        from adaptive.cli.pipelines import calibrate_two_experts, has_two_experts

        if has_two_experts(args.pipeline):
            return calibrate_two_experts(args)

    from adaptive.calibration import calibrate
    from adaptive.plots import plot_profile
    from adaptive.profile_store import ProfileStore
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pair, conds = pair_and_conds(args)
    store = ProfileStore(args.store)
    profile = calibrate(pair, conds, num_steps=args.steps, seeds=list(range(args.seeds)), shift=args.shift,
                        quality_target=args.target, n_trials=args.trials, storage=args.storage,
                        study_name=args.study, store=store, per_prompt=args.per_prompt,
                        search_steps=args.search_steps, force=args.force, budget=args.budget,
                        guidance_interval=args.guidance_interval, sampler=solver_of(args))
    path = store.path_for(profile.pair_fingerprint, profile.sampler)
    stored = store.get(profile.pair_fingerprint, profile.sampler)
    rejected = stored is not None and stored.to_dict() != profile.to_dict()
    if rejected:
        assert stored is not None
        print(f"NOT STORED: this calibration is weaker than the stored profile (see the warning above), so it was "
              f"written to {path}.rejected and {path} was kept as it was. The stored profile says: "
              f"{stored.decision}" + (f" It has per-prompt windows for {len(stored.windows)} prompts." if
                                      stored.windows else "") +
              " To replace it by this one, run the same command with --force. This calibration found:")
    plot = plot_profile(profile, Path(args.out) / "divergence.png")
    proposal = profile.proposal
    rows = [
        ("pair", profile.pair_name or profile.pair_fingerprint),
        ("sampler", profile.sampler),
        ("proposal (change point)", f"sigma ({proposal['sigma_out']:.3f}, {proposal['sigma_in']:.3f}], steps "
                                    f"{proposal['start']}..{proposal['stop'] - 1}" if proposal else "no safe window"),
        (f"best {profile.num_steps}-step window", "Large only" if profile.is_large_only else
         f"sigma ({profile.sigma_out:.3f}, {profile.sigma_in:.3f}], steps {profile.small_steps[0]}.."
         f"{profile.small_steps[-1]}"),
        ("recommended plan", profile.decision),
        (f"best {profile.num_steps}-step window", f"quality {profile.quality['achieved']:.4f} "
                                                  f"{profile.quality['metric']} (target {args.target}), compute "
                                                  f"{profile.cost['fraction_of_large']:.3f} of Large only"),
        ("calibration cost", _cost_line(profile.cost)),
        *([("not explored", profile.cost.unexplored)] if profile.cost.unexplored else []),
        ("trials", str(profile.calibration["n_trials"])),
        *([("per-prompt windows", ", ".join(f"{w['start']}..{w['stop'] - 1}" if w["start"] < w["stop"] else "Large"
                                            for w in profile.windows.values())),
           ("online controller", _controller_line(profile.controller))]
          if args.per_prompt else []),
        ("frontier", _frontier_verdict(profile, store)),
        ("profile", f"{path}.rejected (not stored; the stored one is {path})" if rejected else str(path)),
        ("plot", str(plot)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if profile.note:
        print(f"note: {profile.note}")
    return 0


def _frontier_verdict(profile, store) -> str:
    """Whether a profile's recommended plan is on the pair's stored frontier (``flowblend frontier``)."""
    from adaptive.frontier import Frontier, frontier_path

    path = frontier_path(store.root, profile.pair_fingerprint, profile.sampler)
    if not path.exists():
        return "not measured: `flowblend frontier` measures every blend against Large with fewer steps"
    frontier = Frontier.load(path)
    if frontier.metric != profile.quality.get("metric"):
        return f"the stored frontier ({path}) was measured on {frontier.metric}, not {profile.quality.get('metric')}"
    plan = profile.plan or {"steps": profile.num_steps, "start": 0, "stop": 0}
    return frontier.verdict(int(plan["steps"]), int(plan["start"]), int(plan["stop"])) + f" ({path})"


def _cost_line(cost) -> str:
    """What calibration spent per sample, in Large passes, by phase, against its budget."""
    passes = cost.calibration_passes
    if passes is None:
        return "not recorded"
    phases = ", ".join(f"{name} {value:.2f}" for name, value in cost.passes_by_phase or ())
    budget = f" of a budget of {cost.budget_passes:g}" if cost.budget_passes is not None else " (no budget)"
    return (f"{passes:.2f} Large passes per sample{budget} ({phases}); one pass is Large with every step "
            f"on one sample")


def _controller_line(controller: ControllerConfig | None) -> str:
    """The calibrated controller in words: its rule, or why 'online' runs the stored windows."""
    if controller is None:
        return "none calibrated"
    if controller.fallback:
        return f"not used, 'online' runs the stored windows: {controller.fallback}"
    checks = f", then a check every {controller.monitor_every}" if controller.monitor_every else ""
    return (f"threshold {controller.threshold:.4g} on the raw probe, probes <= {controller.probe_budget}, "
            f"Small for at most {controller.small_span} steps{checks} (validated leave-one-prompt-out)")
