"""Moving-digit videos and the shared text encoder of the embedded pair.

Everything is generated from scikit-learn's bundled ``load_digits`` images: no download. A video is
one 8x8 digit glyph, upscaled, moving with constant velocity and bouncing on a square canvas. The
prompt names the digit and the initial direction; the start position and speed are *not* in the
prompt, so each prompt has many valid videos (a multimodal target, as real text-to-video is).

Data variants: ``"plain"`` is the above. ``"grain"`` adds fine detail that only the last,
low-noise denoising steps can decide, as texture is in real video: each ink pixel of each frame is
dimmed by a per-video contrast with probability 1/2 (film grain on the glyph). The grain is not in
the prompt, and a sampler that stops refining early leaves it averaged out (grey and smooth), which
the quality encoder reads back as a lower grain contrast.

Two candidate variants for a pair whose flow bends (issue #18: detail at many scales, settled at
many noise levels, none of it in the prompt): ``"texture"`` puts the glyph, its ink modulated by a
power-law (1/f amplitude) texture of per-video contrast (the "grain" value), on a power-law
background that scrolls with its own unprompted velocity; ``"multi"`` adds to that a second, dimmer,
unprompted digit moving on its own path. Both keep 1x8x32x32 (the same token count).

Example:
    >>> import numpy as np
    >>> batch = make_videos(4, np.random.default_rng(0))
    >>> batch.videos.shape
    (4, 1, 8, 32, 32)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CANVAS = 32
FRAMES = 8
GLYPH = 12
TEXT_DIM = 32
TEXT_TOKENS = 4
DIGIT_WORDS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
DIRECTIONS: dict[str, tuple[int, int]] = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
    "up-left": (-1, -1),
    "up-right": (-1, 1),
    "down-left": (1, -1),
    "down-right": (1, 1),
}
DIRECTION_NAMES = tuple(DIRECTIONS)
VOCAB = ("<pad>", "a", "moving", *DIGIT_WORDS, *DIRECTION_NAMES)
_TEXT_SEED = 20251231
_SPLIT_SEED = 7
VARIANTS = ("plain", "grain", "texture", "multi")
GRAINED = ("grain", "texture", "multi")  # variants with a per-video grain/texture contrast to read
GRAIN_CONTRAST = (0.3, 0.6)
BACKGROUND_CONTRAST = (0.15, 0.4)
_FIELD = 64  # the background's torus, larger than the canvas so it can scroll


@dataclass(frozen=True)
class VideoBatch:
    """Videos in [-1, 1] with shape (n, 1, frames, canvas, canvas), their labels and grain contrast
    (0 for the plain variant)."""

    videos: np.ndarray
    digits: np.ndarray
    directions: np.ndarray
    grain: np.ndarray

    @property
    def prompts(self) -> list[str]:
        return [prompt_for(int(d), int(m)) for d, m in zip(self.digits, self.directions)]


def prompt_for(digit: int, direction: int) -> str:
    """The prompt text for a digit (0-9) and a direction index into ``DIRECTION_NAMES``."""
    return f"a {digit} moving {DIRECTION_NAMES[direction]}"


HELDOUT_SEED_START = 10_000  # noise seeds from here on are never used to calibrate or check training


def calibration_prompts(n: int) -> list[str]:
    """The prompts ``flowblend calibrate`` (and demo, sample, frontier) use by default:
    ``prompt_for(i % 10, 3 * i % 8)`` for ``i < n``. Digit and direction always share their parity,
    so these are 40 of the 80 prompts; :func:`heldout_prompts` draws from the other 40.

    Example:
        >>> calibration_prompts(3)
        ['a 0 moving up', 'a 1 moving right', 'a 2 moving down-left']
    """
    return [prompt_for(i % 10, (3 * i) % len(DIRECTION_NAMES)) for i in range(n)]


def heldout_prompts(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` prompts no default calibration uses (digit and direction of different parity: see
    :func:`calibration_prompts`) and ``n`` noise seeds from :data:`HELDOUT_SEED_START` on, drawn by
    ``seed``: the videos to judge a calibrated plan on.

    Example:
        >>> prompts, seeds = heldout_prompts(2)
        >>> seeds, set(prompts).isdisjoint(calibration_prompts(80))
        ([10000, 10001], True)
    """
    pool = [(d, m) for d in range(10) for m in range(len(DIRECTION_NAMES)) if d % 2 != m % 2]
    order = np.random.default_rng(seed).permutation(len(pool))
    prompts = [prompt_for(*pool[order[i % len(pool)]]) for i in range(n)]
    return prompts, list(range(HELDOUT_SEED_START + seed * n, HELDOUT_SEED_START + (seed + 1) * n))


def check_prompts(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` prompts of the research bench's checks (any digit and direction, drawn from a fixed stream),
    with their digits and direction indices: the training-check and pair-triage set, never the
    acceptance set of :func:`heldout_prompts`.

    Example:
        >>> prompts, digits, directions = check_prompts(3)
        >>> len(prompts), [parse_prompt(p)[0] for p in prompts] == list(digits)
        (3, True)
    """
    rng = np.random.default_rng(2024)
    digits, directions = rng.integers(0, 10, n), rng.integers(0, len(DIRECTION_NAMES), n)
    return [prompt_for(int(d), int(m)) for d, m in zip(digits, directions)], digits, directions


def parse_prompt(prompt: str) -> tuple[int, int]:
    """(digit, direction index) of a prompt made by :func:`prompt_for`; ValueError otherwise."""
    words = prompt.strip().split()
    if len(words) != 4 or words[0] != "a" or words[2] != "moving" or words[1] not in DIGIT_WORDS \
            or words[3] not in DIRECTIONS:
        raise ValueError(
            f"prompt {prompt!r} is not in the toy vocabulary; write it as 'a <0-9> moving <direction>' "
            f"with direction one of {', '.join(DIRECTION_NAMES)}"
        )
    return int(words[1]), DIRECTION_NAMES.index(words[3])


@functools.lru_cache(maxsize=1)
def _embedding_table() -> np.ndarray:
    # A fixed random table stands in for a frozen text encoder (Wan's umT5): shared by both models,
    # never trained, reproducible on any machine because numpy's PCG64 stream is stable.
    table = np.random.default_rng(_TEXT_SEED).standard_normal((len(VOCAB), TEXT_DIM)).astype(np.float32)
    table[0] = 0.0
    return table


def encode_prompts(prompts: list[str] | str) -> torch.Tensor:
    """Embed prompts as (batch, 4, 32) float32 tokens; ``""`` is the null prompt (all zeros).

    Example:
        >>> encode_prompts(["a 7 moving up-left", ""]).shape
        torch.Size([2, 4, 32])
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    table = _embedding_table()
    out: np.ndarray = np.zeros((len(prompts), TEXT_TOKENS, TEXT_DIM), dtype=np.float32)
    for row, prompt in enumerate(prompts):
        if prompt.strip() == "":
            continue
        parse_prompt(prompt)
        out[row] = table[[VOCAB.index(w) for w in prompt.split()]]
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=2)
def glyphs(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Upscaled digit glyphs in [0, 1] and their labels for ``split`` in {"train", "heldout"}."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits.images))
    cut = int(0.8 * len(order))
    index = order[:cut] if split == "train" else order[cut:]
    images = np.stack([zoom(digits.images[i] / 16.0, GLYPH / 8, order=1) for i in index])
    return np.clip(images, 0.0, 1.0).astype(np.float32), digits.target[index]


def _trajectory(start: float, velocity: float, span: int) -> np.ndarray:
    # Reflecting walls: unfold the straight path onto a triangle wave over [0, span].
    raw = start + velocity * np.arange(FRAMES)
    period = 2 * span
    folded = np.mod(raw, period)
    return np.where(folded > span, period - folded, folded)


def power_law_field(n: int, size: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """``n`` periodic random fields ``(n, size, size)`` in [0, 1] whose Fourier amplitude falls as
    ``|f|^-exponent`` (1.0: the 1/f amplitude of natural images, detail at every scale)."""
    freq_y, freq_x = np.fft.fftfreq(size), np.fft.rfftfreq(size)
    radius = np.hypot(freq_y[:, None], freq_x[None, :])
    radius[0, 0] = np.inf  # no mean: normalised below
    white = torch.from_numpy(rng.standard_normal((n, size, size), dtype=np.float32))
    filtered = torch.fft.rfft2(white) * torch.from_numpy((radius ** -float(exponent)).astype(np.float32))
    field = torch.fft.irfft2(filtered, s=(size, size)).numpy()
    low, high = field.min(axis=(1, 2), keepdims=True), field.max(axis=(1, 2), keepdims=True)
    return ((field - low) / np.maximum(high - low, 1e-12)).astype(np.float32)


def _textured(videos: np.ndarray, ink: np.ndarray, rng: np.random.Generator,
              contrast_range: tuple[float, float]) -> np.ndarray:
    """Texture the ink (``ink`` > 0 where a glyph is) and lay the canvas on a scrolling background;
    returns the per-video texture contrast."""
    n = len(videos)
    contrast = rng.uniform(*contrast_range, n).astype(np.float32)
    texture = power_law_field(n, CANVAS, rng, exponent=0.5)  # flatter: grain at every size on the ink
    videos *= 1.0 - contrast[:, None, None, None] * texture[:, None]
    background = power_law_field(n, _FIELD, rng) * rng.uniform(*BACKGROUND_CONTRAST, n)[:, None, None].astype(np.float32)
    velocity = rng.integers(-2, 3, (n, 2))
    offset = rng.integers(0, _FIELD, (n, 2))
    rows = (offset[:, None, 0, None] + velocity[:, None, 0, None] * np.arange(FRAMES)[None, :, None]
            + np.arange(CANVAS)[None, None, :]) % _FIELD  # (n, frames, canvas)
    cols = (offset[:, None, 1, None] + velocity[:, None, 1, None] * np.arange(FRAMES)[None, :, None]
            + np.arange(CANVAS)[None, None, :]) % _FIELD
    scrolled = background[np.arange(n)[:, None, None, None], rows[:, :, :, None], cols[:, :, None, :]]
    np.copyto(videos, np.maximum(videos, scrolled), where=ink <= 0)
    return contrast


def variant_of(weights: Path | str) -> str:
    """The data variant a weights folder was trained on (its ``encoder.json`` says; "plain" if silent)."""
    record = Path(weights) / "encoder.json"
    variant = json.loads(record.read_text()).get("data", "plain") if record.exists() else "plain"
    if variant not in VARIANTS:
        raise ValueError(f"{record} names data variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    return str(variant)


def make_videos(
    n: int,
    rng: np.random.Generator,
    split: str = "train",
    digits: np.ndarray | None = None,
    directions: np.ndarray | None = None,
    variant: str = "plain",
    grain_contrast: tuple[float, float] = GRAIN_CONTRAST,
) -> VideoBatch:
    """Draw ``n`` videos; ``digits``/``directions`` fix the labels, otherwise they are random.

    ``variant`` is one of ``VARIANTS``; ``grain_contrast`` is the range the grain, texture and multi
    variants draw each video's grain/texture contrast from (the quality encoder trains on a wider
    one, down to none).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown data variant {variant!r}; use one of {', '.join(VARIANTS)}")
    images, labels = glyphs(split)
    digits = rng.integers(0, 10, n) if digits is None else np.asarray(digits)
    directions = rng.integers(0, len(DIRECTIONS), n) if directions is None else np.asarray(directions)
    span = CANVAS - GLYPH
    videos: np.ndarray = np.zeros((n, FRAMES, CANVAS, CANVAS), dtype=np.float32)
    for k in range(n):
        pool = np.flatnonzero(labels == digits[k])
        _draw(videos[k], images[rng.choice(pool)] * rng.uniform(0.7, 1.0), DIRECTIONS[DIRECTION_NAMES[directions[k]]],
              rng, span)
    contrast: np.ndarray = np.zeros(n, dtype=np.float32)
    if variant == "grain":
        # Drawn after the glyphs so the plain part of a grain video is the plain video of the same rng.
        contrast = rng.uniform(*grain_contrast, n).astype(np.float32)
        dimmed = rng.random(videos.shape, dtype=np.float32) < 0.5
        videos *= 1.0 - contrast[:, None, None, None] * dimmed
    elif variant in ("texture", "multi"):
        if variant == "multi":  # a dimmer second digit of any class, moving any way: not in the prompt
            for k in range(n):
                direction = DIRECTIONS[DIRECTION_NAMES[rng.integers(0, len(DIRECTIONS))]]
                _draw(videos[k], images[rng.integers(0, len(images))] * rng.uniform(0.35, 0.55), direction, rng, span)
        contrast = _textured(videos, videos.copy(), rng, grain_contrast)
    return VideoBatch(videos[:, None] * 2.0 - 1.0, np.asarray(digits), np.asarray(directions), contrast)


def _draw(video: np.ndarray, glyph: np.ndarray, direction: tuple[int, int], rng: np.random.Generator,
          span: int) -> None:
    """Move ``glyph`` across the frames of ``video`` (in place) at a random speed and start."""
    dy, dx = direction
    speed = rng.uniform(1.0, 2.5)
    ys = _trajectory(rng.uniform(0, span), dy * speed, span)
    xs = _trajectory(rng.uniform(0, span), dx * speed, span)
    for f in range(FRAMES):
        y, x = int(np.rint(ys[f])), int(np.rint(xs[f]))
        video[f, y:y + GLYPH, x:x + GLYPH] = np.maximum(video[f, y:y + GLYPH, x:x + GLYPH], glyph)
