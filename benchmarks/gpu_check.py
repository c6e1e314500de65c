"""Check the GPU path on the embedded pair: CUDA, bf16 and torch.compile, with the shipped profile.

    python benchmarks/gpu_check.py --out gpu_check.json

For each precision (fp32, bf16) and mode (eager, compiled with inductor) it samples the same videos
Large-only and with the shipped profile's schedule, and reports: agreement with fp32 eager (feature
similarity and relative L2 of the videos), wall time per batch (best of ``--repeats`` interleaved
rounds, after warm-up, synchronised), the blend's speed-up over Large-only in the same configuration,
and peak GPU memory.
``--device cpu`` runs the same checks on a CPU (slowly; for trying the script without a GPU). ``--pair`` and
``--schedule`` check another pair (a name or a weights folder) and plan (``lsl:0.85,0.3``; default: the pair's
stored profile), as the tests rehearse the script on a tiny pair.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import torch

from adaptive import ProfileStore, Schedule, sigmas
from adaptive.cli.options import parse_schedule
from adaptive.metering import interleaved
from adaptive.toy import generate, load_pair, prompt_for
from adaptive.toy.pair import pair_harness


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="32,256", help="batch sizes to time (comma list)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="fp32,bf16,bf16+compile",
                        help="precision[+compile] list; the first is the reference (default fp32,bf16,bf16+compile)")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pair", default=None, help="an embedded pair's name or a weights folder (default: the shipped)")
    parser.add_argument("--schedule", type=parse_schedule, default=None,
                        help="the plan to check, e.g. lsl:0.85,0.3 (default: the pair's profile in profiles/)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script checks the GPU path (try --device cpu to run it slowly "
                         "on a CPU); the CPU tests are `make test`")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here: it is the reference
    if args.schedule is None:
        profile = ProfileStore("profiles").for_grid(load_pair(args.pair)[0], 30, 3.0)
        if profile is None:
            raise SystemExit("no profile for this pair in profiles/: run from the repository root, or give the plan "
                             "with --schedule (e.g. lsl:0.85,0.3)")
        schedule = profile.schedule()
    elif isinstance(args.schedule, Schedule):
        schedule = args.schedule
    else:
        raise SystemExit(f"--schedule {args.schedule}: give a plan (lsl:A,B, sl:S, ls:B or large); leave it out for "
                         "the stored profile's")
    harness = pair_harness(args.pair)
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    report: dict = {"device": device_name, "torch": torch.__version__,
                    "python": platform.python_version(), "schedule": str(schedule),
                    "small_steps": schedule.small_steps(sigmas(30, 3.0)), "rows": []}
    print(report, flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    references: dict[tuple[int, str], torch.Tensor] = {}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for config in args.configs.split(","):
        precision, _, mode = config.partition("+")
        if precision not in dtypes or mode not in ("", "compile"):
            raise SystemExit(f"--configs entry {config!r}: write a precision (fp32, bf16, fp16), optionally +compile")
        dtype, compiled = dtypes[precision], mode == "compile"
        pair, _ = load_pair(args.pair, device=args.device, dtype=dtype)
        if compiled:
            pair = pair.compile()
        for batch in batches:
            prompts = [prompt_for(i % 10, i % 8) for i in range(batch)]
            seeds = list(range(batch))
            start = time.perf_counter()
            generate(pair, prompts, seeds, schedule, num_steps=30)  # warm-up (compiles)
            generate(pair, prompts, seeds, None, num_steps=30)
            warmup = time.perf_counter() - start
            row: dict = {"config": config, "batch": batch,
                         "warmup_s": round(warmup, 2)}
            runs = {name: functools.partial(generate, pair, prompts, seeds, sched, num_steps=30)
                    for name, sched in (("large", None), ("blend", schedule))}
            measured = interleaved(runs, rounds=args.repeats, device=args.device)  # best of the rounds
            for name in runs:
                videos = measured.outputs[name].float().cpu()
                ref = references.setdefault((batch, name), videos)  # the first config is the reference
                row[name] = {"seconds": round(measured.best(name), 4),
                             "peak_gib": round(measured.peak_gib[name], 3) if cuda else None,
                             "finite": bool(torch.isfinite(videos).all()),
                             "sim_to_reference": round(float(harness.similarity(videos, ref).mean()), 4),
                             "rel_l2_to_reference": round(float(((videos - ref).flatten(1).norm(dim=1)
                                                                  / ref.flatten(1).norm(dim=1)).mean()), 4)}
                if name == "blend":
                    large_ref = references[(batch, "large")]
                    row[name]["sim_to_reference_large"] = round(float(harness.similarity(videos, large_ref).mean()), 4)
            row["speedup"] = round(row["large"]["seconds"] / row["blend"]["seconds"], 3)
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
