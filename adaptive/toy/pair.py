"""Load the embedded Large/Small pair and generate moving-digit videos with it.

Example:
    >>> from adaptive import Schedule
    >>> from adaptive.toy import load_pair, generate
    >>> pair, encode = load_pair()
    >>> videos = generate(pair, ["a 7 moving up-left"], seeds=[0], num_steps=4)
    >>> tuple(videos.shape)
    (1, 1, 8, 32, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptive.metrics import StructuralSimilarity, WorstOf
from adaptive.pair import ModelPair
from adaptive.samplers import Sampler
from adaptive.sampling import SAMPLERS, sample, sigmas
from adaptive.toy.data import encode_prompts, variant_of
from adaptive.toy.models import SAMPLE_SHAPE, WEIGHTS_DIR

PAIR_NAME = "toy-moving-digits"
NUM_STEPS = 30
SHIFT = 3.0
GUIDANCE_SCALE = 4.0


@dataclass(frozen=True)
class PairSpec:
    """One embedded pair: its name (``--pair NAME``), weights folder, what it shows, and the command
    that retrains it."""

    name: str
    weights: Path
    summary: str
    retrain: str


PAIRS: dict[str, PairSpec] = {
    PAIR_NAME: PairSpec(
        PAIR_NAME, WEIGHTS_DIR,
        "one grainy digit on black; 256-token Large (6.1 M parameters), a Small at 0.11 of its FLOPs: a pair "
        "where fewer Large steps pay", "python -m adaptive.toy.train all --data grain"),
}
DEFAULT_PAIR = PAIR_NAME  # load_pair() with no name


def pair_spec(pair: str | Path | None = None) -> PairSpec:
    """The :class:`PairSpec` of an embedded pair's name (None: :data:`DEFAULT_PAIR`) or of a weights
    folder (``large/``, ``small/``, ``encoder.safetensors``), named after the folder."""
    if pair is None:
        return PAIRS[DEFAULT_PAIR]
    if isinstance(pair, str) and pair in PAIRS:
        return PAIRS[pair]
    folder = Path(pair)
    if not folder.is_dir():
        raise ValueError(f"{str(pair)!r} is neither an embedded pair ({', '.join(PAIRS)}) nor a weights folder")
    return PairSpec(folder.name, folder, f"the pair in {folder}", "")


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"no trained weights at {path}; train them with "
                             f"`python -m adaptive.toy.train all --out {path.parent}` or reinstall the package")


def load_transformers(weights: Path | str | None = None, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The Large and Small ``WanTransformer3DModel`` of an embedded pair (a name in :data:`PAIRS`,
    None: :data:`DEFAULT_PAIR`) or of a weights folder, via diffusers' own ``from_pretrained`` with
    ``local_files_only`` (the call a user makes for Wan)."""
    from diffusers import WanTransformer3DModel

    root = pair_spec(weights).weights
    models = []
    for size in ("large", "small"):
        if not (root / size / "config.json").exists():
            raise _missing(root / size)
        model = WanTransformer3DModel.from_pretrained(root / size, torch_dtype=dtype, local_files_only=True,
                                                      use_safetensors=True)
        models.append(model.to(device).eval().requires_grad_(False))
    return models[0], models[1]


def pair_harness(pair: Path | str | None = None):
    """The quality :class:`~adaptive.toy.harness.Harness` of an embedded pair (a name in :data:`PAIRS`, None:
    :data:`DEFAULT_PAIR`) or a weights folder: its own encoder, judging against real videos of its own data.

    Example:
        >>> pair_harness().variant
        'grain'
    """
    from adaptive.toy.harness import Harness, load_encoder

    root = pair_spec(pair).weights
    return Harness(load_encoder(root / "encoder.safetensors"), variant=variant_of(root))


def load_pair(pair: Path | str | None = None, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, guidance_scale: float = GUIDANCE_SCALE
              ) -> tuple[ModelPair, Callable[[list[str]], torch.Tensor]]:
    """An embedded pair with classifier-free guidance, and the shared text encoder.

    ``pair`` is a name in :data:`PAIRS` (None: :data:`DEFAULT_PAIR`, today ``"toy-moving-digits"``, a pair
    where Large with fewer steps pays, not a blend) or a folder of weights.

    The pair's calibration metric is the worse, per video, of the toy video encoder's feature
    similarity (same content) and per-frame SSIM (same structure): the pooled features alone scored
    visibly smeared and torn blends 0.95, SSIM scores them about 0.86 (README, "The quality metric").

    Conditioning for a prompt is ``{"encoder_hidden_states": encode([prompt])}``.
    """
    spec = pair_spec(pair)
    large, small = load_transformers(spec.weights, device, dtype)
    root = spec.weights
    features = pair_harness(root).similarity  # the pair's own DINO-similarity analogue
    metric = WorstOf(features, StructuralSimilarity(data_range=2.0))
    name = PAIR_NAME if root == WEIGHTS_DIR else spec.name
    model_pair = ModelPair(large, small, sample_shape=SAMPLE_SHAPE, name=name, metric=metric)
    null = encode_prompts([""]).to(device)
    return model_pair.guided(guidance_scale, {"encoder_hidden_states": null}), encode_prompts


def prompt_conds(prompts: Sequence[str], device: str | torch.device = "cpu") -> list[dict[str, torch.Tensor]]:
    """One conditioning dict per prompt, the form :func:`adaptive.calibrate` takes."""
    embeddings = encode_prompts(list(prompts)).to(device)
    return [{"encoder_hidden_states": embeddings[i:i + 1]} for i in range(len(prompts))]


def seeded_noise(seeds: Sequence[int], shape: Sequence[int] = SAMPLE_SHAPE,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """Noise for each seed from ``torch.Generator().manual_seed(seed)``, stacked: reproducible anywhere."""
    rows = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device)


@torch.no_grad()
def generate(pair: ModelPair, prompts: Sequence[str], seeds: Sequence[int], schedule: Any = None,
             num_steps: int = NUM_STEPS, shift: float = SHIFT, sampler: str = "euler") -> torch.Tensor:
    """Videos ``(n, 1, frames, 32, 32)`` in about [-1, 1] for prompt ``i`` with noise seed ``seeds[i]``,
    sampled with ``sampler``: ``"euler"``, ``"heun"``, ``"unipc"`` or ``"dpm++"`` at ``shift``."""
    if len(prompts) != len(seeds):
        raise ValueError(f"need one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds")
    device = next(iter(m for m in pair.modules().values() if m is not None)).device
    noise = seeded_noise(seeds, device=device)
    cond = encode_prompts(list(prompts)).to(device)
    if sampler in SAMPLERS:
        return SAMPLERS[sampler](pair, noise, sigmas(num_steps, shift), schedule, encoder_hidden_states=cond)
    return sample(pair, noise, num_steps, schedule, sampler=Sampler.of(sampler, shift), encoder_hidden_states=cond)
