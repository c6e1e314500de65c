"""Train a prompt-following Large on this CPU, resumably, watching its prompt alignment (issue #33).

    python training/large.py --work /tmp/large --data texture --init shipped --total-steps 4000 --budget-s 6000
    python training/large.py --work /tmp/large --budget-s 3600        # continue the same run, same schedule
    python training/large.py --work /tmp/l --tiny --total-steps 6 --check-every 3 --budget-s 60   # rehearsal

Everything that training depends on lives in ``WORK/checkpoint.pt`` (fp32 weights, EMA, AdamW state, the step,
the total the cosine schedule runs to, and both random streams), written atomically every ``--save-every-s``:
a resumed run (after ``--budget-s``, ``--max-steps`` or a SIGTERM, each of which saves) continues the one
warm-up + cosine schedule where it stopped, from fp32, with its optimiser,
and draws the batches the uninterrupted run would have drawn. Arguments that would change the run (data, init,
config, batch, lr, total, seed) are taken from the checkpoint; giving other values is refused. The checkpoint of
the shipped Large is about 100 MB (weights, EMA and two AdamW moments in fp32): it stays in WORK, not in git.

Every ``--check-every`` steps the EMA samples ``--check-videos`` videos (30 Euler steps, shift 3, guidance 4)
from prompts and noise seeds of the check set (seeds 20000+, never the gate's :func:`heldout_prompts` seeds)
and the variant's encoder reads their digit and direction: ``WORK/alignment.jsonl``. The EMA is exported
for use as ``WORK/large/`` (fp16 safetensors + ``training.json`` with the command, steps, losses and
alignment curve), the layout ``load_pair`` and ``benchmarks/prompt_gate.py`` read.

``--init shipped`` starts from the shipped Large (which follows its prompts on the grain data: the
"conditioning first" lever); ``--init none`` from scratch; ``--init DIR`` from ``DIR/large``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adaptive.toy.data import DIRECTION_NAMES, VARIANTS, encode_prompts, prompt_for
from adaptive.toy.models import LARGE_CONFIG, WEIGHTS_DIR, _SHARED
from adaptive.toy.train import NUM_TRAIN_TIMESTEPS, noised_batch, optimizer_step, save_transformer

CONFIGS: dict[str, dict[str, Any]] = {
    "large": LARGE_CONFIG,  # the shipped Large: 256 tokens, 6.1 M parameters
    "compact": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=3, attention_head_dim=64, ffn_dim=768,
                    num_layers=6),  # issue #25's CPU Large: 64 tokens, 3.9 M parameters
    # The shipped Large's blocks (4 x 64 wide, 6 layers) on 8x8 patches (64 tokens): everything but the patch
    # embedding and the output projection can start from the shipped Large, text path included.
    "wide": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=4, attention_head_dim=64, ffn_dim=768,
                 num_layers=6),
    "tiny": dict(_SHARED, num_attention_heads=1, attention_head_dim=16, ffn_dim=32, num_layers=1),
}
ROOT = Path(__file__).resolve().parent.parent
CHECK_SEED_START = 20_000  # noise seeds of the training checks; the gate uses HELDOUT_SEED_START (10000) on
WARMUP = 100
EMA_DECAY = 0.998


def check_set(n: int) -> tuple[list[str], list[int]]:
    """The training checks' prompts (every digit and direction, cycled) and noise seeds (20000 + i)."""
    rng = np.random.default_rng(4242)
    digits, directions = rng.permutation(np.arange(n) % 10), rng.integers(0, len(DIRECTION_NAMES), n)
    return [prompt_for(int(d), int(m)) for d, m in zip(digits, directions)], list(range(CHECK_SEED_START,
                                                                                          CHECK_SEED_START + n))


@torch.no_grad()
def alignment(model: torch.nn.Module, encoder_path: Path, variant: str, prompts: list[str], seeds: list[int],
              num_steps: int = 30) -> dict[str, float]:
    """Digit and direction accuracy of ``model``'s guided videos (scale 4, shift 3) read by the encoder."""
    from adaptive.pair import ModelPair
    from adaptive.toy.data import parse_prompt
    from adaptive.toy.harness import Harness, load_encoder
    from adaptive.toy.models import SAMPLE_SHAPE
    from adaptive.toy.pair import GUIDANCE_SCALE, SHIFT, generate

    was_training = model.training
    model.eval()
    pair = ModelPair(model, model, sample_shape=SAMPLE_SHAPE).guided(
        GUIDANCE_SCALE, {"encoder_hidden_states": encode_prompts([""])})
    videos = generate(pair, prompts, seeds, num_steps=num_steps, shift=SHIFT)
    model.train(was_training)
    labels = np.array([parse_prompt(p) for p in prompts])
    harness = Harness(load_encoder(encoder_path), variant=variant)
    digit, direction = harness.alignment(videos, labels[:, 0], labels[:, 1])
    return {"digit": digit, "direction": direction, "frechet": harness.frechet(videos, real=256)}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _initialise(model: torch.nn.Module, init: str) -> list[str]:
    """Copy every tensor of the ``init`` Large whose name and shape ``model`` shares; returns the names left
    freshly initialised (a patch size other than the source's: the patch embedding and output projection)."""
    if init == "none":
        return sorted(model.state_dict())
    from diffusers import WanTransformer3DModel

    folder = WEIGHTS_DIR / "large" if init == "shipped" else Path(init) / "large"
    source = WanTransformer3DModel.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True,
                                                   use_safetensors=True).state_dict()
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if len(shared) < len(own) // 2:
        raise SystemExit(f"{folder} shares only {len(shared)} of {len(own)} tensors with this config; "
                         "start it with --init none")
    model.load_state_dict(shared, strict=False)
    return sorted(set(own) - set(shared))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", choices=VARIANTS, default=None, help="data variant (new run: texture)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None, help="new run: wide")
    parser.add_argument("--init", default=None, help="shipped, none, or a folder with large/ (new run: shipped)")
    parser.add_argument("--batch", type=int, default=None, help="new run: 32")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (new run: 5e-4)")
    parser.add_argument("--total-steps", type=int, default=None, help="the cosine schedule's length (new run)")
    parser.add_argument("--budget-s", type=float, default=3600.0, help="stop (and save) after this many seconds")
    parser.add_argument("--max-steps", type=int, default=None, help="stop (and save) after this many steps of this run")
    parser.add_argument("--check-every", type=int, default=500)
    parser.add_argument("--check-videos", type=int, default=16)
    parser.add_argument("--encoder", type=Path, default=None,
                        help="the variant's encoder.safetensors (default: docs/pair_design/candidates/multi's)")
    parser.add_argument("--save-every-s", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None, help="data and noise streams (new run: 3)")
    parser.add_argument("--tiny", action="store_true", help="rehearsal widths (config tiny, 2 check videos, 3 steps)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import WanTransformer3DModel

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    asked = {"data": args.data, "config": "tiny" if args.tiny else args.config, "batch": args.batch, "lr": args.lr,
             "total_steps": args.total_steps, "init": args.init, "seed": args.seed}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        run = ckpt["run"]
        clash = {k: (v, run[k]) for k, v in asked.items() if v is not None and v != run[k]}
        if clash:
            raise SystemExit(f"{ckpt_path} is a run with " + ", ".join(f"{k}={b}" for k, (a, b) in clash.items())
                             + "; it continues with its own settings: drop those arguments or use another --work")
    else:
        ckpt = None
        if args.total_steps is None:
            raise SystemExit("a new run needs --total-steps (the length of its learning-rate schedule)")
        run = {"data": args.data or "texture", "config": asked["config"] or "wide", "batch": args.batch or 32,
               "lr": args.lr or 5e-4, "total_steps": args.total_steps, "init": args.init or "shipped",
               "seed": 3 if args.seed is None else args.seed, "commands": []}
    run["commands"] = [*run["commands"], "python training/large.py " + " ".join(sys.argv[1:] if argv is None
                                                                                      else argv)]
    torch.manual_seed(run["seed"])  # the fresh tensors of a new run (a resumed one loads them)
    model = WanTransformer3DModel(**CONFIGS[run["config"]])
    ema = WanTransformer3DModel(**CONFIGS[run["config"]]).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=run["lr"], weight_decay=0.01, betas=(0.9, 0.99))
    rng = np.random.default_rng(run["seed"])
    gen = torch.Generator().manual_seed(run["seed"])
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        gen.set_state(ckpt["torch_rng"])
        step, losses, checks, smoothed = ckpt["step"], ckpt["losses"], ckpt["checks"], ckpt.get("smoothed")
    else:
        fresh = _initialise(model, "none" if run["config"] == "tiny" else run["init"])
        run["fresh_tensors"] = fresh if len(fresh) < 20 else f"{len(fresh)} (all)"
        print(f"initialised from {run['init']}; fresh: {run['fresh_tensors']}", flush=True)
        ema.load_state_dict(model.state_dict())
        step, losses, checks, smoothed = 0, [], [], None
    encoder = args.encoder or ROOT / "docs/pair_design/candidates/multi/encoder.safetensors"
    n_check = 2 if args.tiny else args.check_videos
    prompts, seeds = check_set(n_check)
    check_steps = 3 if args.tiny else 30

    def save() -> None:
        _atomic_save({"run": run, "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                      "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state(), "step": step,
                      "losses": losses, "checks": checks, "smoothed": smoothed}, ckpt_path)
        # The checks as of the checkpoint (a killed run's later checks are redone on resume, not repeated here).
        (work / "alignment.jsonl").write_text("".join(json.dumps(c) + "\n" for c in checks))
        record = {"command": run["commands"], "steps": step, "batch": run["batch"], "lr": run["lr"],
                  "total_steps": run["total_steps"], "data": run["data"], "init": run["init"],
                  "config": CONFIGS[run["config"]], "final_loss": losses[-1][1] if losses else None,
                  "loss_curve": losses, "alignment_curve": checks}
        save_transformer(ema, work / "large", record)

    stopping: list[int] = []  # SIGTERM (kill, a CI's timeout) ends the run after its current step, saved
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    model.train()
    started = last_save = time.time()
    last = run["total_steps"] if args.max_steps is None else min(run["total_steps"], step + args.max_steps)
    while step < last and time.time() - started < args.budget_s and not stopping:
        x, sigma, cond, target, _ = noised_batch(run["batch"], rng, gen, run["data"], "cpu")
        loss = F.mse_loss(model(x, sigma * NUM_TRAIN_TIMESTEPS, cond, return_dict=False)[0], target)
        optimizer_step(model, ema, opt, loss, run["lr"], step, run["total_steps"], EMA_DECAY, WARMUP)
        step += 1
        value = loss.item()
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        if step % 50 == 0:
            losses.append((step, round(smoothed, 5)))
            print(f"step {step} loss {smoothed:.4f} {time.time() - started:.0f}s", flush=True)
        if step % args.check_every == 0 or step == run["total_steps"]:
            check = {"step": step, **alignment(ema, encoder, run["data"], prompts, seeds, check_steps)}
            checks.append(check)
            print("check " + json.dumps(check), flush=True)
        if time.time() - last_save > args.save_every_s:
            save()
            last_save = time.time()
    save()
    print(f"saved step {step} of {run['total_steps']} to {work}", flush=True)
    return {"step": step, "losses": losses, "checks": checks}


if __name__ == "__main__":
    main()
