"""``flowblend``: sample, calibrate and benchmark Large/Small flow-matching pairs.

Run ``flowblend --help`` or ``flowblend <command> --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch

from adaptive.controller import ControllerConfig
from adaptive.schedule import Schedule, base_of, is_unguided

DEFAULT_WINDOW = (0.85, 0.3)


def parse_schedule(text: str) -> Schedule | str:
    """``large``, ``lsl:SIGMA_IN,SIGMA_OUT``, ``sl:SWITCH``, ``ls:BOUNDARY``, a schedule JSON file, or
    ``auto``/``online`` (the stored profile: per-prompt windows / the online controller)."""
    if text in ("auto", "online"):
        return text
    kind, _, args = text.partition(":")
    try:
        values = [float(v) for v in args.split(",")] if args else []
        if kind == "large" and not values:
            return Schedule.large_only()
        if kind == "lsl" and len(values) == 2:
            return Schedule.lsl(values[0], values[1])
        if kind == "sl" and len(values) == 1:
            return Schedule.small_first(values[0])
        if kind == "ls" and len(values) == 1:
            return Schedule.large_first(values[0])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if Path(text).is_file():
        try:
            data = json.loads(Path(text).read_text())
        except (OSError, ValueError) as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a JSON file ({err})") from None
        if isinstance(data, dict) and "pair_fingerprint" in data:
            raise argparse.ArgumentTypeError(
                f"{text!r} is a profile, not a schedule: leave --schedule out (the stored profile's plan runs), or "
                "point --store at its folder, or write its window with `Profile.load(path).schedule().to_json()`")
        try:
            return Schedule.from_json(json.dumps(data))
        except (ValueError, KeyError, TypeError) as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a schedule JSON ({err}); write one with "
                                             "Schedule.to_json()") from None
    raise argparse.ArgumentTypeError(f"cannot read schedule {text!r}: use large, lsl:0.85,0.3, sl:0.5, ls:0.5 "
                                     "or a path to a schedule JSON file")


def _guidance(text: str) -> float:
    """``--guidance``: a finite scale >= 1 (1: no guidance), as ``ModelPair.guided`` takes it."""
    from adaptive.denoisers import check_guidance_scale
    from adaptive.errors import PairMismatchError

    try:
        return check_guidance_scale(float(text))
    except (ValueError, PairMismatchError) as err:
        raise argparse.ArgumentTypeError(str(err) if isinstance(err, PairMismatchError)
                                         else f"expected a number, got {text!r}") from None


def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise argparse.ArgumentTypeError(f"dtype must be one of {sorted(table)}")
    return table[name]


def _prompts(args: argparse.Namespace, n: int) -> list[str]:
    from adaptive.toy.data import calibration_prompts

    if args.prompt:
        return [args.prompt[i % len(args.prompt)] for i in range(n)]
    return calibration_prompts(n)


def _configure(pair, args: argparse.Namespace):
    """Apply --small-device / --offload-small / --compile to a loaded pair."""
    if args.small_device or args.offload_small:
        pair = pair.placed("small", args.small_device or args.device, offload=args.offload_small)
    return pair.compile() if args.compile else pair


def cmd_demo(args: argparse.Namespace) -> int:
    """Large with all steps | the recommended plan | its obvious alternative, side by side: one
    picture a person can judge, the quality on the pair's metric and the speed measured in one run."""
    import functools

    from adaptive.metering import interleaved
    from adaptive.toy import generate, load_pair, parse_prompt
    from adaptive.toy.pair import pair_harness
    from adaptive.toy.video import save_side_by_side

    if isinstance(args.schedule, str):
        raise SystemExit(f"demo compares fixed plans; for --schedule {args.schedule} run "
                         f"`flowblend sample --schedule {args.schedule}` (it prints every decision)")
    from adaptive.toy import heldout_prompts

    pair = _configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    runs, why = _demo_runs(pair, args)
    if args.prompt:
        prompts, seeds, where = _prompts(args, args.num), list(range(args.num)), "the prompts given, seeds 0.."
    else:
        prompts, seeds = heldout_prompts(args.num)
        where = "held-out prompts and seeds (no default calibration uses them)"
    print(f"pair: {args.pair} (Wan architecture, embedded); {args.num} videos of {where}, {args.sampler}, shift "
          f"{args.shift}")
    print(f"chosen (by calibration, on its own prompts): {why}")
    generate(pair, prompts[:1], seeds[:1], runs[1].schedule, num_steps=2, sampler=args.sampler)  # warm-up
    measured = interleaved({run.label: functools.partial(generate, pair, prompts, seeds, run.schedule,
                                                         num_steps=run.steps, shift=args.shift, sampler=args.sampler)
                            for run in runs},
                           rounds=args.repeats, device=args.device)  # so machine noise hits every run alike
    videos = measured.outputs
    seconds = {run.label: measured.total(run.label) for run in runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_side_by_side(out / "demo.png", {r.label: videos[r.label][:8] for r in runs},
                      [f"{p} (seed {s})" for p, s in zip(prompts[:8], seeds[:8])])
    reference = videos[runs[0].label]
    metric = pair.metric
    harness = pair_harness(args.pair)  # what users check first: does it draw what was asked?
    labels = [parse_prompt(p) for p in prompts]
    digits, directions = [d for d, _ in labels], [m for _, m in labels]
    print(f"{'':34s} {'s/batch':>8s} {'speed-up':>8s} {'compute':>8s} {'prompt digit/direction':>22s} "
          f"{getattr(metric, 'name', 'quality')}")
    for run in runs:
        parts = metric.parts(videos[run.label], reference) if hasattr(metric, "parts") else {}
        quality = float(metric(videos[run.label], reference).mean())
        detail = ", ".join(f"{k} {float(v.mean()):.3f}" for k, v in parts.items())
        digit, direction = harness.alignment(videos[run.label], digits, directions)
        print(f"{run.label + ':':34s} {seconds[run.label] / args.repeats:8.2f} "
              f"{seconds[runs[0].label] / seconds[run.label]:7.2f}x {run.cost:8.2f} "
              f"{f'{digit:.2f} / {direction:.2f}':>22s} {quality:.3f}" + (f"  ({detail})" if detail else ""))
    bound = 1 / runs[1].cost if runs[1].cost > 0 else float("inf")
    speedup = seconds[runs[0].label] / seconds[runs[1].label]
    caveat = "" if speedup <= bound * 1.05 else \
        f" (above its FLOP bound {bound:.2f}x: timing noise on {args.num} videos, {args.repeats} repeats)"
    print(f"speed-up: {speedup:.2f}x for the chosen plan (same run, interleaved, {args.repeats} repeats){caveat}; "
          f"quality is against {runs[0].label}, same noise and prompt, measured on these {args.num} videos; prompt "
          "digit/direction: the share of videos whose prompted digit and direction the pair's encoder reads")
    if len(runs) > 2:
        print("verdict: " + _verdict(metric, videos, runs))
    for name in _other_pairs(args.pair):
        print(f"the other embedded pair, {name}: {_stored_decision(name, args)}")
    print(f"wrote {out / 'demo.png'}")
    return 0


def _verdict(metric, videos, runs: list[_Run]) -> str:
    """The chosen plan against the third run (its obvious alternative) on every metric part,
    paired by video, in words: beats / ties / loses beyond two standard errors."""
    import math

    reference, plan, other = (videos[r.label] for r in runs[:3])
    scores = {getattr(metric, "name", "quality"): (metric(plan, reference), metric(other, reference))}
    if hasattr(metric, "parts"):
        a, b = metric.parts(plan, reference), metric.parts(other, reference)
        scores.update({k: (a[k], b[k]) for k in a})
    parts, wins = [], []
    for name, (x, y) in scores.items():
        diff = (x.float() - y.float()).cpu()
        se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        mean = float(diff.mean())
        word = "n/a (one video)" if not math.isfinite(se) else \
            "beats" if mean > 2 * se else "loses" if mean < -2 * se else "ties"
        wins.append(word == "beats")
        parts.append(f"{name} {mean:+.3f} ± {se:.3f} ({word})")
    head = (f"the chosen plan beats {runs[2].label} on every metric" if all(wins) else
            f"the chosen plan does not beat {runs[2].label} on every metric")
    return f"{head} (paired difference ± 1 standard error over {len(reference)} videos: {'; '.join(parts)})"


def _other_pairs(current: str) -> list[str]:
    from adaptive.toy.pair import PAIRS

    return [name for name in PAIRS if name != current]


def _stored_decision(name: str, args: argparse.Namespace) -> str:
    """What calibration decided for another embedded pair (its stored profile), in one line."""
    from adaptive.profile_store import ProfileStore
    from adaptive.toy import load_pair

    pair = load_pair(name, device=args.device, dtype=args.dtype)[0]
    profile = _stored_profile(pair, args, args.steps)
    if profile is None:
        return f"no stored profile for {args.steps} steps (`flowblend calibrate --pair {name}`)"
    kind = "fewer Large steps pay here" if profile.plan is not None and profile.plan.is_large_only else \
        "a blend pays here"
    return f"{kind}: {profile.decision}"


class _Run(NamedTuple):
    label: str
    steps: int
    schedule: Schedule | None
    cost: float  # compute as a fraction of Large with all steps


def _demo_runs(pair, args: argparse.Namespace) -> tuple[list[_Run], str]:
    """Large with all steps, the plan to show (the stored profile's recommendation, else --schedule
    or the uncalibrated default window) and its obvious alternative at the same compute, with why."""
    import math

    from adaptive.bench import plan_fraction, plan_label
    from adaptive.profile_store import ProfileStore
    from adaptive.sampling import sigmas

    n = args.steps
    full = _Run(f"Large, {n} steps", n, None, 1.0)
    profile = _stored_profile(pair, args, n)
    small_cost = profile.cost.get("small_cost_ratio", 0.1) if profile is not None else _toy_small_cost(pair)
    if args.schedule is not None or profile is None:
        schedule = args.schedule or Schedule.lsl(*DEFAULT_WINDOW)
        why = ("--schedule as given" if args.schedule is not None else
               f"no stored profile for {n} steps: the uncalibrated window lsl:{DEFAULT_WINDOW[0]},{DEFAULT_WINDOW[1]}")
        plan = _Run("chosen: " + plan_label(schedule, n), n, schedule, plan_fraction(schedule, n, n, args.shift,
                                                                                         small_cost, args.sampler))
    else:
        from adaptive.auto import warn_if_other_metric

        warn_if_other_metric(profile, pair)
        # A profile stored for another grid (ProfileStore.find says so) maps by sigma onto this one.
        steps = profile.steps if profile.num_steps == n else n
        schedule = profile.plan_schedule() if profile.num_steps == n else profile.schedule_for_steps(n)
        why = profile.decision if profile.num_steps == n else f"the stored window on {n} steps (see the warning)"
        plan = _Run("chosen: " + plan_label(schedule, steps), steps, schedule,
                    plan_fraction(schedule, steps, n, args.shift, small_cost, args.sampler))
    # a blend, or guidance skipped on some steps: the obvious alternative is Large with the steps its compute buys
    if plan.schedule is not None and any(base_of(m) == "small" or is_unguided(m) for m in plan.schedule.models):
        k = max(1, math.floor(plan.cost * n + 1e-9))
        return [full, plan, _Run(f"Large, {k} steps (the same compute)", k, None, k / n)], why
    target = profile.quality.get("target", 0.0) if profile is not None else 0.0
    frontier = profile.frontier if profile is not None and profile.num_steps == n else []
    blends = [p for p in frontier if p["stop"] > p["start"] and p["cost"] <= plan.cost + 1e-9 and
              p["quality"] >= target]
    missed = not blends
    if missed:  # none met the target: show the best blend at that compute all the same, and say so
        blends = [p for p in frontier if p["stop"] > p["start"] and p["cost"] <= plan.cost + 1e-9]
    if not blends:
        return [full, plan], why
    best = max(blends, key=lambda p: p["quality"])
    grid = _grid(args, best["steps"])
    schedule = Schedule.from_steps(grid, ["small" if best["start"] <= i < best["stop"] else "large"
                                          for i in range(best["steps"])])
    label = (f"best calibrated blend at <= {plan.cost:.2f}: Small {best['start']}-{best['stop'] - 1} of {best['steps']} "
             f"({float(best['cost']):.2f})" + (", misses the target" if missed else ""))
    return [full, plan, _Run(label, best["steps"], schedule, float(best["cost"]))], why


def _toy_small_cost(pair) -> float:
    from adaptive.metering import flops_per_row
    from adaptive.toy import seeded_noise
    from adaptive.toy.data import encode_prompts

    device = next(m for m in pair.modules().values() if m is not None).device
    flops = flops_per_row(pair, seeded_noise([0], device=device), encoder_hidden_states=encode_prompts([""]).to(device))
    return flops["small"] / flops["large"]


def _default_plan(pair, args: argparse.Namespace) -> tuple[Schedule, int]:
    """The stored profile's recommended plan (its schedule and step count) for ``--steps``; said
    in words. Without a profile: the uncalibrated default window on ``--steps``."""
    from adaptive.profile_store import ProfileStore
    profile = _stored_profile(pair, args, args.steps)
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


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample videos from the embedded pair and write a PNG strip and GIFs."""
    from adaptive.toy import generate, load_pair
    from adaptive.toy.video import save_gif, save_strip

    pair = _configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    schedule, steps = (args.schedule, args.steps) if args.schedule else _default_plan(pair, args)
    prompts = _prompts(args, args.num)
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
                                       sampler=_solver(args), encoder_hidden_states=cond)
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


def _load_user_pair(args: argparse.Namespace):
    from diffusers import AutoModel
    from safetensors.torch import load_file

    from adaptive.pair import ModelPair

    models = [AutoModel.from_pretrained(p, torch_dtype=args.dtype, local_files_only=not args.allow_download,
                                        use_safetensors=True).to(args.device).eval().requires_grad_(False)
              for p in (args.large, args.small)]  # _validate_user_pair checked the folders, embeddings and shape
    tensors = load_file(args.embeddings)
    if "prompt_embeds" not in tensors:
        raise SystemExit(f"{args.embeddings} has no 'prompt_embeds' tensor (found {sorted(tensors)})")
    prompts = tensors["prompt_embeds"].to(args.device, args.dtype)
    negative = tensors.get("negative_prompt_embeds", torch.zeros_like(prompts[:1])).to(args.device, args.dtype)
    pair = ModelPair(models[0], models[1], sample_shape=tuple(int(v) for v in args.shape.split(",")),
                     name=Path(args.large).name)
    if args.guidance != 1.0:
        pair = pair.guided(args.guidance, {"encoder_hidden_states": negative[:1]})
    conds = [{"encoder_hidden_states": prompts[i:i + 1]} for i in range(len(prompts))]
    return pair, conds


def _pair_and_conds(args: argparse.Namespace):
    """The pair (a diffusers folder pair with --large/--small, else the embedded one) and its prompts."""
    if args.large or args.small:  # both, with --embeddings and --shape (_validate_user_pair)
        pair, conds = _load_user_pair(args)
        return _configure(pair, args), conds
    from adaptive.toy import load_pair, prompt_conds

    pair = _configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    return pair, prompt_conds(_prompts(args, args.num_prompts), device=args.device)


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


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Probe, detect, refine; store the profile and plot the curve."""
    import optuna

    from adaptive.calibration import calibrate
    from adaptive.plots import plot_profile
    from adaptive.profile_store import ProfileStore
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pair, conds = _pair_and_conds(args)
    store = ProfileStore(args.store)
    profile = calibrate(pair, conds, num_steps=args.steps, seeds=list(range(args.seeds)), shift=args.shift,
                        quality_target=args.target, n_trials=args.trials, storage=args.storage,
                        study_name=args.study, store=store, per_prompt=args.per_prompt,
                        search_steps=args.search_steps, force=args.force, budget=args.budget,
                        guidance_interval=args.guidance_interval, sampler=_solver(args))
    path = store.path_for(profile.pair_fingerprint, profile.sampler)
    stored = store.get(profile.pair_fingerprint, profile.sampler)
    rejected = stored is not None and stored.to_dict() != profile.to_dict()
    if rejected:
        assert stored is not None
        print(f"NOT STORED: this calibration is weaker than the stored profile (see the warning above), so it was "
              f"written to {path}.rejected and {path} was kept as it was. The stored profile says: "
              f"{stored.decision}" + (f" It has per-prompt windows for {len(stored.windows)} prompts." if
                                      stored.windows else "") +
              f" To replace it by this one, run the same command with --force. This calibration found:")
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


def cmd_bench(args: argparse.Namespace) -> int:
    """The comparison table on the embedded pair, measured side by side."""
    import warnings

    import numpy as np

    from adaptive.bench import BlendPlan, bench_rows, blend_plan, run_bench, write_outputs
    from adaptive.plots import plot_profile
    from adaptive.profile_store import ProfileStore
    from adaptive.toy import load_pair, seeded_noise
    from adaptive.toy.data import DIRECTION_NAMES, encode_prompts, prompt_for
    from adaptive.toy.pair import pair_harness
    from adaptive.toy.video import save_strip

    n = args.num or (4 if args.quick else 32)
    steps = args.steps if not args.quick else min(args.steps, 10)
    repeats = 1 if args.quick else args.repeats
    pair = _configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    rng = np.random.default_rng(2024)
    digits, directions = rng.integers(0, 10, n), rng.integers(0, len(DIRECTION_NAMES), n)
    prompts = [prompt_for(int(d), int(m)) for d, m in zip(digits, directions)]
    noise = seeded_noise(range(1000, 1000 + n), device=args.device)
    cond = {"encoder_hidden_states": encode_prompts(prompts).to(args.device)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = _stored_profile(pair, args, steps)
    for w in caught:
        print(f"note: {w.message}")
    if isinstance(args.schedule, str):
        raise SystemExit("bench compares rows itself: the per-prompt and online rows come from the stored "
                         "profile; give --schedule a fixed schedule (lsl:0.85,0.3) or leave it out")
    given = args.schedule is not None
    plan = BlendPlan(args.schedule, steps, "--schedule") if given else \
        blend_plan(profile, steps, Schedule.lsl(*DEFAULT_WINDOW))
    rows = bench_rows(pair, noise, cond, steps, args.shift, plan, profile=None if given else profile,
                      oracle=_oracle_window(args.oracle) if args.oracle else None,
                      other_noise=seeded_noise(range(5000, 5000 + n), device=args.device),
                      cache_threshold=args.cache_threshold, sampler=_solver(args).name)
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


def _oracle_window(path: str) -> Schedule:
    """The exhaustive sweep's window from ``flowblend oracle``'s JSON (its ``oracle`` entry), or a
    JSON of just ``sigma_in`` and ``sigma_out``."""

    found = json.loads(Path(path).read_text())
    found = found.get("oracle", found)
    return Schedule.lsl(found["sigma_in"], found["sigma_out"])


def _replay(args: argparse.Namespace, options: str) -> str:
    """The command line that remakes a measurement (kept in its JSON): the command, the grid, the
    seeds, ``options`` and the pair (its folders, or the embedded pair's prompt count)."""
    pair = f"--large {args.large} --small {args.small}" if args.large else \
        f"--pair {args.pair} --num-prompts {args.num_prompts}"
    sampler = f" --sampler {args.sampler}" if getattr(args, "sampler", "euler") != "euler" else ""
    return (f"flowblend {args.command} --steps {args.steps} --shift {args.shift}{sampler} --seeds {args.seeds} "
            f"{options} {pair}")


def cmd_frontier(args: argparse.Namespace) -> int:
    """Every one-window blend against Large with fewer steps: table, Pareto plot, JSON."""
    from adaptive.frontier import frontier_path, measure_frontier
    from adaptive.profiles import fingerprint
    from adaptive.profile_store import ProfileStore
    blend_steps = [int(v) for v in args.blend_steps.split(",")] if args.blend_steps else [args.steps]  # _validate
    pair, conds = _pair_and_conds(args)
    store, signature = ProfileStore(args.store), _solver(args).signature(args.steps)
    fp = fingerprint(pair)
    profile = store.get(fp, signature)
    extra = []
    if profile is not None and profile.plan:
        extra.append((int(profile.plan["steps"]), int(profile.plan["start"]), int(profile.plan["stop"])))
    windows = sum(n * (n + 1) // 2 for n in blend_steps)
    print(f"measuring Large alone with 1..{args.steps} steps and {windows} one-window blends on "
          f"{len(conds)} prompts x {args.seeds} seeds ({pair.name or 'pair'}, {args.sampler}, shift {args.shift})")
    command = _replay(args, f"--blend-steps {','.join(map(str, blend_steps))}")
    frontier = measure_frontier(pair, conds, args.steps, seeds=list(range(args.seeds)), shift=args.shift,
                                blend_steps=blend_steps, extra=extra, command=command, sampler=_solver(args))
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
    from adaptive.sampling import sigmas
    from adaptive.toy import generate, parse_prompt
    from adaptive.toy.pair import pair_harness

    harness = pair_harness(args.pair)
    prompts = [p for p in _prompts(args, args.num_prompts) for _ in range(args.seeds)]
    seeds = [s for _ in range(args.num_prompts) for s in range(args.seeds)]
    labels = [parse_prompt(p) for p in prompts]
    lines = [f"prompt alignment on these {len(prompts)} videos (digit / direction read by the pair's encoder):"]
    for point in points:
        schedule = Schedule.from_steps(_grid(args, point.steps), ["small" if point.start <= i < point.stop
                                                                    else "large" for i in range(point.steps)])
        videos = generate(pair, prompts, seeds, schedule, num_steps=point.steps, shift=args.shift,
                          sampler=args.sampler)
        digit, direction = harness.alignment(videos, [d for d, _ in labels], [m for _, m in labels])
        lines.append(f"  {point.label():32s} compute {point.cost:.2f}: {digit:.2f} / {direction:.2f}")
    return "\n".join(lines)


def _solver(args: argparse.Namespace) -> Any:
    """The :class:`~adaptive.samplers.Sampler` of ``--sampler`` at ``--shift`` (Heun: sample only)."""
    from adaptive.samplers import Sampler

    if args.sampler == "heun":
        raise SystemExit(f"--sampler heun: {args.command} runs one model call per step (euler, unipc or dpm++); "
                         "`flowblend sample --sampler heun` runs Euler's profile with Heun's steps")
    return Sampler.of(args.sampler, args.shift)


def _grid(args: argparse.Namespace, steps: int) -> list[float]:
    """The sigma grid ``--sampler`` runs for ``steps`` at ``--shift`` (Heun: Euler's)."""
    from adaptive.sampling import sigmas

    return sigmas(steps, args.shift).tolist() if args.sampler == "heun" else _solver(args).grid(steps)


def _stored_profile(pair, args: argparse.Namespace, steps: int):
    """The stored profile for ``pair`` on ``--sampler`` over ``steps`` (:func:`adaptive.auto.lookup`:
    Euler's, said in one line, when the sampler has none of its own)."""
    from adaptive.auto import lookup
    from adaptive.profile_store import ProfileStore

    solver = "heun" if args.sampler == "heun" else _solver(args)
    return lookup(pair, steps, args.shift, solver, ProfileStore(getattr(args, "store", None)))


def cmd_oracle(args: argparse.Namespace) -> int:
    """The change-point proposal and the Optuna refinement against the exhaustive sweep: JSON."""

    import optuna

    from adaptive.oracle import check_oracle

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pair, conds = _pair_and_conds(args)
    windows = args.steps * (args.steps + 1) // 2
    print(f"proposal, {args.trials} refinement trials and all {windows} windows on {len(conds)} prompts x "
          f"{args.seeds} seeds ({pair.name or 'pair'}, {args.steps} steps, shift {args.shift}, target {args.target})")
    command = _replay(args, f"--trials {args.trials} --target {args.target} --budget "
                      f"{'none' if args.budget is None else format(args.budget, 'g')}")
    report = check_oracle(pair, conds, args.steps, seeds=list(range(args.seeds)), shift=args.shift,
                          target=args.target, trials=args.trials, command=command, budget=args.budget,
                          sampler=_solver(args))
    path = report.save(Path(args.out) / "oracle.json")
    summary = report.to_dict()
    print(json.dumps({k: summary[k] for k in ("proposal", "refined", "oracle", "compute_large_equivalents_per_sample",
                                              "seconds")}, indent=2))
    print(f"wrote {path} (flowblend bench --oracle {path} adds the oracle's window to the table)")
    return 0


def _pair_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--large", help="Large transformer folder (save_pretrained); default: the embedded pair")
    p.add_argument("--small", help="Small transformer folder (save_pretrained)")
    p.add_argument("--embeddings", help="safetensors with 'prompt_embeds' (and 'negative_prompt_embeds')")
    p.add_argument("--shape", help="latent shape per sample for a diffusers pair, e.g. 16,21,60,104")
    p.add_argument("--guidance", type=_guidance, default=5.0,
                   help="CFG scale for a diffusers pair, >= 1 (1: no guidance; default 5)")
    p.add_argument("--allow-download", action="store_true", help="let from_pretrained reach the hub")
    p.add_argument("--num-prompts", type=int, default=8, help="prompts (embedded pair; default 8)")
    p.add_argument("--seeds", type=int, default=2, help="noise seeds per prompt (default 2)")
    p.add_argument("--store", help="profile directory (default $ADAPTIVE_PROFILES or ./profiles)")


def _common(p: argparse.ArgumentParser, schedule: bool = True, out: str = "outputs") -> None:
    from adaptive.toy.pair import DEFAULT_PAIR, PAIRS

    p.add_argument("--pair", choices=list(PAIRS), default=None,
                   help=f"the embedded pair (default {DEFAULT_PAIR}): " + "; ".join(
                       f"{name}: {spec.summary}" for name, spec in PAIRS.items()))
    p.add_argument("--steps", type=int, default=30, help="number of sampling steps (default 30)")
    p.add_argument("--shift", type=float, default=3.0, help="sigma shift of the grid (default 3.0)")
    p.add_argument("--sampler", choices=["euler", "unipc", "dpm++", "heun"], default="euler",
                   help="the solver, as the pipeline runs it: euler (FlowMatchEuler), unipc (Wan's default), dpm++ "
                        "(DPM-Solver++ on flow sigmas); profiles are calibrated and found per sampler; heun: sample "
                        "only, with Euler's profile (default euler)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the models run: cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")
    p.add_argument("--dtype", type=_dtype, default=torch.float32, help="float32, bf16 or fp16")
    p.add_argument("--small-device", help="run Small on another device, e.g. cuda:1 (default: with Large)")
    p.add_argument("--offload-small", action="store_true",
                   help="keep Small in CPU memory, moved to the device for each of its calls")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (first calls are slow)")
    if schedule:  # calibrate finds the schedule: it takes none
        p.add_argument("--schedule", type=parse_schedule, default=None,
                       help="large | lsl:SIGMA_IN,SIGMA_OUT | sl:SWITCH | ls:BOUNDARY | schedule.json | auto (the "
                            "stored profile's per-prompt windows) | online (its online controller) (default: the "
                            "stored profile's recommended plan, else lsl:0.85,0.3)")
    p.add_argument("--prompt", action="append", help="a prompt like 'a 7 moving up-left' (repeatable)")
    p.add_argument("--out", default=out, help=f"output folder (default {out}/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowblend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample the embedded pair Large-only vs blended and print the speed-up")
    _common(demo)
    demo.add_argument("--num", type=int, default=8, help="videos per batch (default 8)")
    demo.add_argument("--repeats", type=int, default=2, help="timing repeats (default 2)")
    demo.add_argument("--store", help="profile directory (default $ADAPTIVE_PROFILES or ./profiles)")
    demo.set_defaults(func=cmd_demo)
    samp = sub.add_parser("sample", help="sample videos from the embedded pair")
    _common(samp)
    samp.add_argument("--num", type=int, default=8, help="videos (default 8)")
    samp.add_argument("--seed", type=int, default=0, help="noise seed of the first video; the others follow (default 0)")
    samp.add_argument("--store", help="profile directory (default $ADAPTIVE_PROFILES or ./profiles)")
    samp.set_defaults(func=cmd_sample)
    bench = sub.add_parser("bench", help="the comparison table on the embedded pair, measured side by side")
    _common(bench, out="outputs/bench")
    bench.add_argument("--quick", action="store_true", help="CI smoke run: 4 videos, <= 10 steps, one round")
    bench.add_argument("--num", type=int, default=0, help="videos (default 32, quick 4)")
    bench.add_argument("--repeats", type=int, default=2, help="interleaved timing rounds (default 2)")
    bench.add_argument("--oracle", help="JSON with sigma_in/sigma_out of the exhaustive-sweep oracle "
                       "(oracle.json from flowblend oracle or scripts/oracle.py)")
    bench.add_argument("--cache-threshold", type=float, default=0.1, help="First Block Cache threshold")
    bench.add_argument("--store", help="profile directory (default $ADAPTIVE_PROFILES or ./profiles)")
    bench.set_defaults(func=cmd_bench)
    cal = sub.add_parser("calibrate", help="find the Small window for a pair and store its profile")
    _common(cal, schedule=False)
    _pair_options(cal)
    cal.add_argument("--trials", type=int, default=24, help="Optuna trials (default 24)")
    cal.add_argument("--budget", type=_budget, default=3.0,
                     help="what calibration may spend, in Large passes per calibration sample (one pass: Large "
                          "with every step), probe included (default 3; 'none': no limit); the output says what "
                          "the budget left unexplored")
    cal.add_argument("--target", type=float, default=0.95, help="least similarity to Large-only (default 0.95)")
    cal.add_argument("--storage", help="Optuna storage URL shared by workers (default: SQLite in the store)")
    cal.add_argument("--study", help="study name, to join other workers (default: derived from the inputs)")
    cal.add_argument("--per-prompt", action="store_true",
                     help="also store a window per prompt and fit the online controller (--schedule online)")
    cal.add_argument("--force", action="store_true",
                     help="replace a stored profile even if this calibration is weaker (fewer trials, costlier plan)")
    cal.add_argument("--search-steps", action=argparse.BooleanOptionalAction, default=True,
                     help="also search fewer steps: Large alone with fewer steps and blends on coarser grids "
                          "are candidates (default on; --no-search-steps keeps the grid of --steps)")
    cal.add_argument("--guidance-interval", action=argparse.BooleanOptionalAction, default=True,
                     help="for a guided pair, also search where guidance pays (one call per step outside it; "
                          "default on; --no-guidance-interval guides every step)")
    cal.set_defaults(func=cmd_calibrate)
    front = sub.add_parser("frontier", help="every one-window blend against Large with fewer steps: table, plot, JSON")
    _common(front, schedule=False, out="outputs/frontier")
    _pair_options(front)
    front.add_argument("--blend-steps", help="grids whose every window is measured, e.g. 30,15 (default: --steps)")
    front.add_argument("--no-store", dest="store_result", action="store_false",
                       help="don't keep the frontier in the profile store (calibrate reads it from there)")
    front.set_defaults(func=cmd_frontier)
    orc = sub.add_parser("oracle", help="the change-point proposal and the Optuna refinement against the "
                         "exhaustive sweep of every window: JSON")
    _common(orc, schedule=False, out="outputs/oracle")
    _pair_options(orc)
    orc.add_argument("--trials", type=int, default=24, help="Optuna trials of the refinement (default 24)")
    orc.add_argument("--budget", type=_budget, default=3.0,
                     help="the refinement's budget in Large passes per sample, probe included, as calibrate's "
                          "(default 3; 'none': no limit)")
    orc.add_argument("--target", type=float, default=0.95, help="least similarity to Large-only (default 0.95)")
    orc.set_defaults(func=cmd_oracle)
    for sub_parser in sub.choices.values():
        sub_parser.set_defaults(subparser=sub_parser)
    return parser


def _budget(text: str) -> float | None:
    """``--budget``: a number of Large passes per sample above 1, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of Large passes per sample (e.g. 3) or 'none', "
                                         f"got {text!r}") from None
    if value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number of Large passes per sample; 'none' searches "
                                         "without a limit")
    if not value > 1.0:
        raise argparse.ArgumentTypeError(f"must exceed 1 (the probe alone runs Large once), got {text!r}")
    return value


def _device_problem(name: str) -> str | None:
    """Why ``name`` cannot run the models here (None when it can)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return f"{name!r} is not a torch device; use cpu, cuda, cuda:1 or mps"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"{name!r}: CUDA is not available on this machine (torch.cuda.is_available() is False); use cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"{name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            return f"{name!r}: no {device.type} device is available on this machine; use cpu"
    return None


def _writable_problem(folder: str) -> str | None:
    """Why output cannot be written to ``folder`` (None when it can): checked before any work."""
    import os
    import tempfile

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"cannot write to {folder!r} ({err.strerror}); choose another folder"
    return None


def _embeddings_problem(path: str) -> str | None:
    """Why ``path`` is not a prompt-embeddings file (None when it is): checked before loading models."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return f"{path!r} does not exist"
    try:
        with safe_open(path, framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as err:  # safetensors raises its own error types for a file that is not one
        return f"{path!r} is not a safetensors file ({type(err).__name__}: {err})"
    if "prompt_embeds" not in keys:
        return f"{path!r} has no 'prompt_embeds' tensor (found {sorted(keys)})"
    return None


def _validate_user_pair(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--large/--small folders and what a diffusers pair needs beside them, checked before any model loads;
    the embedded pair's name filled in otherwise."""
    from adaptive.toy.pair import DEFAULT_PAIR

    large, small = getattr(args, "large", None), getattr(args, "small", None)
    if not (large or small):
        if "pair" in args and args.pair is None:
            args.pair = DEFAULT_PAIR
        return
    if getattr(args, "pair", None) is not None:
        parser.error(f"--pair {args.pair} names an embedded pair and --large/--small a diffusers pair: "
                     "give one of them")
    if not (large and small):
        parser.error("give both --large and --small (folders saved with save_pretrained)")
    for flag, folder in (("large", large), ("small", small)):
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"--{flag} {folder!r} is not a folder saved with save_pretrained (no config.json there); "
                         "give the local folder of the transformer")
        if not any(Path(folder).glob("*.safetensors")):
            parser.error(f"--{flag} {folder!r} has a config.json but no weights (*.safetensors); save the model with "
                         "save_pretrained(folder) (safetensors is the default), or give the folder that holds them")
    missing = [flag for flag in ("embeddings", "shape") if not getattr(args, flag, None)]
    if missing:
        parser.error("a diffusers pair needs " + " and ".join(f"--{m}" for m in missing) + " (--embeddings FILE."
                     "safetensors with 'prompt_embeds', one row per prompt, optional 'negative_prompt_embeds'; "
                     "--shape C,F,H,W: the latent of one sample)")


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible arguments with one argparse-style line, before any model is loaded."""
    import math

    least = {"steps": 2 if args.command in ("calibrate", "oracle") else 1, "num": 0 if args.command == "bench" else 1,
             "repeats": 1, "seeds": 1, "num_prompts": 1, "trials": 0}
    for name, low in least.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    shift = getattr(args, "shift", None)
    if shift is not None and not (math.isfinite(shift) and shift > 0):
        parser.error(f"--shift must be a positive finite number (1.0: no shift; Wan uses 3 to 8), got {shift}")
    target = getattr(args, "target", None)
    if target is not None and not 0.0 < target <= 1.0:
        parser.error(f"--target is a similarity to Large-only in (0, 1], got {target}")
    for flag in ("device", "small_device"):
        device = getattr(args, flag, None)
        problem = _device_problem(device) if device else None
        if problem:
            parser.error(f"--{flag.replace('_', '-')} {problem}")
    if getattr(args, "prompt", None) and not getattr(args, "large", None):
        from adaptive.toy.data import parse_prompt

        for prompt in args.prompt:
            try:
                parse_prompt(prompt)
            except ValueError as err:
                parser.error(f"--prompt: {err}")
    if args.command == "frontier" and args.blend_steps:
        try:
            counts = [int(v) for v in args.blend_steps.split(",")]
        except ValueError:
            counts = []
        if not counts or any(not 1 <= n <= args.steps for n in counts):
            parser.error(f"--blend-steps must be step counts in 1..{args.steps} (--steps) separated by commas, "
                         f"got {args.blend_steps!r}")
    if args.command in ("demo", "sample", "bench", "frontier"):  # they read the profile store
        from adaptive.errors import ProfileError
        from adaptive.profile_store import ProfileStore
        try:
            ProfileStore(getattr(args, "store", None))
        except ProfileError as err:
            parser.error(str(err))
    if getattr(args, "out", None):
        problem = _writable_problem(args.out)
        if problem:
            parser.error(f"--out {problem}")
    if getattr(args, "shape", None):
        parts = args.shape.split(",")
        if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            parser.error(f"--shape is the latent of one sample as four positive integers C,F,H,W (e.g. 16,21,60,104 "
                         f"for Wan at 81x480x832), got {args.shape!r}")
    _validate_user_pair(parser, args)
    if getattr(args, "embeddings", None):
        problem = _embeddings_problem(args.embeddings)
        if problem:
            parser.error(f"--embeddings {problem}")
    if getattr(args, "oracle", None) and not Path(args.oracle).is_file():
        parser.error(f"--oracle {args.oracle!r} does not exist; make it with `flowblend oracle` (its oracle.json)")
    if args.command == "frontier" and args.store_result:  # it writes the frontier beside the profiles at the end
        from adaptive.errors import StorageError
        from adaptive.profile_store import ProfileStore
        try:
            ProfileStore(args.store).check_writable()
        except StorageError as err:
            parser.error(f"{err}; or pass --no-store to keep the frontier only in --out")
    if args.command == "calibrate":
        from adaptive.errors import StorageError
        from adaptive.profile_store import ProfileStore
        from adaptive.storage import open_storage

        try:
            ProfileStore(args.store).check_writable()
            if args.storage:
                open_storage(args.storage)
        except (StorageError, ValueError) as err:  # ProfileError is a ValueError
            parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    """Run one command; a library error (a corrupt profile, no stored controller, a pair mismatch...)
    is one line naming the problem, not a traceback; Ctrl-C says what was kept."""
    from adaptive.errors import AdaptiveError

    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(args.subparser, args)  # errors print the command's usage, not the top level's
    command: argparse.ArgumentParser = args.subparser
    try:
        return int(args.func(args) or 0)
    except AdaptiveError as err:
        command.exit(2, f"flowblend {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        kept = (" Optuna keeps every finished trial in the study: run the same command to resume."
                if args.command == "calibrate" else "")
        command.exit(130, f"flowblend {args.command}: interrupted.{kept}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
