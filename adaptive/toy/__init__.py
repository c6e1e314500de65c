"""The embedded default pair: moving-digit videos, Wan-architecture Large/Small models trained here
and shipped as safetensors, and a quality harness. Runs on a CPU with no downloads."""

from adaptive.toy.data import DIRECTION_NAMES, encode_prompts, make_videos, parse_prompt, prompt_for
from adaptive.toy.pair import (
    GUIDANCE_SCALE,
    NUM_STEPS,
    PAIR_NAME,
    SHIFT,
    WEIGHTS_DIR,
    generate,
    load_pair,
    load_transformers,
    prompt_conds,
    seeded_noise,
)

__all__ = [
    "DIRECTION_NAMES", "GUIDANCE_SCALE", "NUM_STEPS", "PAIR_NAME", "SHIFT", "WEIGHTS_DIR", "encode_prompts",
    "generate", "load_pair", "load_transformers", "make_videos", "parse_prompt", "prompt_conds", "prompt_for",
    "seeded_noise",
]
