"""The embedded pairs: moving-digit videos, Wan-architecture Large/Small models trained on a CPU and
shipped as safetensors, and a quality harness. Runs on a CPU with no downloads.

``PAIRS`` names them and ``load_pair(name)`` loads one (``load_pair()``: :data:`DEFAULT_PAIR`).
``heldout_prompts(n)`` draws prompts and seeds that no default calibration uses."""

from adaptive.toy.data import (
    DIRECTION_NAMES,
    HELDOUT_SEED_START,
    calibration_prompts,
    encode_prompts,
    heldout_prompts,
    make_videos,
    parse_prompt,
    prompt_for,
)
from adaptive.toy.pair import (
    DEFAULT_PAIR,
    GUIDANCE_SCALE,
    PAIRS,
    PairSpec,
    NUM_STEPS,
    PAIR_NAME,
    SHIFT,
    WEIGHTS_DIR,
    generate,
    load_pair,
    load_transformers,
    pair_spec,
    prompt_conds,
    seeded_noise,
)

__all__ = [
    "DEFAULT_PAIR", "DIRECTION_NAMES", "GUIDANCE_SCALE", "HELDOUT_SEED_START", "PAIRS", "PairSpec", "calibration_prompts",
    "heldout_prompts", "pair_spec", "NUM_STEPS", "PAIR_NAME", "SHIFT", "WEIGHTS_DIR", "encode_prompts",
    "generate", "load_pair", "load_transformers", "make_videos", "parse_prompt", "prompt_conds", "prompt_for",
    "seeded_noise",
]
