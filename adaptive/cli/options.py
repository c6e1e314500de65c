"""What every ``flowblend`` command shares: the argument types, the option groups, and what the
arguments resolve to (the pair and its prompts, the sampler, its grid, the stored profile)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from adaptive.schedule import Schedule

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


def guidance_arg(text: str) -> float:
    """``--guidance``: a finite scale >= 1 (1: no guidance), as ``ModelPair.guided`` takes it."""
    from adaptive.denoisers import check_guidance_scale
    from adaptive.errors import PairMismatchError

    try:
        return check_guidance_scale(float(text))
    except (ValueError, PairMismatchError) as err:
        raise argparse.ArgumentTypeError(str(err) if isinstance(err, PairMismatchError)
                                         else f"expected a number, got {text!r}") from None


def dtype_arg(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise argparse.ArgumentTypeError(f"dtype must be one of {sorted(table)}")
    return table[name]


def budget_arg(text: str) -> float | None:
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


def given_prompts(args: argparse.Namespace, n: int) -> list[str]:
    from adaptive.toy.data import calibration_prompts

    if args.prompt:
        return [args.prompt[i % len(args.prompt)] for i in range(n)]
    return calibration_prompts(n)


def configure(pair, args: argparse.Namespace):
    """Apply --small-device / --offload-small / --compile to a loaded pair."""
    if args.small_device or args.offload_small:
        pair = pair.placed("small", args.small_device or args.device, offload=args.offload_small)
    return pair.compile() if args.compile else pair


def solver_of(args: argparse.Namespace) -> Any:
    """The :class:`~adaptive.samplers.Sampler` of ``--sampler`` at ``--shift`` (Heun: sample only), or the
    scheduler of ``--pipeline``."""
    from adaptive.samplers import Sampler

    if getattr(args, "solver", None) is not None:
        return args.solver
    if args.sampler == "heun":
        raise SystemExit(f"--sampler heun: {args.command} runs one model call per step (euler, unipc or dpm++); "
                         "`flowblend sample --sampler heun` runs Euler's profile with Heun's steps")
    return Sampler.of(args.sampler, args.shift)


def grid_of(args: argparse.Namespace, steps: int) -> list[float]:
    """The sigma grid ``--sampler`` runs for ``steps`` at ``--shift`` (Heun: Euler's)."""
    from adaptive.sampling import sigmas

    return sigmas(steps, args.shift).tolist() if args.sampler == "heun" else solver_of(args).grid(steps)


def stored_profile(pair, args: argparse.Namespace, steps: int):
    """The stored profile for ``pair`` on ``--sampler`` over ``steps`` (:func:`adaptive.auto.lookup`:
    Euler's, said in one line, when the sampler has none of its own)."""
    from adaptive.auto import lookup
    from adaptive.profile_store import ProfileStore

    solver = "heun" if args.sampler == "heun" else solver_of(args)
    return lookup(pair, steps, args.shift, solver, ProfileStore(getattr(args, "store", None)))


def load_user_pair(args: argparse.Namespace):
    from diffusers import AutoModel
    from safetensors.torch import load_file

    from adaptive.pair import ModelPair

    models = [AutoModel.from_pretrained(p, torch_dtype=args.dtype, local_files_only=not args.allow_download,
                                        use_safetensors=True).to(args.device).eval().requires_grad_(False)
              for p in (args.large, args.small)]  # validate_user_pair checked the folders, embeddings and shape
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


def pair_and_conds(args: argparse.Namespace):
    """The pair (a Wan 2.1 --pipeline and --small, a diffusers folder pair with --large/--small, else the
    embedded one) and its prompts."""
    if args.pipeline:
        from adaptive.cli.pipelines import load_pipeline

        run = load_pipeline(args)
        return configure(run.pair(args.guidance), args), run.conds()
    if args.large or args.small:  # both, with --embeddings and --shape (validate_user_pair)
        pair, conds = load_user_pair(args)
        return configure(pair, args), conds
    from adaptive.toy import load_pair, prompt_conds

    pair = configure(load_pair(args.pair, device=args.device, dtype=args.dtype)[0], args)
    return pair, prompt_conds(given_prompts(args, args.num_prompts), device=args.device)


def replay_command(args: argparse.Namespace, options: str) -> str:
    """The command line that remakes a measurement (kept in its JSON): the command, the grid, the
    seeds, ``options`` and the pair (its folders, or the embedded pair's prompt count)."""
    pair = f"--pipeline {args.pipeline} --small {args.small}" if args.pipeline else \
        f"--large {args.large} --small {args.small}" if args.large else \
        f"--pair {args.pair} --num-prompts {args.num_prompts}"
    sampler = f" --sampler {args.sampler}" if getattr(args, "sampler", "euler") != "euler" else ""
    return (f"flowblend {args.command} --steps {args.steps} --shift {args.shift}{sampler} --seeds {args.seeds} "
            f"{options} {pair}")


def add_pair_options(p: argparse.ArgumentParser) -> None:
    """The pair a measuring command runs: diffusers folders (--large/--small...), else the embedded one."""
    p.add_argument("--large", help="Large transformer folder (save_pretrained); default: the embedded pair")
    p.add_argument("--small", help="Small transformer folder (save_pretrained)")
    p.add_argument("--embeddings", help="safetensors with 'prompt_embeds' (and 'negative_prompt_embeds')")
    p.add_argument("--shape", help="latent shape per sample for a diffusers pair, e.g. 16,21,60,104")
    p.add_argument("--guidance", type=guidance_arg, default=5.0,
                   help="CFG scale for a diffusers pair, >= 1 (1: no guidance; default 5)")
    p.add_argument("--allow-download", action="store_true", help="let from_pretrained reach the hub")
    p.add_argument("--num-prompts", type=int, default=8, help="prompts (embedded pair; default 8)")
    p.add_argument("--seeds", type=int, default=2, help="noise seeds per prompt (default 2)")
    add_pipeline_options(p)


def add_pipeline_options(p: argparse.ArgumentParser, models: bool = False) -> None:
    """``--pipeline`` and what only a pipeline folder takes (its video size, the second expert's scale);
    with ``models`` also ``--small``, ``--embeddings``, ``--guidance`` (the commands without a pair's options)."""
    if models:
        p.add_argument("--small", help="--pipeline: the Small transformer folder (save_pretrained)")
        p.add_argument("--embeddings", help="--pipeline: safetensors with 'prompt_embeds' (and "
                                            "'negative_prompt_embeds') instead of --prompt")
        p.add_argument("--guidance", type=guidance_arg, default=5.0, help="--pipeline: CFG scale, >= 1 (default 5)")
        p.add_argument("--allow-download", action="store_true", help="let from_pretrained reach the hub")
    p.add_argument("--pipeline", help="a Wan 2.1 or Wan 2.2 (transformer_2) pipeline folder saved with save_pretrained; "
                                      "with --small; its scheduler is the sampler, its transformer(s) Large")
    p.add_argument("--guidance-2", type=float, default=None,
                   help="Wan 2.2: CFG scale of the low-noise expert (and Small) (default --guidance, as diffusers)")
    p.add_argument("--negative-prompt", default="", help="--pipeline: the negative prompt (default empty)")
    p.add_argument("--height", type=int, default=480, help="--pipeline: video height in pixels (default 480)")
    p.add_argument("--width", type=int, default=832, help="--pipeline: video width in pixels (default 832)")
    p.add_argument("--frames", type=int, default=81, help="--pipeline: frames per video (default 81)")


def add_common(p: argparse.ArgumentParser, schedule: bool = True, out: str = "outputs") -> None:
    """The options of every command: the pair, the grid and sampler, where the models run, prompts, output."""
    from adaptive.toy.pair import DEFAULT_PAIR, PAIRS

    p.add_argument("--pair", choices=list(PAIRS), default=None,
                   help=f"the embedded pair (default {DEFAULT_PAIR}): " + "; ".join(
                       f"{name}: {spec.summary}" for name, spec in PAIRS.items()))
    p.add_argument("--steps", type=int, default=30, help="number of sampling steps (default 30)")
    p.add_argument("--shift", type=float, default=None,
                   help="sigma shift of the grid (default 3.0; a --pipeline's: its scheduler's)")
    p.add_argument("--sampler", choices=["euler", "unipc", "dpm++", "heun"], default=None,
                   help="the solver, as the pipeline runs it: euler (FlowMatchEuler), unipc (Wan's default), dpm++ "
                        "(DPM-Solver++ on flow sigmas); profiles are calibrated and found per sampler; heun: sample "
                        "only, with Euler's profile (default euler; a --pipeline's: its scheduler)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the models run: cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")
    p.add_argument("--dtype", type=dtype_arg, default=torch.float32, help="float32, bf16 or fp16")
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
    p.add_argument("--store", help="profile directory (default $ADAPTIVE_PROFILES or ./profiles)")

