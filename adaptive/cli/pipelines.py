"""Diffusers pipeline folders on the command line (``--pipeline FOLDER --small FOLDER``).

A Wan 2.1 pipeline (its ``transformer`` is Large) or a Wan 2.2 one (its two experts, ``transformer``
and ``transformer_2`` split at ``boundary_ratio``), saved with ``save_pretrained``; ``--small`` is a
transformer folder. Calibration judges on the pipeline's own scheduler (its sampler and shift); the
prompts are ``--prompt`` encoded by the pipeline's text encoder, or rows of ``--embeddings``. A Wan 2.1
pipeline calibrates as a pair (``blend(pipe, small, "auto")`` then finds its profile), a Wan 2.2 one
as a pool (:func:`adaptive.calibrate_pool`, found by ``blend(pipe, small, "auto", guidance_scale=...,
guidance_scale_2=...)`` likewise).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

NO_TEXT = ("tokenizer", "text_encoder")  # left out when --embeddings brings the prompts


def model_index(folder: str | Path) -> dict[str, Any]:
    """The pipeline's ``model_index.json`` (its components and config)."""
    return json.loads((Path(folder) / "model_index.json").read_text())


def has_two_experts(folder: str | Path) -> bool:
    """Whether the folder is a Wan 2.2 pipeline: a ``transformer_2`` and a ``boundary_ratio``."""
    index = model_index(folder)
    second = index.get("transformer_2")
    return isinstance(second, list) and second[0] is not None and index.get("boundary_ratio") is not None


def folder_sampler(folder: str | Path) -> Any:
    """The :class:`~adaptive.samplers.Sampler` of the pipeline's saved scheduler."""
    import diffusers

    from adaptive.samplers import Sampler

    _, class_name = model_index(folder)["scheduler"]
    scheduler = getattr(diffusers, class_name).from_pretrained(Path(folder), subfolder="scheduler")
    return Sampler.of(scheduler)


class PipelineRun(NamedTuple):
    """A loaded pipeline folder with its Small, the prompts' embeddings and one sample's latent shape."""

    pipe: Any
    small: Any
    prompt_embeds: torch.Tensor  # one row per prompt
    negative_embeds: torch.Tensor  # one row
    shape: tuple[int, ...]
    name: str

    @property
    def two_experts(self) -> bool:
        return getattr(self.pipe, "transformer_2", None) is not None and \
            self.pipe.config.get("boundary_ratio") is not None

    def conds(self) -> list[dict[str, torch.Tensor]]:
        return [{"encoder_hidden_states": self.prompt_embeds[i:i + 1]} for i in range(len(self.prompt_embeds))]

    def uncond(self) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": self.negative_embeds}

    def pair(self, guidance: float) -> Any:
        """Wan 2.1: the pair that ``blend(pipe, small, "auto", guidance_scale=guidance)`` looks up."""
        from adaptive.pair import ModelPair

        pair = ModelPair(self.pipe.transformer, self.small, sample_shape=self.shape, name=self.name)
        return pair.guided(guidance, self.uncond()) if guidance != 1.0 else pair


def load_pipeline(args: argparse.Namespace) -> PipelineRun:
    """Load ``--pipeline`` (without its text encoder when ``--embeddings`` brings the prompts), ``--small``
    and the prompts' embeddings; :func:`check_pipeline` has checked the folders."""
    from diffusers import AutoModel, DiffusionPipeline

    local = not args.allow_download
    index = model_index(args.pipeline)
    absent = {name: None for name, entry in index.items() if isinstance(entry, list) and entry[0] is None}
    if args.embeddings:
        absent.update({name: None for name in NO_TEXT})
    pipe = DiffusionPipeline.from_pretrained(args.pipeline, dtype=args.dtype, local_files_only=local, **absent)
    pipe.to(args.device)
    for name in ("transformer", "transformer_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).eval().requires_grad_(False)
    small = AutoModel.from_pretrained(args.small, dtype=args.dtype, local_files_only=local,
                                      use_safetensors=True).to(args.device).eval().requires_grad_(False)
    if args.embeddings:
        from safetensors.torch import load_file

        tensors = load_file(args.embeddings)
        prompts = tensors["prompt_embeds"]
        negative = tensors.get("negative_prompt_embeds", torch.zeros_like(prompts[:1]))[:1]
    else:
        with torch.no_grad():
            prompts, negative = pipe.encode_prompt(list(args.prompt), [args.negative_prompt] * len(args.prompt),
                                                   do_classifier_free_guidance=True, device=args.device)
        negative = negative[:1]
    return PipelineRun(pipe, small, prompts.to(args.device, args.dtype), negative.to(args.device, args.dtype),
                       latent_shape(pipe, args), Path(args.pipeline).name)


def latent_shape(pipe: Any, args: argparse.Namespace) -> tuple[int, ...]:
    """One sample's latent (C, F, H, W): ``--shape``, else the pipeline's for ``--frames`` x ``--height`` x
    ``--width`` (as ``WanPipeline.prepare_latents`` makes it)."""
    if getattr(args, "shape", None):
        return tuple(int(v) for v in args.shape.split(","))
    frames = (args.frames - 1) // pipe.vae_scale_factor_temporal + 1
    space = pipe.vae_scale_factor_spatial
    return (int(pipe.transformer.config.in_channels), frames, args.height // space, args.width // space)


def calibrate_two_experts(args: argparse.Namespace) -> int:
    """``flowblend calibrate --pipeline`` on Wan 2.2: the pool's plan searched and stored; its decision."""
    import optuna

    from adaptive.pool_profiles import calibrate_pool, pool_path
    from adaptive.profile_store import ProfileStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = load_pipeline(args)
    store = ProfileStore(args.store)
    print(f"calibrating the pool of {run.name} (high and low experts, boundary_ratio "
          f"{run.pipe.config['boundary_ratio']:g}) and Small on {len(run.prompt_embeds)} prompts x {args.seeds} seeds, "
          f"{args.steps} steps (plans judged on the pipeline's own {args.sampler} steps at shift {args.shift:g})")
    profile = calibrate_pool(run.pipe, run.conds(), small=run.small, guidance_scale=args.guidance,
                             guidance_scale_2=args.guidance_2, uncond=run.uncond(), num_steps=args.steps,
                             shape=run.shape, seeds=list(range(args.seeds)), target=args.target, n_trials=args.trials,
                             store=store, force=args.force, name=run.name, sampler=args.solver)
    rows = [("pipeline", f"{run.name} (Wan 2.2: two experts)"), ("sampler", profile.sampler),
            ("recommended plan", profile.decision),
            ("budget", "not applied: a pool's search runs its trials in full (--budget is for two-model pairs)"),
            ("profile", str(pool_path(store, profile.pool_key, profile.sampler, profile.reference))),
            ("use it", "blend(pipe, small, \"auto\", num_inference_steps=%d, guidance_scale=%g%s)" % (
                args.steps, args.guidance, "" if args.guidance_2 is None else f", guidance_scale_2={args.guidance_2:g}"))]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def sample_pipeline(args: argparse.Namespace) -> int:
    """``flowblend sample --pipeline``: the pipeline blended with its stored plan (``auto``) or ``--schedule``,
    one video per prompt and seed; latents (and GIFs when the pipeline has a VAE) written to ``--out``."""
    from diffusers.utils import export_to_gif
    from safetensors.torch import save_file

    from adaptive.blend import blend

    run = load_pipeline(args)
    plan = args.schedule if args.schedule is not None else "auto"
    extra = {"guidance_scale_2": args.guidance_2} if run.two_experts and args.guidance_2 is not None else {}
    blend(run.pipe, run.small, plan, num_inference_steps=args.steps, guidance_scale=args.guidance, store=args.store,
          **extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    decode = getattr(run.pipe, "vae", None) is not None  # the pipeline decodes; without a VAE, its latents
    latents, paths = {}, []
    for i in range(args.num):
        row, seed = i % len(run.prompt_embeds), args.seed + i
        generator = torch.Generator(device=args.device).manual_seed(seed)
        video = run.pipe(prompt_embeds=run.prompt_embeds[row:row + 1], negative_prompt_embeds=run.negative_embeds,
                         height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                         guidance_scale=args.guidance, generator=generator, output_type="pil" if decode else "latent",
                         **extra).frames[0]
        if decode:
            paths.append(Path(export_to_gif(video, str(out / f"sample_{i:03d}.gif"))))
        else:
            latents[f"sample_{i:03d}"] = video.float().cpu().contiguous()
        if i == 0:
            print(run.pipe.transformer.decisions.summary())
    if latents:
        save_file(latents, str(out / "latents.safetensors"))
        paths.append(out / "latents.safetensors")
    print(f"wrote {', '.join(map(str, paths))} ({args.num} videos, plan {plan}"
          + ("" if decode else "; the pipeline has no VAE: latents") + ")")
    return 0
