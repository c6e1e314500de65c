"""Train the embedded pair and its quality encoder on generated moving-digit videos.

Run in the background, e.g.::

    nohup python -m adaptive.toy.train all --out adaptive/toy/weights > train.log 2>&1 &

Flow-matching loss in the project's convention: ``x = (1 - sigma) * x0 + sigma * noise`` and the
model regresses ``v = noise - x0`` given ``timestep = 1000 * sigma`` and the prompt tokens; prompts
are dropped to the null prompt 10% of the time so classifier-free guidance works.

``--data grain`` trains on the grain variant (see :mod:`adaptive.toy.data`); ``--device cuda`` trains
on a GPU (the same steps; GPU kernels are not bit-reproducible, so a re-run matches in loss, not in
bits). ``--max-minutes`` stops a run early but still saves, and the record says how many steps ran.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adaptive.toy.data import GRAINED, VARIANTS, encode_prompts, make_videos, variant_of
from adaptive.toy.harness import load_encoder
from adaptive.toy.models import VideoEncoder, build_transformer

CFG_DROPOUT = 0.1
NUM_TRAIN_TIMESTEPS = 1000


def _lr_factor(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _training_sigmas(n: int, gen: torch.Generator) -> torch.Tensor:
    # Logit-normal (as SD3/Wan train) mixed with uniform so both ends of (0, 1) are seen.
    logit_normal = torch.sigmoid(torch.randn(n, generator=gen))
    uniform = torch.rand(n, generator=gen)
    pick = torch.rand(n, generator=gen) < 0.8
    return torch.where(pick, logit_normal, uniform).clamp(1e-3, 1.0)


def noised_batch(batch: int, rng: np.random.Generator, gen: torch.Generator, data: str, device: str | torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """One training batch: ``(x_sigma, sigma, prompt tokens, target velocity noise - x0, prompts)``,
    prompts dropped to the null prompt ``CFG_DROPOUT`` of the time, sigmas from :func:`_training_sigmas`."""
    videos = make_videos(batch, rng, "train", variant=data)
    x0 = torch.from_numpy(videos.videos)
    prompts = [p if keep else "" for p, keep in zip(videos.prompts, rng.random(batch) > CFG_DROPOUT)]
    cond = encode_prompts(prompts).to(device)
    sigma = _training_sigmas(batch, gen)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    x0, sigma = x0.to(device), sigma.to(device)
    s = sigma.view(-1, 1, 1, 1, 1)
    return (1 - s) * x0 + s * noise, sigma, cond, noise - x0, prompts


def optimizer_step(model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor,
                   lr: float, step: int, total: int, ema_decay: float, warmup: int = 50) -> None:
    """Warm-up/cosine learning rate (a function of ``step`` alone, so a resumed run continues it), clipped AdamW
    step and EMA update, as every toy model trains."""
    for group in opt.param_groups:
        group["lr"] = lr * _lr_factor(step, total, warmup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        decay = min(ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def _command() -> str:
    # The module form, not sys.argv[0]'s absolute path, so the record is a command anyone can re-run.
    return " ".join(["python -m adaptive.toy.train", *sys.argv[1:]])


def save_transformer(model, out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(torch.float16).save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def pruned_copy(model: torch.nn.Module, keep: Sequence[int]) -> torch.nn.Module:
    """A shallower copy of a ``WanTransformer3DModel``: the blocks ``keep`` (in that order) and every
    non-block weight, so a Small of the Large's own family starts from what the Large knows (layer
    dropping, as BK-SDM prunes Stable Diffusion before distilling it).

    >>> from adaptive.toy.models import build_transformer
    >>> pruned_copy(build_transformer("large"), [0, 5]).config.num_layers
    2
    """
    from diffusers import WanTransformer3DModel

    layers = model.config.num_layers
    if not keep or any(not 0 <= i < layers for i in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"keep must name distinct blocks of the {layers}, got {list(keep)}")
    small = WanTransformer3DModel.from_config({**model.config, "num_layers": len(keep)})
    state = {}
    for key, value in model.state_dict().items():
        if not key.startswith("blocks."):
            state[key] = value
            continue
        _, index, rest = key.split(".", 2)
        if int(index) in keep:
            state[f"blocks.{list(keep).index(int(index))}.{rest}"] = value
    small.load_state_dict(state)  # strict: every weight of the shallower model comes from the deeper one
    return small


def train_transformer(size: str, steps: int, batch: int, lr: float, seed: int, out: Path,
                      ema_decay: float = 0.995, save_every: int = 200, init: Path | None = None,
                      data: str = "plain", device: str = "cpu", max_minutes: float = math.inf) -> float:
    """Train one Wan-architecture denoiser; writes EMA weights (fp16 safetensors) to ``out``.

    ``init`` continues from saved weights (e.g. the shipped ones), so training can be spread over
    several background runs; the record then counts the steps of every run.
    """
    torch.manual_seed(seed)
    model = build_transformer(size, seed=seed)
    previous_steps, history = 0, []
    if init is not None:
        from diffusers import WanTransformer3DModel

        loaded = WanTransformer3DModel.from_pretrained(init / size, torch_dtype=torch.float32, local_files_only=True,
                                                       use_safetensors=True)
        model.load_state_dict(loaded.state_dict())
        record_path = init / size / "training.json"
        if record_path.exists():
            previous = json.loads(record_path.read_text())
            previous_steps = int(previous.get("steps", 0))
            # Keep every earlier run's command so the shipped weights can be reproduced run by run.
            history = [*previous.pop("history", []), previous]
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    started, smoothed = time.time(), None
    record = dict(command=_command(), size=size, batch=batch, lr=lr, data_seed=seed,
                  ema_decay=ema_decay, cfg_dropout=CFG_DROPOUT, previous_steps=previous_steps, history=history,
                  data=data, device=str(torch.device(device).type))
    bar = tqdm(range(steps), desc=f"train {size}", mininterval=10)
    for step in bar:
        x, sigma, cond, target, _ = noised_batch(batch, rng, gen, data, device)
        pred = model(x, sigma * NUM_TRAIN_TIMESTEPS, cond, return_dict=False)[0]
        loss = F.mse_loss(pred, target)
        optimizer_step(model, ema, opt, loss, lr, step, steps, ema_decay)
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smoothed:.4f}")
        if step % 25 == 0:
            print(f"{size} step {step} loss {smoothed:.5f} elapsed {time.time() - started:.0f}s", flush=True)
        out_of_time = time.time() - started > 60 * max_minutes
        if (step + 1) % save_every == 0 or step + 1 == steps or out_of_time:
            record.update(steps=previous_steps + step + 1, final_loss=round(smoothed, 5),
                          train_seconds=round(time.time() - started, 1))
            save_transformer(ema, out / size, record)
        if out_of_time:
            print(f"{size}: stopped after {step + 1} of {steps} steps (--max-minutes {max_minutes})", flush=True)
            break
    return float(smoothed or 0.0)


def train_encoder(steps: int, batch: int, seed: int, out: Path, data: str = "plain", device: str = "cpu",
                  init: Path | None = None, lr_scale: float = 1.0) -> float:
    """Train the digit/direction (and, on grain data, grain-contrast) video encoder on real videos;
    reports held-out accuracy. ``init``: a folder whose ``encoder.safetensors`` the run continues from
    (a new warm-up and cosine at ``lr_scale`` times the rate; give a new ``seed`` so it sees new videos)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is not None:
        model = load_encoder(Path(init) / "encoder.safetensors").requires_grad_(True).train().to(device)
    else:
        model = VideoEncoder().to(device)
    peak = 2e-3 * lr_scale
    opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01)
    # Generated grain can be anything from crisp to averaged away: train the reading down to none.
    contrast_range = (0.0, 0.7)
    # Generated videos are never exact; small noise keeps the encoder robust without hiding the grain.
    jitter = 0.1 if data == "plain" else 0.03
    for step in tqdm(range(steps), desc="train encoder", mininterval=10):
        real = make_videos(batch, rng, "train", variant=data, grain_contrast=contrast_range)
        videos = torch.from_numpy(real.videos).to(device)
        videos = videos + jitter * torch.randn_like(videos)
        digit_logits, direction_logits = model(videos)
        frame_logits = model.frame_digit_logits(videos)
        digits = torch.from_numpy(real.digits).to(device)
        loss = (F.cross_entropy(digit_logits, digits)
                + F.cross_entropy(direction_logits, torch.from_numpy(real.directions).to(device))
                + F.cross_entropy(frame_logits.flatten(0, 1), digits.repeat_interleave(frame_logits.shape[1])))
        if data in GRAINED:
            loss = loss + 10.0 * F.mse_loss(model.grain(videos), torch.from_numpy(real.grain).to(device))
        for group in opt.param_groups:
            group["lr"] = peak * _lr_factor(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"encoder step {step} loss {loss.item():.4f}", flush=True)
    model = model.cpu().eval()
    record: dict = dict(command=_command(), steps=steps, batch=batch, data_seed=seed, final_loss=round(loss.item(), 5),
                        init=None if init is None else str(init), lr_scale=lr_scale)
    with torch.no_grad():
        held = make_videos(512, np.random.default_rng(seed + 1), "heldout", variant=data)
        held_videos = torch.from_numpy(held.videos)
        d_logits, m_logits = model(held_videos)
        record.update(heldout_digit_accuracy=float((d_logits.argmax(1).numpy() == held.digits).mean()),
                      heldout_direction_accuracy=float((m_logits.argmax(1).numpy() == held.directions).mean()))
        record.update(data=data)
        if data in GRAINED:
            error = model.grain(held_videos).numpy() - held.grain
            record.update(heldout_grain_mae=float(np.abs(error).mean()))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "encoder.safetensors"))
    (out / "encoder.json").write_text(json.dumps(record, indent=2) + "\n")
    print("encoder held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k.startswith("heldout")),
          flush=True)
    return float(loss.item())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["large", "small", "encoder", "all"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    parser.add_argument("--large-steps", type=int, default=1400)
    parser.add_argument("--small-steps", type=int, default=1400)
    parser.add_argument("--encoder-steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, default=None, help="continue from weights saved in this folder")
    parser.add_argument("--lr-scale", type=float, default=1.0, help="multiply the learning rates (e.g. 0.5 to resume)")
    parser.add_argument("--data", choices=VARIANTS, default=None,
                        help="data variant (default: the --init folder's, else the shipped pair's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--encoder-batch", type=int, default=32)
    parser.add_argument("--max-minutes", type=float, default=math.inf,
                        help="stop each model's run after this long (saves what it has)")
    args = parser.parse_args(argv)
    if args.data is None:
        # Continuing a pair on other data than it learnt would quietly change what it generates.
        args.data = variant_of(args.init if args.init is not None else Path(__file__).parent / "weights")
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    common = dict(init=args.init, data=args.data, device=args.device, max_minutes=args.max_minutes)
    if args.what in ("encoder", "all"):
        train_encoder(args.encoder_steps, args.encoder_batch, args.seed + 100, args.out, args.data, args.device,
                      init=args.init, lr_scale=args.lr_scale)
    if args.what in ("small", "all"):
        train_transformer("small", args.small_steps, args.batch, 1e-3 * args.lr_scale, args.seed + 1, args.out,
                          **common)
    if args.what in ("large", "all"):
        train_transformer("large", args.large_steps, args.batch, 5e-4 * args.lr_scale, args.seed + 2, args.out,
                          **common)


if __name__ == "__main__":
    main()
