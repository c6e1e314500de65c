"""The checks every ``flowblend`` command makes before any model loads: each impossible argument
refused with one argparse-style line naming the fix (a command's own checks live in its module)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def device_problem(name: str) -> str | None:
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


def writable_problem(folder: str) -> str | None:
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


def embeddings_problem(path: str) -> str | None:
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


def transformer_folder_problem(folder: str) -> str | None:
    """Why ``folder`` is not a transformer saved with ``save_pretrained`` (None when it is)."""
    if not (Path(folder) / "config.json").is_file():
        return (f"{folder!r} is not a folder saved with save_pretrained (no config.json there); give the local "
                "folder of the transformer")
    if not any(Path(folder).glob("*.safetensors")):
        return (f"{folder!r} has a config.json but no weights (*.safetensors); save the model with "
                "save_pretrained(folder) (safetensors is the default), or give the folder that holds them")
    return None


def validate_user_pair(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--large/--small folders and what a diffusers pair needs beside them, checked before any model loads;
    the embedded pair's name filled in otherwise; a --pipeline folder checked and its sampler resolved."""
    from adaptive.toy.pair import DEFAULT_PAIR

    if getattr(args, "pipeline", None):
        validate_pipeline(parser, args)
        return
    if getattr(args, "guidance_2", None) is not None:
        parser.error("--guidance-2 is the low-noise expert's scale of a Wan 2.2 --pipeline")
    args.sampler = args.sampler or "euler"
    args.shift = 3.0 if args.shift is None else args.shift
    large, small = getattr(args, "large", None), getattr(args, "small", None)
    if args.command == "sample" and small:
        parser.error("sample --small blends a --pipeline folder's models; the embedded pair needs neither")
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
        problem = transformer_folder_problem(folder)
        if problem:
            parser.error(f"--{flag} {problem}")
    missing = [flag for flag in ("embeddings", "shape") if not getattr(args, flag, None)]
    if missing:
        parser.error("a diffusers pair needs " + " and ".join(f"--{m}" for m in missing) + " (--embeddings FILE."
                     "safetensors with 'prompt_embeds', one row per prompt, optional 'negative_prompt_embeds'; "
                     "--shape C,F,H,W: the latent of one sample)")


def validate_pipeline(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a ``--pipeline`` run that cannot work, before any model loads; resolve the sampler and shift
    to the pipeline scheduler's (an explicit ``--sampler``/``--shift`` must agree with it)."""
    from adaptive.cli.pipelines import NO_TEXT, folder_sampler, has_two_experts, model_index

    folder = args.pipeline
    if getattr(args, "large", None) or getattr(args, "pair", None):
        parser.error("--pipeline brings Large (its transformer, or Wan 2.2's two experts): leave out --large and --pair")
    if not (Path(folder) / "model_index.json").is_file():
        parser.error(f"--pipeline {folder!r} is not a pipeline folder saved with save_pretrained (no model_index.json); "
                     "give the folder of the whole pipeline, or a transformer folder with --large")
    index = model_index(folder)
    if not (isinstance(index.get("transformer"), list) and index["transformer"][0] is not None):
        parser.error(f"--pipeline {folder!r} has no transformer (model_index.json); save the pipeline with its "
                     "transformer")
    if not args.small:
        parser.error("--pipeline needs --small (a transformer folder saved with save_pretrained)")
    problem = transformer_folder_problem(args.small)
    if problem:
        parser.error(f"--small {problem}")
    if not args.embeddings:
        text = [name for name in NO_TEXT if not (isinstance(index.get(name), list) and index[name][0] is not None)]
        if text:
            parser.error(f"--pipeline {folder!r} has no {' or '.join(text)} to encode --prompt: give --embeddings "
                         "(safetensors with 'prompt_embeds')")
        if not args.prompt:
            parser.error("--pipeline needs the prompts: --prompt TEXT (repeatable), or --embeddings FILE")
    if min(args.height, args.width, args.frames) < 1:
        parser.error("--height, --width and --frames must be positive")
    try:
        solver = folder_sampler(folder)
    except ValueError as err:
        parser.error(f"--pipeline {folder!r}: its scheduler: {err}")
    if args.sampler not in (None, solver.name):
        parser.error(f"--sampler {args.sampler}: the pipeline runs {solver.name} (its scheduler), and calibration "
                     "judges on what the pipeline runs; leave --sampler out, or save the pipeline with that scheduler")
    if args.shift is not None and args.shift != solver.shift:
        parser.error(f"--shift {args.shift:g}: the pipeline's scheduler shifts by {solver.shift:g}; leave --shift out")
    args.solver, args.sampler, args.shift = solver, solver.name, solver.shift
    if args.guidance_2 is not None and not has_two_experts(folder):
        parser.error(f"--guidance-2 is the low-noise expert's scale of a Wan 2.2 pipeline; {folder!r} has one "
                     "transformer: leave it out")
    if has_two_experts(folder) and args.command in ("frontier", "oracle"):
        parser.error(f"{args.command} measures two-model pairs; for a Wan 2.2 pipeline `flowblend calibrate "
                     "--pipeline` searches its pool, and the decision it prints gives the experts with fewer steps "
                     "at the same compute beside the plan")


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
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
        problem = device_problem(device) if device else None
        if problem:
            parser.error(f"--{flag.replace('_', '-')} {problem}")
    if getattr(args, "prompt", None) and not (getattr(args, "large", None) or getattr(args, "pipeline", None)):
        from adaptive.toy.data import parse_prompt

        for prompt in args.prompt:
            try:
                parse_prompt(prompt)
            except ValueError as err:
                parser.error(f"--prompt: {err}")
    if args.command != "calibrate":  # they read the profile store (calibrate checks it can write there)
        from adaptive.errors import ProfileError
        from adaptive.profile_store import ProfileStore

        try:
            ProfileStore(getattr(args, "store", None))
        except ProfileError as err:
            parser.error(str(err))
    if getattr(args, "out", None):
        problem = writable_problem(args.out)
        if problem:
            parser.error(f"--out {problem}")
    if getattr(args, "shape", None):
        parts = args.shape.split(",")
        if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            parser.error(f"--shape is the latent of one sample as four positive integers C,F,H,W (e.g. 16,21,60,104 "
                         f"for Wan at 81x480x832), got {args.shape!r}")
    validate_user_pair(parser, args)
    if getattr(args, "embeddings", None):
        problem = embeddings_problem(args.embeddings)
        if problem:
            parser.error(f"--embeddings {problem}")
