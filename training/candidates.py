"""Train candidate embedded pairs concurrently on one GPU within a wall budget, then check each one's
frontier (issue #18: a Small that agrees with Large in the middle, a Large whose flow bends).

    python training/candidates.py --device cuda --out $OUT        # one device call, under 10 minutes
    python training/candidates.py --device cuda --init DIR --out $OUT        # continue DIR's run
    python training/candidates.py --tiny --device cpu --budget-s 20 --out /tmp/c   # a CPU rehearsal

Defaults: 3 variants x 3 recipes = 9 candidate pairs, 380 s of training from the start, then the
frontier checks, waited for at most 150 s more.

A candidate is a data variant (``adaptive.toy.data.VARIANTS``: ``grain`` is the shipped pair's data,
``texture`` and ``multi`` add power-law texture, a scrolling power-law background and, for ``multi``,
a second unprompted digit) times a Small recipe:

- ``scratch``: the shipped Small's config trained on the data with flow matching, as the shipped
  Small was (for ``grain``, the shipped Small trained longer);
- ``distil``: the same config regressing Large's guided velocity (scale ``--guidance``) and its
  unguided one, on the same noised batches as Large's training (the same sigma sampling, prompts
  dropped as often), the teacher being Large's EMA; while Large is young (trained from scratch in
  this run) the loss moves from flow matching to distillation over the first ``DISTIL_RAMP`` of the
  budget, a Large given by ``--init`` (or the shipped one for ``grain``) teaches from the start;
- ``deep``: distilled like ``distil``, 5 layers of width 96 instead of 3 of 128 (the same FLOPs);
- ``coarse`` / ``coarse-thin``: distilled, 8x8 patches (a quarter of Large's tokens) at Large's width in
  3 layers (0.131 of Large's FLOPs per call) or 3/4 of it in 4 layers (0.098): more parameters per FLOP.

One worker process per data variant shares the data and Large's forward passes among its Smalls
(lockstep: each batch trains Large and every Small once, the next batch drawn on the CPU meanwhile);
the workers share the GPU. Beside it, each variant's quality encoder trains in its own process
(``python -m adaptive.toy.train encoder``; for ``grain`` the shipped one is copied). Training stops
``--budget-s`` seconds after the start; EMA weights are saved (fp16 safetensors, ``training.json``
with the loss curve and every earlier run's record) and packed into ``--out`` at once, then
``benchmarks/pair_triage.py`` checks every candidate pair of the variant, one after another in one process
(``--frontier-prompts`` x ``--frontier-seeds`` videos, ``--frontier-steps`` Euler steps at shift 3,
every window with ends on multiples of ``--frontier-stride``: the full frontier of every window,
nine checks sharing the GPU, did not finish in 150 s on an H200); after ``--frontier-timeout-s`` more seconds whatever exists is packed. ``--out`` receives at most
8 files: ``<variant>-large.tar`` (Large and the encoder), ``<variant>-small.tar`` (the Smalls, their
records, the frontier results), ``summary.json`` and ``logs.tar``. Unpack the tars into one folder
and pass it as ``--init`` to continue every model of every variant (resumable), e.g.::

    mkdir run && for t in out/*-large.tar out/*-small.tar; do tar xf $t -C run; done
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adaptive.toy.data import VARIANTS, encode_prompts
from adaptive.toy.models import LARGE_CONFIG, SMALL_CONFIG, _SHARED
from adaptive.toy.pair import GUIDANCE_SCALE, WEIGHTS_DIR
from adaptive.toy.train import NUM_TRAIN_TIMESTEPS, noised_batch, optimizer_step, pruned_copy, save_transformer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"  # pair_triage checks each candidate
SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "small": SMALL_CONFIG,  # 2 x 64 wide, 3 layers: 0.106 of Large's FLOPs per call
    "deep": dict(_SHARED, num_attention_heads=2, attention_head_dim=48, ffn_dim=192, num_layers=5),  # 0.099
    # 8x8 patches (64 tokens, a quarter of Large's): Large's width in 3 layers, or 3/4 of it in 4 layers
    "coarse": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=4, attention_head_dim=64, ffn_dim=768,
                   num_layers=3),  # 0.131
    "coarse-thin": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=3, attention_head_dim=64, ffn_dim=576,
                        num_layers=4),  # 0.098
    # The CPU pair (issue #25): 8x8 patches, 96 wide, 3 layers: 0.108 of the compact Large's FLOPs per call
    "compact": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=2, attention_head_dim=48, ffn_dim=256,
                    num_layers=3),
    # Second CPU try: finer tokens than the compact Large's, so a narrow Small can still write fine texture
    # (the compact Small maps 96 dims to 128 pixels per token): 1x8x8 patches (128 tokens, 64 wide, 0.099 of
    # the compact Large's FLOPs) and 2x4x4 (256 tokens, 48 wide, 0.109).
    "mid": dict(_SHARED, patch_size=(1, 8, 8), num_attention_heads=2, attention_head_dim=32, ffn_dim=192, num_layers=3),
    "fine": dict(_SHARED, patch_size=(2, 4, 4), num_attention_heads=2, attention_head_dim=24, ffn_dim=144,
                 num_layers=3),
}
# Large's configs: the shipped one (256 tokens, 6.1 M parameters, 2.4 GFLOP per call) and the CPU pair's
# (issue #25): 8x8 patches (64 tokens), 192 wide, 6 layers, 3.9 M parameters, 0.41 GFLOP per call; a
# training step at batch 32 costs about a sixth of the shipped Large's on two CPU cores.
LARGE_CONFIGS: dict[str, dict[str, Any]] = {
    "large": LARGE_CONFIG,
    "compact": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=3, attention_head_dim=64, ffn_dim=768,
                    num_layers=6),
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {  # the CPU rehearsal: the same code on toy widths
    "large": dict(_SHARED, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, num_layers=2),
    "small": dict(_SHARED, num_attention_heads=1, attention_head_dim=24, ffn_dim=32, num_layers=1),
    "deep": dict(_SHARED, num_attention_heads=1, attention_head_dim=12, ffn_dim=16, num_layers=2),
    "coarse": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=2, attention_head_dim=24, ffn_dim=64,
                   num_layers=1),
    "coarse-thin": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=1, attention_head_dim=24, ffn_dim=32,
                        num_layers=1),
    "compact": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=1, attention_head_dim=12, ffn_dim=16,
                    num_layers=1),
    "mid": dict(_SHARED, patch_size=(1, 8, 8), num_attention_heads=1, attention_head_dim=12, ffn_dim=16, num_layers=1),
    "fine": dict(_SHARED, patch_size=(2, 4, 4), num_attention_heads=1, attention_head_dim=12, ffn_dim=16, num_layers=1),
    "compact-large": dict(_SHARED, patch_size=(2, 8, 8), num_attention_heads=2, attention_head_dim=24, ffn_dim=64,
                          num_layers=2),
}
DISTIL_RAMP = (0.25, 0.6)  # budget fractions where a young teacher's distillation weight goes 0 -> 1
LR = {"large": 5e-4, "small": 1e-3}  # adaptive.toy.train's rates
RESUME_LR_SCALE = 0.5  # a model that continues (--init, or the shipped one) trains at half, as the shipped Large did
SAVE_EVERY_S = 60.0


@dataclass(frozen=True)
class Recipe:
    """How a Small is made: its config name in ``SMALL_CONFIGS``, whether it is distilled, and the
    noise range it trains on (``sigma_low`` > 0: a noise-level expert that only ever sees
    ``sigma >= sigma_low``, the same clean videos and noise as Large's batch re-noised there)."""

    name: str
    config: str
    distil: bool
    sigma_low: float = 0.0
    keep: tuple[int, ...] = ()  # a pruned Large: these of its blocks (negative: from the end), its lr


RECIPES = {r.name: r for r in (Recipe("scratch", "small", False), Recipe("distil", "small", True),
                                Recipe("deep", "deep", True), Recipe("coarse", "coarse", True),
                                Recipe("coarse-thin", "coarse-thin", True),
                                Recipe("compact", "compact", True),
                                Recipe("compact-expert", "compact", True, sigma_low=0.5),
                                Recipe("mid-expert", "mid", True, sigma_low=0.4),
                                Recipe("fine-expert", "fine", True, sigma_low=0.4),
                                Recipe("pruned", "pruned", True, keep=(0, -1)))}


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs, passed as JSON on its command line."""

    variant: str
    recipes: tuple[str, ...]
    command: str
    work: str
    device: str
    deadline: float  # time.time() at which training stops
    budget_s: float
    batch: int
    seed: int
    threads: int
    init: str | None
    init_shipped: bool
    encoder_steps: int
    encoder_batch: int
    guidance: float
    tiny: bool
    frontier_prompts: int
    frontier_seeds: int
    frontier_steps: int
    frontier_stride: int
    large_config: str = "large"
    freeze_large: bool = False


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on its path, whatever the caller set."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def _build(config: dict[str, Any], seed: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**config)


def _load(folder: Path, config: dict[str, Any], seed: int) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """A model from ``folder`` if it holds one (with its record), else freshly built."""
    model = _build(config, seed)
    if not (folder / "config.json").exists():
        return model, None
    from diffusers import WanTransformer3DModel

    loaded = WanTransformer3DModel.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True,
                                                   use_safetensors=True)
    model.load_state_dict(loaded.state_dict())  # strict: a folder of another config fails here, loudly
    record = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    return model, record


class Trainee:
    """One model in the lockstep loop: weights, EMA, optimiser, loss curve and record."""

    def __init__(self, name: str, model: torch.nn.Module, lr: float, device: str, previous: dict[str, Any] | None,
                 record: dict[str, Any]) -> None:
        self.name, self.lr = name, lr
        self.model = model.to(device).train()
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
        self.previous_steps = int((previous or {}).get("steps", 0))
        history = [*(previous or {}).pop("history", []), previous] if previous else []
        self.record = dict(record, previous_steps=self.previous_steps, history=history)
        self.curve: list[tuple[int, float, float]] = []  # (step, seconds, smoothed loss)
        self.smoothed: float | None = None
        self.initialised = previous is not None

    def step(self, loss: torch.Tensor, step: int, progress: float, log_every: int, seconds: float) -> None:
        # The learning-rate schedule runs on the budget's clock: warm-up over its first 5%, cosine after.
        optimizer_step(self.model, self.ema, self.opt, loss, self.lr, int(1000 * progress), 1000, 0.995)
        value = float(loss.detach())
        self.smoothed = value if self.smoothed is None else 0.98 * self.smoothed + 0.02 * value
        if step % log_every == 0:
            self.curve.append((step, round(seconds, 1), round(self.smoothed, 5)))

    def save(self, out: Path, steps: int, seconds: float) -> None:
        self.record.update(steps=self.previous_steps + steps, final_loss=round(self.smoothed or 0.0, 5),
                           train_seconds=round(seconds, 1), curve=self.curve)
        save_transformer(self.ema, out, self.record)


def _distil_weight(progress: float, teacher_trained: bool) -> float:
    if teacher_trained:
        return 1.0
    lo, hi = DISTIL_RAMP
    return float(np.clip((progress - lo) / (hi - lo), 0.0, 1.0))


def _velocity(model: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return model(x, sigma * NUM_TRAIN_TIMESTEPS, cond, return_dict=False)[0]


def _both(model: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, null: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) velocities in one batched call."""
    out = _velocity(model, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, null.expand_as(cond)]))
    return out[: len(x)], out[len(x):]


def _renoised(x: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor, sigma_low: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch as a noise-level expert above ``sigma_low`` sees it: the same clean videos and noise
    (recovered from ``x`` and the target ``noise - x0``), each sigma mapped affinely from (0, 1] into
    (``sigma_low``, 1]; unchanged for ``sigma_low`` 0."""
    if sigma_low <= 0:
        return x, sigma, target
    s = sigma.view(-1, *[1] * (x.ndim - 1))
    x0, noise = x - s * target, x + (1 - s) * target
    new = sigma_low + (1 - sigma_low) * sigma
    t = new.view_as(s)
    return (1 - t) * x0 + t * noise, new, target


def _stage_initial(settings: WorkerSettings, root: Path) -> None:
    """Copy what this variant starts from into ``root``: an earlier run's folder, or the shipped pair."""
    root.mkdir(parents=True, exist_ok=True)
    source = Path(settings.init) / settings.variant if settings.init else None
    if source is not None and source.exists():
        for item in source.iterdir():
            if item.name.startswith("pair-") or item.name == "frontier":
                continue  # results of the earlier run, not weights
            target = root / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
    elif settings.variant == "grain" and settings.init_shipped and not settings.tiny:
        shutil.copytree(WEIGHTS_DIR / "large", root / "large", dirs_exist_ok=True)
        for name in ("scratch", "distil"):  # the shipped Small is this config; deep starts fresh
            shutil.copytree(WEIGHTS_DIR / "small", root / f"small-{name}", dirs_exist_ok=True)
        for name in ("encoder.safetensors", "encoder.json"):
            shutil.copy2(WEIGHTS_DIR / name, root / name)


def train_variant(settings: WorkerSettings) -> dict[str, Any]:
    """The worker: encoder, then Large and every Small of the variant in lockstep until the deadline."""
    torch.set_num_threads(settings.threads)
    if settings.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    root = Path(settings.work) / settings.variant
    _stage_initial(settings, root)
    encoder = None
    if not (root / "encoder.safetensors").exists():
        # The quality encoder trains in its own process, beside the pair (its data is drawn on the CPU):
        # adaptive.toy.train's own command, so its record says how to remake it.
        command = [sys.executable, "-m", "adaptive.toy.train", "encoder", "--out", str(root), "--data",
                   settings.variant, "--device", settings.device, "--encoder-steps", str(settings.encoder_steps),
                   "--encoder-batch", str(settings.encoder_batch), "--seed", str(settings.seed),
                   "--threads", str(max(1, settings.threads // 2))]
        encoder = subprocess.Popen(command, stdout=open(root / "encoder.log", "w"), stderr=subprocess.STDOUT,
                                   env=_env())
    if settings.tiny:
        configs = {**TINY_CONFIGS, "large": TINY_CONFIGS["compact-large" if settings.large_config == "compact" else "large"]}
    else:
        configs = {**SMALL_CONFIGS, "large": LARGE_CONFIGS[settings.large_config]}
    common = dict(batch=settings.batch, data=settings.variant, device=str(torch.device(settings.device).type),
                  command=settings.command, cfg_dropout=0.1,
                  ema_decay=0.995, sigma_sampling="adaptive.toy.train._training_sigmas (as Large)")
    model, previous = _load(root / "large", configs["large"], settings.seed + 2)
    lr = LR["large"] * (RESUME_LR_SCALE if previous else 1.0)
    large = Trainee("large", model, lr, settings.device, previous,
                    dict(common, size="large", lr=lr, config=configs["large"], large_config=settings.large_config))
    smalls: dict[str, Trainee] = {}
    for name in settings.recipes:
        recipe = RECIPES[name]
        if recipe.keep:  # Large's first and last blocks, then distilled (issue #33): a Small of its own family
            keep = sorted({i % large.model.config.num_layers for i in recipe.keep})
            configs[recipe.config] = dict(configs["large"], num_layers=len(keep))
            model, previous = _load(root / f"small-{name}", configs[recipe.config], settings.seed + 1)
            model = model if previous is not None else pruned_copy(large.model, keep)
            lr = LR["large"] * RESUME_LR_SCALE
        else:
            model, previous = _load(root / f"small-{name}", configs[recipe.config], settings.seed + 1)
            lr = LR["small"] * (RESUME_LR_SCALE if previous else 1.0)
        record = dict(common, size="small", recipe=asdict(recipe), config=configs[recipe.config], lr=lr,
                      guidance=settings.guidance if recipe.distil else None, distil_ramp=DISTIL_RAMP)
        smalls[name] = Trainee(name, model, lr, settings.device, previous, record)
    null = encode_prompts([""]).to(settings.device)
    # New data on a resumed run: the streams are seeded by the steps Large has already seen.
    rng = np.random.default_rng([settings.seed, VARIANTS.index(settings.variant), large.previous_steps])
    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + 7919 * large.previous_steps + 1)
    start, last_save, step = time.time(), time.time(), 0
    budget = max(1.0, settings.deadline - start)
    g = settings.guidance
    # The next batch is drawn on the CPU while the GPU trains on this one (one thread: the same order of
    # random draws as drawing them in the loop).
    prefetch = ThreadPoolExecutor(1)
    draw = lambda: noised_batch(settings.batch, rng, gen, settings.variant, "cpu")  # noqa: E731
    upcoming = prefetch.submit(draw)
    while True:
        now = time.time()
        progress = min(1.0, (now - start) / budget)
        if now >= settings.deadline and step > 0:
            break
        batch = upcoming.result()
        upcoming = prefetch.submit(draw)
        x, sigma, cond, target = (t.to(settings.device, non_blocking=True) for t in batch[:4])
        if not settings.freeze_large:  # frozen: Large only teaches (its EMA), every step goes to the Smalls
            large.step(F.mse_loss(_velocity(large.model, x, sigma, cond), target), step, progress, 25, now - start)
        weight = _distil_weight(progress, large.initialised)
        teachers: dict[float, tuple[torch.Tensor, ...]] = {}  # per sigma range: (x, sigma, target, guided, uncond)
        for name, small in smalls.items():
            recipe = RECIPES[name]
            if recipe.sigma_low not in teachers:
                xs, ss, ts = _renoised(x, sigma, target, recipe.sigma_low)
                teachers[recipe.sigma_low] = (xs, ss, ts)
                if weight > 0 and any(RECIPES[n].distil and RECIPES[n].sigma_low == recipe.sigma_low for n in smalls):
                    with torch.no_grad():  # while the weight is 0 no teacher call is made
                        v_c, v_u = _both(large.ema, xs, ss, cond, null)
                    teachers[recipe.sigma_low] += (v_u + g * (v_c - v_u), v_u)
            xs, ss, ts, *teacher = teachers[recipe.sigma_low]
            if recipe.distil and weight > 0:
                s_c, s_u = _both(small.model, xs, ss, cond, null)
                distil = F.mse_loss(s_u + g * (s_c - s_u), teacher[0]) / g**2 + F.mse_loss(s_u, teacher[1])
                loss = weight * distil + (1 - weight) * F.mse_loss(s_c, ts) if weight < 1 else distil
            else:
                loss = F.mse_loss(_velocity(small.model, xs, ss, cond), ts)
            small.step(loss, step, progress, 25, now - start)
        step += 1
        if step % 100 == 0:
            print(f"{settings.variant} step {step} {time.time() - start:.0f}s large "
                  + ("frozen " if settings.freeze_large else f"{large.smoothed:.4f} ")
                  + " ".join(f"{n} {s.smoothed:.4f}" for n, s in smalls.items()), flush=True)
        if time.time() - last_save > SAVE_EVERY_S:
            _save_all(root, large, smalls, step, time.time() - start, settings.freeze_large)
            last_save = time.time()
    prefetch.shutdown(wait=True, cancel_futures=True)
    seconds = time.time() - start
    _save_all(root, large, smalls, step, seconds, settings.freeze_large)
    encoder_s = 0.0
    if encoder is not None:
        encoder_s = time.time()
        if encoder.wait() != 0:
            raise RuntimeError(f"the encoder's training failed; see {root / 'encoder.log'}")
        encoder_s = time.time() - encoder_s  # waited for it after training
    (root / "trained").write_text(json.dumps({"steps": step, "seconds": round(seconds, 1)}) + "\n")
    print(f"{settings.variant}: {step} lockstep steps in {seconds:.0f} s (then waited {encoder_s:.0f} s for the "
          "encoder)", flush=True)
    return {"variant": settings.variant, "steps": step, "train_seconds": round(seconds, 1),
            "encoder_wait_seconds": round(encoder_s, 1),
            "final_loss": {"large": large.smoothed, **{n: s.smoothed for n, s in smalls.items()}}}


def _save_all(root: Path, large: Trainee, smalls: dict[str, Trainee], step: int, seconds: float,
              freeze_large: bool = False) -> None:
    if not freeze_large:
        large.save(root / "large", step, seconds)
    for name, small in smalls.items():
        small.save(root / f"small-{name}", step, seconds)


def pair_folder(root: Path, recipe: str) -> Path:
    """``root/pair-<recipe>``: the layout ``load_pair`` reads (links to the variant's Large, encoder and
    this Small), so the frontier check loads the candidate like any pair."""
    folder = root / f"pair-{recipe}"
    folder.mkdir(exist_ok=True)
    for link, target in (("large", "../large"), ("small", f"../small-{recipe}"),
                         ("encoder.safetensors", "../encoder.safetensors"), ("encoder.json", "../encoder.json")):
        if not (folder / link).exists():
            (folder / link).symlink_to(target)
    return folder


def check_variant(settings: WorkerSettings) -> None:
    """Every candidate's frontier on a coarse window grid (``benchmarks/pair_triage.py``, one process per
    variant, its pairs one after another); results land in ``<variant>/frontier/pair-<recipe>.json``."""
    root = Path(settings.work) / settings.variant
    out = root / "frontier"
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(BENCH / "pair_triage.py"),
               *(str(pair_folder(root, recipe)) for recipe in settings.recipes),
               "--device", settings.device, "--prompts", str(settings.frontier_prompts), "--seeds",
               str(settings.frontier_seeds), "--steps", str(settings.frontier_steps), "--stride",
               str(settings.frontier_stride), "--guidance", str(settings.guidance), "--out", str(out)]
    with open(out / "log.txt", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), check=False)


def frontier_results(work: Path, variant: str, recipes: tuple[str, ...]) -> dict[str, Any]:
    """``pair_triage.summary`` of every frontier check that finished; the log's end for one that did not."""
    sys.path.insert(0, str(BENCH))
    from pair_triage import summary

    from adaptive.frontier import Frontier

    results: dict[str, Any] = {}
    out = work / variant / "frontier"
    for recipe in recipes:
        try:  # one candidate's failure must not cost the others their results
            divergence = json.loads((out / f"pair-{recipe}.divergence.json").read_text())
            results[recipe] = {**summary(Frontier.load(out / f"pair-{recipe}.json"), divergence["middle"]),
                               "divergence": divergence}
        except Exception as err:
            log = out / "log.txt"
            results[recipe] = {"error": f"{type(err).__name__}: {err}",
                               "log": log.read_text()[-2000:] if log.exists() else None}
    return results


def _worker_main(raw: str) -> None:
    data = json.loads(raw)
    settings = WorkerSettings(**{**data, "recipes": tuple(data["recipes"])})
    root = Path(settings.work) / settings.variant
    record: dict[str, Any] = {"settings": asdict(settings)}
    try:
        record["training"] = train_variant(settings)
    except Exception as err:
        record["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        root.mkdir(parents=True, exist_ok=True)
        (root / "result.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    check_variant(settings)


def _pack(out: Path, name: str, root: Path, members: list[Path]) -> None:
    with tarfile.open(out / name, "w") as tar:
        for member in members:
            if member.exists():
                tar.add(member, arcname=str(member.relative_to(root)), filter=_no_links)


def _no_links(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.issym() or info.name.endswith("/trained") else info


def pack_weights(out: Path, work: Path, variant: str) -> None:
    """``<variant>-large.tar`` (Large, encoder) and ``<variant>-small.tar`` (Smalls, records, frontier)."""
    root = work / variant
    _pack(out, f"{variant}-large.tar", work, [root / "large", root / "encoder.safetensors", root / "encoder.json"])
    smalls = sorted(p for p in root.glob("small-*"))
    _pack(out, f"{variant}-small.tar", work, [*smalls, root / "frontier", root / "result.json"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="at most 8 files land here (the device's $OUT)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one in /tmp)")
    parser.add_argument("--variants", default="grain,texture,multi")
    parser.add_argument("--recipes", default="scratch,distil,deep")
    parser.add_argument("--budget-s", type=float, default=380.0,
                        help="wall seconds from the start to the end of training (start-up included)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, default=None, help="a folder of unpacked tars of an earlier run")
    parser.add_argument("--no-init-shipped", action="store_true",
                        help="train the grain variant's Large from scratch (default: from the shipped Large)")
    parser.add_argument("--encoder-steps", type=int, default=1500)
    parser.add_argument("--encoder-batch", type=int, default=64)
    parser.add_argument("--guidance", type=float, default=GUIDANCE_SCALE)
    parser.add_argument("--frontier-prompts", type=int, default=8)
    parser.add_argument("--frontier-seeds", type=int, default=2)
    parser.add_argument("--frontier-steps", type=int, default=30)
    parser.add_argument("--frontier-stride", type=int, default=3,
                        help="the frontier measures every window whose ends lie on multiples of this")
    parser.add_argument("--frontier-timeout-s", type=float, default=150.0,
                        help="seconds waited for the frontier checks after the budget; then what exists is packed")
    parser.add_argument("--large-config", choices=sorted(LARGE_CONFIGS), default="large",
                        help="Large's config: the shipped pair's, or 'compact' (64 tokens: the CPU pair of issue #25)")
    parser.add_argument("--freeze-large", action="store_true",
                        help="do not train Large (an --init one): it only teaches the distilled Smalls")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per variant (default: the cores shared among the variants); 1 leaves "
                             "a core of a two-core machine free for other work")
    parser.add_argument("--tiny", action="store_true", help="toy widths, for rehearsing on a CPU")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        _worker_main(args.worker)
        return {}
    variants = [v for v in args.variants.split(",") if v]
    recipes = tuple(r for r in args.recipes.split(",") if r)
    unknown = [v for v in variants if v not in VARIANTS] + [r for r in recipes if r not in RECIPES]
    if unknown or not variants or not recipes:
        parser.error(f"unknown or missing variants/recipes {unknown}; variants: {VARIANTS}, recipes: {list(RECIPES)}")
    if len(variants) > 3:
        parser.error("at most 3 variants: 2 tars each, a summary and the logs fill the 8 files that come back")
    started = time.time()
    out = args.out
    work = args.work or Path(tempfile.mkdtemp(prefix="candidates-"))
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 2) // len(variants))
    command = "python training/candidates.py " + " ".join(sys.argv[1:] if argv is None else argv)
    procs = {}
    for variant in variants:
        settings = WorkerSettings(variant, recipes, command, str(work), args.device, started + args.budget_s, args.budget_s,
                                  args.batch, args.seed, threads, str(args.init) if args.init else None,
                                  not args.no_init_shipped, args.encoder_steps, args.encoder_batch, args.guidance, args.tiny,
                                  args.frontier_prompts, args.frontier_seeds, args.frontier_steps,
                                  args.frontier_stride, args.large_config, args.freeze_large)
        log = open(work / f"{variant}.log", "w")
        procs[variant] = (subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--out", str(out),
                                            "--worker", json.dumps(asdict(settings))],
                                           stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                           start_new_session=True), log)
    packed: set[str] = set()
    deadline = started + args.budget_s + args.frontier_timeout_s
    while len(packed) < len(variants) and time.time() < deadline:
        for variant in variants:  # weights come back as soon as they are trained, before any frontier
            if variant not in packed and (work / variant / "trained").exists():
                time.sleep(1.0)
                pack_weights(out, work, variant)
                packed.add(variant)
        if all(p.poll() is not None for p, _ in procs.values()):
            break
        time.sleep(2.0)
    for variant, (proc, log) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:  # the worker's own process group: its frontier checks too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    summary: dict[str, Any] = {"command": command, "device": _device_name(args.device), "torch": torch.__version__,
        "seconds": round(time.time() - started, 1), "variants": {}}
    for variant, (proc, _) in procs.items():
        pack_weights(out, work, variant)  # again: now with the frontier results
        result = work / variant / "result.json"
        summary["variants"][variant] = {"returncode": proc.returncode,
                                        **(json.loads(result.read_text()) if result.exists() else {}),
                                        "frontier": frontier_results(work, variant, recipes)}
    with tarfile.open(out / "logs.tar", "w") as tar:
        for variant in variants:
            if (work / f"{variant}.log").exists():
                tar.add(work / f"{variant}.log", arcname=f"{variant}.log")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps({v: {"returncode": s["returncode"], "training": s.get("training"),
                          "frontier": {r: f.get("error") or {"middle_divergence": f["middle_divergence"],
                                                              **{m: v["winners"] for m, v in f["metrics"].items()}}
                                       for r, f in s.get("frontier", {}).items()}}
                      for v, s in summary["variants"].items()}, indent=1, default=str))
    return summary


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else device


if __name__ == "__main__":
    main()
