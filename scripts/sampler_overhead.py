"""Sampler overhead: wall time of ``adaptive.sample`` minus the time spent inside the model calls it
made, as a share of the model time, on the embedded pair (one run, timed calls synchronised).

    python scripts/sampler_overhead.py --videos 16 --repeats 3
"""

from __future__ import annotations

import argparse

from adaptive import Meter, Schedule, sample, sigmas
from adaptive.metering import interleaved
from adaptive.toy import load_pair, prompt_for, seeded_noise
from adaptive.toy.data import encode_prompts


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    pair, _ = load_pair()
    noise = seeded_noise(range(args.videos))
    cond = encode_prompts([prompt_for(i % 10, i % 8) for i in range(args.videos)])
    schedule = Schedule.lsl(0.85, 0.3)
    meter = Meter(pair, timed=True)
    sample(meter.pair, noise, sigmas(4, 3.0), schedule, encoder_hidden_states=cond)  # warm-up
    run = {"blend": lambda: sample(meter.pair, noise, sigmas(args.steps, 3.0), schedule, encoder_hidden_states=cond)}
    measured = interleaved(run, rounds=args.repeats, device=noise.device, meter=meter)
    total, inside = measured.total("blend"), sum(measured.model_seconds["blend"])
    calls = {k: v * args.repeats for k, v in measured.calls["blend"].items()}  # every round makes the same calls
    print(f"calls: {calls}; sampler wall {total:.3f} s, inside models {inside:.3f} s, "
          f"overhead {(total - inside) / inside * 100:.2f}% of model time")
    return {"wall": total, "inside": inside, "overhead": (total - inside) / inside}


if __name__ == "__main__":
    main()
