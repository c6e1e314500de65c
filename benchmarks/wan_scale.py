"""Real-scale speed: FlowBlending schedules on the Wan 2.1 T2V 14B / 1.3B architectures, one GPU.

    python benchmarks/wan_scale.py --out docs/wan_scale/h100.json            # GPU, bf16, about 5 minutes
    python benchmarks/wan_scale.py --tiny --device cpu --out /tmp/wan.json   # CPU rehearsal (tests/test_benchmarks.py)

The FLOPs and the wall time of a diffusion transformer depend on its architecture, not its weights,
so this builds diffusers' ``WanTransformer3DModel`` with the published Wan 2.1 T2V 14B and 1.3B
configurations (written out below), with random weights made directly on the device in bf16 (the
modules diffusers keeps in fp32 when loading, kept in fp32 here too), downloads nothing, and times:

1. ``calls``: one Large and one Small call at 480x832, 17 frames (latent 16x5x60x104), alone, as
   the Wan pipeline runs CFG (two calls of batch 1) and with CFG batched (one call of batch 2);
   FLOPs per call from torch's FlopCounterMode.
2. ``pipeline``: the real user's path: an unmodified ``diffusers.WanPipeline`` with its default
   Wan 2.1 scheduler (UniPC, flow sigmas, flow_shift 3), made to blend with ``adaptive.blend``,
   50 steps: Large alone; the paper's Wan example (20 Large + 20 Small + 10 Large); a
   calibrated-style window (``CALIBRATED_STYLE``) mapped onto this grid by sigma. Which model ran each call comes from
   the drop-in's trace. Also the switch's own overhead (blend with a Large-only schedule against
   the plain pipeline) at ``--short-steps``.
3. ``sample``: the library's sampler (``adaptive.sample``) at ``--short-steps`` with the same
   stage fractions: Large alone, the L-S-L blend, the online controller (its probes' cost), Small
   offloaded to CPU memory (``placed(..., offload=True)``), and, last because it compiles the models
   in place, ``torch.compile`` of the repeated blocks.
4. ``frames33``: per-call times at 33 frames (latent 16x9x60x104).

Every run's wall time is synchronised and the median of ``--repeats`` (runs of 50 steps: once);
peak GPU memory with both models resident. Sections run in that order while ``--budget`` seconds
allow (each is skipped, and says so, when its predicted time does not fit), and the JSON report is
rewritten after each, so a cut-off run still returns what it measured. Speed-ups are printed beside
the FLOP bound ``1 / (1 - w (1 - r))`` (w: Small's share of steps, r: Small's FLOPs per call over
Large's) and the same bound with r measured in time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from adaptive import ControllerConfig, ModelPair, Schedule, TransformerDenoiser, sample, sigmas  # noqa: E402
from adaptive.blend import blend, unblend  # noqa: E402
from adaptive.denoisers import GuidedDenoiser  # noqa: E402
from adaptive.metering import count_flops, interleaved  # noqa: E402

# Wan 2.1 T2V, as diffusers' Wan-AI/Wan2.1-T2V-{14B,1.3B}-Diffusers transformer configs (and the
# Wan team's wan/configs: dim 5120 / 1536, ffn 13824 / 8960, 40 / 12 heads, 40 / 30 layers).
WAN_COMMON = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
                  freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
                  added_kv_proj_dim=None, rope_max_seq_len=1024)
WAN_14B = dict(WAN_COMMON, num_attention_heads=40, ffn_dim=13824, num_layers=40)
WAN_1_3B = dict(WAN_COMMON, num_attention_heads=12, ffn_dim=8960, num_layers=30)
# The same classes at toy size, for the CPU rehearsal.
TINY_COMMON = dict(WAN_COMMON, attention_head_dim=8, text_dim=32, freq_dim=16, rope_max_seq_len=32)
TINY_LARGE = dict(TINY_COMMON, num_attention_heads=4, ffn_dim=64, num_layers=3)
TINY_SMALL = dict(TINY_COMMON, num_attention_heads=2, ffn_dim=32, num_layers=2)

# diffusers' Wan 2.1 T2V scheduler_config.json: UniPC on flow sigmas, flow_shift 3 (480p).
UNIPC_WAN = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000,
                 solver_order=2, predict_x0=True, solver_type="bh2", lower_order_final=True, final_sigmas_type="zero")
PAPER_SPLIT = (0.4, 0.4, 0.2)  # FlowBlending's Wan example: 20 Large + 20 Small + 10 Large of 50 steps
GUIDANCE = 5.0  # Wan 2.1 T2V's default guidance scale


def build(config: dict[str, Any], device: str, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """A ``WanTransformer3DModel`` with random weights made on ``device`` in ``dtype``; the modules
    diffusers keeps in fp32 on ``from_pretrained`` (time embedder, norms, modulation) stay fp32."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if keep & set(name.split(".")) and tensor.is_floating_point():
            tensor.data = tensor.data.float()
    return model.eval().requires_grad_(False)


class Clock:
    """The run's time budget: sections ask whether their predicted seconds still fit."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, seconds: float) -> bool:
        return self.elapsed() + seconds <= self.budget


def timed(fn: Callable[[], Any], device: str, repeats: int = 1) -> tuple[Any, float, dict[str, Any]]:
    """``fn()`` run ``repeats`` times, synchronised; an output, the median seconds and a record
    with every time and the peak GPU memory (GiB) of the runs."""
    measured = interleaved({"run": fn}, rounds=repeats, device=device)
    times, median = measured.seconds["run"], measured.median("run")
    record = {"seconds": round(median, 4), "all_seconds": [round(t, 4) for t in times],
              "peak_gib": round(measured.peak_gib["run"], 2) if device.startswith("cuda") else None}
    return measured.outputs["run"], median, record


def flop_bound(w: float, r: float) -> float:
    """The speed-up a blend can reach when only model FLOPs cost: ``1 / (1 - w (1 - r))``."""
    return 1.0 / (1.0 - w * (1.0 - r))


def paper_plan(steps: int) -> list[str]:
    """The paper's L-S-L split of ``steps``: 40% Large, 40% Small, the last 20% Large."""
    first, middle = round(steps * PAPER_SPLIT[0]), round(steps * PAPER_SPLIT[1])
    return ["large"] * first + ["small"] * middle + ["large"] * (steps - first - middle)


# A calibrated-style window: the one the embedded pair's profile shipped until 2026-11-26 (Small for
# sigma <= 0.6648, from a window-only calibration judged by feature cosine). The profile shipped now
# recommends Large with fewer steps; this window is kept as a fixed, reproducible timing case.
CALIBRATED_STYLE = Schedule.lsl(0.6648, 0.0)


class Report:
    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.data = path, dict(head)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")
        print(f"[{key}] {json.dumps(value)}", flush=True)


def measure_calls(large: TransformerDenoiser, small: TransformerDenoiser, x: torch.Tensor, cond: torch.Tensor,
                  uncond: torch.Tensor, device: str, repeats: int) -> dict[str, Any]:
    """One call of each model, CFG as the pipeline runs it and batched, and FLOPs per call."""
    out: dict[str, Any] = {"latent": list(x.shape)}
    sigma = torch.full((1,), 0.7, device=device)
    for name, model in (("large", large), ("small", small)):
        two = GuidedDenoiser(model, GUIDANCE, {"encoder_hidden_states": uncond}, batched=False)
        both = GuidedDenoiser(model, GUIDANCE, {"encoder_hidden_states": uncond}, batched=True)
        with torch.no_grad():
            model(x, sigma, encoder_hidden_states=cond)  # warm-up (kernel selection, allocator)
            both(x, sigma, encoder_hidden_states=cond)
            _, one_s, _ = timed(lambda: model(x, sigma, encoder_hidden_states=cond), device, repeats)
            _, two_s, two_rec = timed(lambda: two(x, sigma, encoder_hidden_states=cond), device, repeats)
            _, both_s, _ = timed(lambda: both(x, sigma, encoder_hidden_states=cond), device, repeats)
        flops = count_flops(model, x, 0.7, encoder_hidden_states=cond)
        out[name] = {"call_s": round(one_s, 4), "cfg_two_calls_s": round(two_s, 4), "cfg_batched_s": round(both_s, 4),
                     "flops_per_call": flops, "tflops_per_s": round(flops / one_s / 1e12, 2),
                     "peak_gib": two_rec["peak_gib"]}
    out["r_flops"] = round(out["small"]["flops_per_call"] / out["large"]["flops_per_call"], 4)
    out["r_time"] = round(out["small"]["cfg_two_calls_s"] / out["large"]["cfg_two_calls_s"], 4)
    return out


def speedups(rows: dict[str, dict[str, Any]], base: str, w_of: dict[str, float], r_flops: float,
             r_time: float) -> None:
    """Add each row's measured speed-up over ``base`` and its FLOP and time bounds, in place."""
    for name, row in rows.items():
        if name == base or "seconds" not in row:
            continue
        w = w_of[name]
        row.update(small_share=round(w, 4), speedup=round(rows[base]["seconds"] / row["seconds"], 3),
                   flop_bound=round(flop_bound(w, r_flops), 3), time_bound=round(flop_bound(w, r_time), 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="wan_scale.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy configs and latent (CPU rehearsal)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the pipeline runs (default 50, the paper's)")
    parser.add_argument("--short-steps", type=int, default=5,
                        help="steps of the sampler runs and the switch check (default 5: the paper's 2+2+1 split)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of per-call and short timings (median)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds; later sections are skipped past it")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--sections", default="calls,pipeline,sample,compile,frames33")
    args = parser.parse_args()
    clock = Clock(args.budget)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script times the GPU path; rehearse it with --tiny --device cpu")
    sections = set(args.sections.split(","))
    unknown = sections - {"calls", "pipeline", "sample", "compile", "frames33"}
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}")
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.tiny:
        configs, (height, width, frames, frames33), text = (TINY_LARGE, TINY_SMALL), (32, 48, 5, 9), 8
    else:
        configs, (height, width, frames, frames33), text = (WAN_14B, WAN_1_3B), (480, 832, 17, 33), 512
    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    profile_schedule, profile_name = CALIBRATED_STYLE, "window of the profile shipped until 2026-11-26"
    import diffusers

    report = Report(Path(args.out), {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "dtype": str(dtype).replace("torch.", ""),
        "configs": {"large": configs[0], "small": configs[1]}, "height": height, "width": width, "frames": frames,
        "latent": list(latent), "text_tokens": text, "guidance": GUIDANCE, "scheduler": UNIPC_WAN,
        "command": " ".join(sys.argv)})
    large_m = build(configs[0], args.device, dtype, seed=0)
    small_m = build(configs[1], args.device, dtype, seed=1)
    report.put("build", {"seconds": round(clock.elapsed(), 1),
                         "params": {n: sum(p.numel() for p in m.parameters())
                                      for n, m in (("large", large_m), ("small", small_m))},
                         "resident_gib": round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else None})
    gen = torch.Generator(args.device).manual_seed(0)
    cond = torch.randn(1, text, configs[0]["text_dim"], device=args.device, generator=gen).to(dtype)
    uncond = torch.randn(1, text, configs[0]["text_dim"], device=args.device, generator=gen).to(dtype)
    x = torch.randn(latent, device=args.device, generator=gen)
    large, small = TransformerDenoiser(large_m), TransformerDenoiser(small_m)

    calls = measure_calls(large, small, x, cond, uncond, args.device, args.repeats)
    report.put("calls", calls)
    r_flops, r_time = calls["r_flops"], calls["r_time"]
    step_s = {"large": calls["large"]["cfg_two_calls_s"], "small": calls["small"]["cfg_two_calls_s"]}

    def predicted(plan: list[str]) -> float:
        return sum(step_s[name] for name in plan)

    if "pipeline" in sections:
        report.put("pipeline", pipeline_section(large_m, small_m, cond, uncond, (height, width, frames), args,
                                                clock, predicted, profile_schedule, profile_name, r_flops, r_time))
    if "sample" in sections:
        report.put("sample", sample_section(large_m, small_m, x, cond, uncond, args, clock, predicted, r_flops,
                                            r_time, compiled=False))
    if "compile" in sections:
        report.put("compile", sample_section(large_m, small_m, x, cond, uncond, args, clock, predicted, r_flops,
                                             r_time, compiled=True))
    if "frames33" in sections:
        shape = (1, 16, (frames33 - 1) // 4 + 1, height // 8, width // 8)
        if clock.fits(12 * predicted(["large"]) * (shape[2] / latent[2]) ** 1.5):
            x33 = torch.randn(shape, device=args.device, generator=gen)
            report.put("frames33", measure_calls(large, small, x33, cond, uncond, args.device, max(1, args.repeats - 1)))
        else:
            report.put("frames33", {"skipped": f"budget ({clock.elapsed():.0f} of {args.budget:.0f} s used)"})
    report.put("total_seconds", round(clock.elapsed(), 1))
    summary(report.data)


def pipeline_section(large_m: torch.nn.Module, small_m: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor,
                     size: tuple[int, int, int], args: argparse.Namespace, clock: Clock,
                     predicted: Callable[[list[str]], float], profile_schedule: Schedule, profile_name: str,
                     r_flops: float, r_time: float) -> dict[str, Any]:
    """An unmodified WanPipeline (UniPC, as diffusers ships Wan 2.1) blended with ``adaptive.blend``."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    height, width, frames = size
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None,
                       scheduler=UniPCMultistepScheduler(**UNIPC_WAN), transformer=large_m)
    pipe.set_progress_bar_config(disable=True)

    def grid_of(steps: int) -> list[float]:
        scheduler = UniPCMultistepScheduler(**UNIPC_WAN)
        scheduler.set_timesteps(steps)
        return [float(s) for s in scheduler.sigmas]

    def run(steps: int) -> torch.Tensor:
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=height, width=width,
                    num_frames=frames, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="latent",
                    generator=torch.Generator(args.device).manual_seed(0)).frames

    out: dict[str, Any] = {"steps": args.steps, "grid": [round(s, 5) for s in grid_of(args.steps)],
                           "profile": profile_name, "profile_schedule": str(profile_schedule), "runs": {}}
    grid = grid_of(args.steps)
    plans = {"large": ["large"] * args.steps, "paper_lsl": paper_plan(args.steps),
             "profile_window": profile_schedule.step_models(grid)}
    schedules = {"large": None, "paper_lsl": Schedule.from_steps(grid, plans["paper_lsl"]),
                 "profile_window": profile_schedule}
    run(2)  # warm-up of the pipeline path (scheduler, both models already warm)
    rows: dict[str, dict[str, Any]] = out["runs"]
    for name, schedule in schedules.items():
        if not clock.fits(1.1 * predicted(plans[name])):
            rows[name] = {"skipped": f"budget ({clock.elapsed():.0f} of {args.budget:.0f} s used)"}
            continue
        if schedule is None:
            unblend(pipe)
        else:
            blend(pipe, small_m, schedule)
        latents, seconds, record = timed(lambda: run(args.steps), args.device)
        ran = Counter(model for _, model in pipe.transformer.trace) if schedule is not None else \
            Counter({"large": 2 * args.steps})
        rows[name] = dict(record, calls=dict(ran), plan="".join(p[0].upper() for p in plans[name]),
                          predicted_s=round(predicted(plans[name]), 3), finite=bool(torch.isfinite(latents).all()))
        print(f"  pipeline {name}: {seconds:.2f} s", flush=True)
    w_of = {k: v.count("small") / len(v) for k, v in plans.items()}
    speedups(rows, "large", w_of, r_flops, r_time)
    # The switch's own cost: the drop-in running Large alone against the plain pipeline.
    short = args.short_steps
    if clock.fits(2.2 * args.repeats * predicted(["large"] * short)):
        unblend(pipe)
        _, plain_s, plain = timed(lambda: run(short), args.device, args.repeats)
        blend(pipe, small_m, Schedule.large_only())
        _, switch_s, switched = timed(lambda: run(short), args.device, args.repeats)
        out["switch_overhead"] = {"steps": short, "plain": plain, "blended_large_only": switched,
                                  "overhead": round(switch_s / plain_s - 1, 4)}
    else:
        out["switch_overhead"] = {"skipped": f"budget ({clock.elapsed():.0f} of {args.budget:.0f} s used)"}
    unblend(pipe)
    return out


def sample_section(large_m: torch.nn.Module, small_m: torch.nn.Module, x: torch.Tensor, cond: torch.Tensor,
                   uncond: torch.Tensor, args: argparse.Namespace, clock: Clock,
                   predicted: Callable[[list[str]], float], r_flops: float, r_time: float,
                   compiled: bool) -> dict[str, Any]:
    """``adaptive.sample`` on the Wan grid (Euler, shift 3) at ``--short-steps``: Large alone and the
    paper's split; eager also with the online controller and with Small offloaded; or compiled."""
    steps = args.short_steps
    grid = sigmas(steps, UNIPC_WAN["flow_shift"])
    plan = paper_plan(steps)
    lsl = Schedule.from_steps(grid, plan)
    uncond_kw = {"encoder_hidden_states": uncond}
    pair = ModelPair(large_m, small_m).guided(GUIDANCE, uncond_kw, batched=False)
    out: dict[str, Any] = {"steps": steps, "plan": "".join(p[0].upper() for p in plan), "runs": {}}
    rows: dict[str, dict[str, Any]] = out["runs"]
    w_of = {"blend": plan.count("small") / steps}
    if compiled:
        if not clock.fits(90 + 2 * args.repeats * predicted(["large"] * steps)):
            return {"skipped": f"budget ({clock.elapsed():.0f} of {args.budget:.0f} s used)"}
        start = time.perf_counter()
        pair.compile(regional=True, backend=args.compile_backend, dynamic=False)
        sample(pair, x, grid, lsl, encoder_hidden_states=cond)  # compiles the blocks of both models
        out["compile_s"] = round(time.perf_counter() - start, 1)
    runs: list[tuple[str, Any, ModelPair | None, list[str]]] = [("large", None, pair, ["large"] * steps),
                                                         ("blend", lsl, pair, plan)]
    if not compiled:
        first_small = plan.index("small")
        back = first_small + plan.count("small")
        # Random weights disagree everywhere, so the controller is set to hand over at its first
        # probe (step first_small - 1) and to return where the paper does: its decisions are the
        # paper's plan, and the run's extra cost over the fixed blend is the probes' and reads'.
        controller = ControllerConfig(threshold=1e6, probe_from_sigma=float(grid[first_small - 1]),
                                      sigma_out=float((grid[back - 1] + grid[back]) / 2), probe_budget=1)
        runs.append(("online", controller, pair, plan + ["small"]))  # one extra Small call: the probe
        runs.append(("blend_small_offloaded", lsl, None, plan))  # made at its turn: placing moves Small to CPU
        w_of.update(online=w_of["blend"], blend_small_offloaded=w_of["blend"])
    for name, schedule, models, cost_plan in runs:
        # Offloading moves Small's weights in and out at each of its calls: allow for that.
        transfer = 4 * plan.count("small") * (6.0 if x.is_cuda else 0.0) * 0.1 if "offload" in name else 0.0
        if not clock.fits(1.2 * args.repeats * (predicted(cost_plan) + transfer)):
            rows[name] = {"skipped": f"budget ({clock.elapsed():.0f} of {args.budget:.0f} s used)"}
            continue
        if models is None:
            models = ModelPair(large_m, small_m).placed("small", args.device, offload=True).guided(
                GUIDANCE, uncond_kw, batched=False)
        models.check(x, encoder_hidden_states=cond)  # the pair's one-time dry run stays out of the timing
        result, seconds, record = timed(lambda: sample(models, x, grid, schedule, encoder_hidden_states=cond,
                                                        return_decisions=True), args.device, args.repeats)
        latents, decisions = result
        rows[name] = dict(record, models="".join(m[0].upper() for m in decisions.models[0]),
                          probes=len(decisions.probes[0]) if hasattr(decisions, "probes") else None,
                          predicted_s=round(predicted(cost_plan), 3), finite=bool(torch.isfinite(latents).all()))
        print(f"  sample{' compiled' if compiled else ''} {name}: {seconds:.2f} s", flush=True)
    small_m.to(x.device)  # offloading leaves Small in CPU memory; later sections want it resident
    speedups(rows, "large", w_of, r_flops, r_time)
    if "online" in rows and "seconds" in rows["online"] and "seconds" in rows["blend"]:
        out["online_overhead"] = round(rows["online"]["seconds"] / rows["blend"]["seconds"] - 1, 4)
    if "blend_small_offloaded" in rows and "seconds" in rows["blend_small_offloaded"] and "seconds" in rows["blend"]:
        out["offload_overhead"] = round(rows["blend_small_offloaded"]["seconds"] / rows["blend"]["seconds"] - 1, 4)
    return out


def summary(data: dict[str, Any]) -> None:
    """The table a reader wants: each run's seconds, speed-up and bounds, and peak memory."""
    print(f"\n{data['device']}, {data['dtype']}, latent {data['latent']}, torch {data['torch']}")
    calls = data.get("calls", {})
    for name in ("large", "small"):
        if name in calls:
            c = calls[name]
            print(f"  {name:5s} call {c['call_s']:.3f} s, CFG pair {c['cfg_two_calls_s']:.3f} s "
                  f"(batched {c['cfg_batched_s']:.3f} s), {c['flops_per_call'] / 1e12:.1f} TFLOP, "
                  f"{c['tflops_per_s']:.0f} TFLOP/s")
    if calls:
        print(f"  r: FLOPs {calls['r_flops']:.3f}, time {calls['r_time']:.3f}")
    print(f"{'section':10s} {'run':24s} {'steps':>5s} {'seconds':>8s} {'speed-up':>8s} {'FLOP bound':>10s} "
          f"{'time bound':>10s} {'peak GiB':>8s}")
    for section in ("pipeline", "sample", "compile"):
        block = data.get(section) or {}
        for name, row in (block.get("runs") or {}).items():
            if "seconds" not in row:
                print(f"{section:10s} {name:24s} {row.get('skipped', '')}")
                continue
            print(f"{section:10s} {name:24s} {block['steps']:5d} {row['seconds']:8.2f} {row.get('speedup', 1.0):8.3f} "
                  f"{row.get('flop_bound', 1.0):10.3f} {row.get('time_bound', 1.0):10.3f} {row['peak_gib'] or 0:8.2f}")
    for key, label in (("pipeline", "switch_overhead"), ("sample", "online_overhead"), ("sample", "offload_overhead")):
        value = (data.get(key) or {}).get(label)
        if value is not None:
            print(f"{label}: {value['overhead'] if isinstance(value, dict) and 'overhead' in value else value}")


if __name__ == "__main__":
    main()
