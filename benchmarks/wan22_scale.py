"""Real-scale speed of plans over a pool: Wan 2.2 A14B's two experts with Wan 2.1 1.3B between them,
and guidance only in an interval, through an unmodified ``diffusers.WanPipeline``, one GPU.

    python benchmarks/wan22_scale.py --out docs/wan_scale/wan22.json           # GPU, bf16, about 5 minutes
    python benchmarks/wan22_scale.py --tiny --device cpu --out /tmp/wan22.json  # CPU rehearsal (tests/test_benchmarks.py)

Random weights in the published architectures (as ``benchmarks/wan_scale.py``, whose builders it uses):
both experts are ``WanTransformer3DModel`` with the Wan 2.2 T2V A14B expert configuration (the Wan
team's ``t2v_A14B``: dim 5120, ffn 13824, 40 heads, 40 layers, the Wan 2.1 14B shape) and the Small is
Wan 2.1 T2V 1.3B (it shares Wan 2.2 A14B's VAE and text encoder). The pipeline runs Wan 2.2 A14B's T2V
inference settings: UniPC on flow sigmas with shift 12, 40 steps, boundary_ratio 0.875, guidance 4.0
(high) / 3.0 (low), at 480x832 and 17 frames (latent 16x5x60x104). It times, interleaved-free and
synchronised, one run each (plans fixed, not calibrated: the weights are random):

- ``experts``: the pipeline as diffusers runs it (no blend);
- ``experts_blended``: ``blend(pipe, None, None)`` (the same calls through the drop-in: its overhead);
- ``high_small_low``: Small on the first half of the low expert's steps (``experts_plan``);
- ``guidance_interval``: the experts with guidance skipped on the last quarter of the steps;
- ``both``: the two together.

Each row records the calls each model made (the drop-in's trace, the unconditional calls it skipped),
the speed-up over ``experts`` and the FLOP bound from the plan's calls and the measured FLOPs per call.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling wan_scale

from adaptive import Schedule  # noqa: E402
from adaptive.blend import blend, experts_plan, scheduler_grid, unblend  # noqa: E402
from adaptive.metering import count_flops  # noqa: E402
from adaptive.schedule import base_of, call_cost, is_unguided  # noqa: E402
from adaptive.denoisers import TransformerDenoiser  # noqa: E402
from wan_scale import TINY_LARGE, TINY_SMALL, UNIPC_WAN, WAN_1_3B, WAN_14B, Clock, Report, build, timed  # noqa: E402

BOUNDARY = 0.875  # Wan 2.2 T2V A14B
SHIFT = 12.0
GUIDANCE_HIGH, GUIDANCE_LOW = 4.0, 3.0


def plans(grid: list[float]) -> dict[str, Schedule | None]:
    """The fixed plans timed, on the pipeline's sigma ``grid`` (``num_steps + 1`` values)."""
    steps = len(grid) - 1
    experts = experts_plan(None, BOUNDARY)
    low = [i for i, name in enumerate(experts.step_models(grid)) if name == "low"]
    half = low[: max(1, len(low) // 2)]
    # Small on the first half of the low expert's steps (boundaries halfway between grid points)
    small = experts.relabel((grid[half[0] - 1] + grid[half[0]]) / 2, (grid[half[-1]] + grid[half[-1] + 1]) / 2,
                            inside={"high": "small", "low": "small"})
    last_quarter = grid[steps - steps // 4]  # the first sigma of the last quarter of the steps
    cut = (last_quarter + grid[steps - steps // 4 - 1]) / 2
    return {"experts": None, "experts_blended": experts, "high_small_low": small,
            "guidance_interval": experts.guided_within(1.0, cut), "both": small.guided_within(1.0, cut)}


def bound(schedule: Schedule | None, grid: list[float], small_ratio: float) -> float:
    """The speed-up FLOPs allow: guided expert calls against the plan's (Small at ``small_ratio`` of an
    expert's call, a step without guidance one call instead of two)."""
    if schedule is None:
        return 1.0
    names = schedule.step_models(grid)
    return len(names) / sum(call_cost(n, small_ratio) for n in names)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="wan22.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy configs and latent (CPU rehearsal)")
    parser.add_argument("--steps", type=int, default=40, help="pipeline steps (default 40, Wan 2.2 A14B's)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later runs are skipped past it")
    args = parser.parse_args(argv)
    from diffusers import UniPCMultistepScheduler, WanPipeline

    dtype = torch.float32 if args.tiny else torch.bfloat16
    expert_config, small_config = (TINY_LARGE, TINY_SMALL) if args.tiny else (WAN_14B, WAN_1_3B)
    height, width, frames = (16, 16, 5) if args.tiny else (480, 832, 17)
    clock = Clock(args.budget)
    high, low = build(expert_config, args.device, dtype, 0), build(expert_config, args.device, dtype, 2)
    small = build(small_config, args.device, dtype, 1)
    text_dim = expert_config["text_dim"]
    generator = torch.Generator("cpu").manual_seed(0)
    cond = torch.randn(1, 512 if not args.tiny else 8, text_dim, generator=generator).to(args.device, dtype)
    uncond = torch.randn(1, 512 if not args.tiny else 8, text_dim, generator=generator).to(args.device, dtype)
    latent = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, generator=generator).to(args.device)
    flops = {name: count_flops(TransformerDenoiser(m), latent, 0.7, encoder_hidden_states=cond)
             for name, m in (("expert", high), ("small", small))}
    ratio = flops["small"] / flops["expert"]
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=high, transformer_2=low,
                       scheduler=UniPCMultistepScheduler(**{**UNIPC_WAN, "flow_shift": SHIFT}),
                       boundary_ratio=BOUNDARY)
    pipe.set_progress_bar_config(disable=True)
    steps = scheduler_grid(pipe.scheduler, args.steps)
    assert steps is not None
    grid = list(steps.sigmas)
    report = Report(Path(args.out), {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else
                                     args.device, "torch": torch.__version__, "tiny": args.tiny,
                                     "steps": args.steps, "shift": SHIFT, "boundary_ratio": BOUNDARY,
                                     "latent": list(latent.shape), "flops_per_call": flops,
                                     "small_ratio": round(ratio, 4), "grid": [round(s, 5) for s in grid]})

    def run() -> torch.Tensor:
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=height, width=width,
                    num_frames=frames, num_inference_steps=args.steps, guidance_scale=GUIDANCE_HIGH,
                    guidance_scale_2=GUIDANCE_LOW, latents=latent.clone().to(dtype), output_type="latent").frames

    run()  # warm-up: kernels, allocator, the scheduler path (both experts)
    with torch.no_grad():  # and the Small's kernels, before its first timed run
        TransformerDenoiser(small)(latent.to(dtype), 0.5, encoder_hidden_states=cond)
    rows: dict[str, dict[str, Any]] = {}
    base = None
    for name, schedule in plans(grid).items():
        if base is not None and not clock.fits(1.2 * base):
            rows[name] = {"skipped": f"budget ({clock.elapsed():.0f} of {args.budget:.0f} s used)"}
            report.put("runs", rows)
            continue
        if name == "experts":
            unblend(pipe)
        else:
            blend(pipe, small if schedule is not None and "small" in {base_of(m) for m in schedule.models} else None,
                  schedule, num_inference_steps=args.steps)
        out, seconds, record = timed(run, args.device)
        base = seconds if name == "experts" else base
        row = dict(record, finite=bool(torch.isfinite(out).all()), flop_bound=round(bound(schedule, grid, ratio), 3))
        if name != "experts":
            blended = pipe.transformer
            row["plan"] = "".join(m[0].upper() if not is_unguided(m) else m[0]
                                  for m in (schedule or experts_plan(None, BOUNDARY)).step_models(grid))
            # calls routed to each model (cond and uncond); the uncond ones answered without a call: skipped
            row["routed_calls"] = dict(Counter(base_of(m) for _, m in blended.trace[-2 * args.steps:]))
            row["uncond_skipped"] = blended.skipped
        row["speedup"] = round(base / seconds, 3) if base else None
        rows[name] = row
        report.put("runs", rows)
        print(f"  {name}: {seconds:.2f} s", flush=True)
    unblend(pipe)
    return report.data


if __name__ == "__main__":
    main()
