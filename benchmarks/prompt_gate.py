"""The gate before any frontier (issue #33): does a Large draw what its prompt asks?

    python benchmarks/prompt_gate.py shipped=adaptive/toy/weights \\
        multi=docs/pair_design/candidates/multi cpu=docs/pair_design/candidates/cpu:docs/pair_design/candidates/multi \\
        --videos 32 --out docs/pair_design/gate

Each argument is ``NAME=FOLDER[:ENCODER_FOLDER]``: ``FOLDER/large`` (or ``FOLDER`` itself when it holds a
``config.json``) is the Large; the encoder (``encoder.safetensors`` + ``encoder.json``) is ``FOLDER``'s unless a
second folder is given. The data variant (whose real videos are the ceiling and the Frechet reference) is the
one the Large's ``training.json`` records, else the encoder's. On ``--videos`` prompts and noise seeds that neither
training checks (seeds 20000+, ``training/large.py``) nor any default calibration use
(:func:`adaptive.toy.heldout_prompts` with ``--prompt-seed``, seeds 10000+), 30 Euler steps at shift 3,
guidance 4, the variant's encoder reads the prompted digit and direction (``Harness.alignment``: the
CLIP-score analogue) and the Frechet distance of its features to real held-out videos of the variant is
measured (the FVD analogue). Real videos of each variant, read by the same encoder, are the ceiling.

A Large passes when digit and direction accuracy are both >= ``--threshold`` (0.90). Writes ``gate.json``,
``gate.md`` (the table, with the command) and ``<name>.png`` (the first 16 videos, captioned with what was
asked and what the encoder read), to be looked at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive.pair import ModelPair
from adaptive.toy.data import DIRECTION_NAMES, heldout_prompts, make_videos, parse_prompt, variant_of
from adaptive.toy.harness import Harness, load_encoder
from adaptive.toy.models import SAMPLE_SHAPE
from adaptive.toy.pair import GUIDANCE_SCALE, NUM_STEPS, SHIFT, generate
from adaptive.toy.video import save_strip

THRESHOLD = 0.90


def _large(folder: Path) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    path = folder if (folder / "config.json").exists() else folder / "large"
    if not (path / "config.json").exists():
        raise SystemExit(f"no Large in {folder} (neither {folder}/config.json nor {folder}/large/config.json)")
    model = WanTransformer3DModel.from_pretrained(path, torch_dtype=torch.float32, local_files_only=True,
                                                  use_safetensors=True)
    return model.eval().requires_grad_(False)


def data_of(folder: Path) -> str | None:
    """The data variant the Large in ``folder`` was trained on (its ``training.json`` says), if recorded."""
    path = folder if (folder / "config.json").exists() else folder / "large"
    record = path / "training.json"
    return json.loads(record.read_text()).get("data") if record.exists() else None


def parse_candidate(text: str) -> tuple[str, Path, Path]:
    """``NAME=FOLDER[:ENCODER_FOLDER]`` -> (name, Large folder, encoder folder)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER[:ENCODER_FOLDER], got {text!r}")
    folder, _, encoder = rest.partition(":")
    encoder_folder = Path(encoder or folder)
    if not (encoder_folder / "encoder.safetensors").exists():
        raise argparse.ArgumentTypeError(f"{name}: no encoder.safetensors in {encoder_folder}")
    return name, Path(folder), encoder_folder


@torch.no_grad()
def judge(model: torch.nn.Module, harness: Harness, prompts: list[str], seeds: list[int], steps: int = NUM_STEPS
          ) -> tuple[dict[str, float], torch.Tensor, np.ndarray]:
    """Alignment and Frechet distance of ``model``'s guided videos; the videos and what the encoder read."""
    from adaptive.toy.data import encode_prompts

    pair = ModelPair(model, model, sample_shape=SAMPLE_SHAPE).guided(
        GUIDANCE_SCALE, {"encoder_hidden_states": encode_prompts([""])})
    videos = generate(pair, prompts, seeds, num_steps=steps, shift=SHIFT)
    return measure(harness, videos, prompts), videos, read(harness, videos)


def measure(harness: Harness, videos: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    labels = np.array([parse_prompt(p) for p in prompts])
    digit, direction = harness.alignment(videos, labels[:, 0], labels[:, 1])
    return {"digit": digit, "direction": direction, "frechet": harness.frechet(videos)}


@torch.no_grad()
def read(harness: Harness, videos: torch.Tensor) -> np.ndarray:
    digit_logits, direction_logits = harness.encoder(videos.float().clamp(-1, 1))
    return np.stack([digit_logits.argmax(1).numpy(), direction_logits.argmax(1).numpy()], axis=1)


def run(candidates: list[tuple[str, Path, Path]], videos: int, prompt_seed: int, threshold: float, out: Path,
        steps: int = NUM_STEPS, command: str = "") -> dict[str, Any]:
    prompts, seeds = heldout_prompts(videos, seed=prompt_seed)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    real_rows: dict[tuple[str, str], dict[str, Any]] = {}  # by (variant, encoder): each encoder's own ceiling
    for name, folder, encoder_folder in candidates:
        started = time.perf_counter()
        variant = data_of(folder) or variant_of(encoder_folder)
        harness = Harness(load_encoder(encoder_folder / "encoder.safetensors"), variant=variant)
        if (variant, str(encoder_folder)) not in real_rows:  # the ceiling: real videos, same prompts and encoder
            labels = np.array([parse_prompt(p) for p in prompts])
            real = make_videos(videos, np.random.default_rng(prompt_seed + 777), "heldout", labels[:, 0],
                               labels[:, 1], variant=variant)
            real_rows[(variant, str(encoder_folder))] = {
                "name": f"real {variant} videos", "variant": variant, "encoder": str(encoder_folder),
                **measure(harness, torch.from_numpy(real.videos), prompts)}
        scores, generated, seen = judge(_large(folder), harness, prompts, seeds, steps)
        captions = [f"{p} -> read {d} {DIRECTION_NAMES[m]}" for p, (d, m) in zip(prompts, seen)]
        save_strip(out / f"{name}.png", {name: generated[:16]}, captions[:16])
        rows.append({"name": name, "variant": variant, "large": str(folder), "encoder": str(encoder_folder),
                     **scores, "passes": scores["digit"] >= threshold and scores["direction"] >= threshold,
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"command": command, "videos": videos, "prompts": prompts, "seeds": seeds, "threshold": threshold,
              "steps": steps, "shift": SHIFT, "guidance": GUIDANCE_SCALE, "candidates": rows,
              "real": list(real_rows.values())}
    (out / "gate.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gate.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}`", "",
             f"{result['videos']} held-out prompts and seeds, {result['steps']} Euler steps, shift {result['shift']:g}, "
             f"guidance {result['guidance']:g}; a Large passes at digit and direction accuracy >= "
             f"{result['threshold']:.2f}.", "",
             "| Large | data | prompted digit read | prompted direction read | Frechet to real | passes |",
             "|---|---|---:|---:|---:|---|"]
    for row in result["candidates"]:
        lines.append(f"| {row['name']} | {row['variant']} | {row['digit']:.2f} | {row['direction']:.2f} | "
                     f"{row['frechet']:.1f} | {'yes' if row['passes'] else 'no'} |")
    for row in result["real"]:
        lines.append(f"| {row['name']} (the ceiling) | {row['variant']} | {row['digit']:.2f} | {row['direction']:.2f} | "
                     f"{row['frechet']:.1f} | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=parse_candidate, help="NAME=FOLDER[:ENCODER_FOLDER]")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--prompt-seed", type=int, default=1, help="heldout_prompts' seed (default 1)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--steps", type=int, default=NUM_STEPS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/prompt_gate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    return run(args.candidates, args.videos, args.prompt_seed, args.threshold, args.out, args.steps, command)


if __name__ == "__main__":
    main()
