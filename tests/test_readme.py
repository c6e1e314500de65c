"""Every Python snippet of the README runs as written, in order, in one namespace: the objects a user
brings (their models, prompts' embeddings, noise, pipelines) are tiny random diffusers models built here."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_wan

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _pipeline(two_experts: bool):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    extra = {"transformer_2": tiny_wan(seed=2), "boundary_ratio": 0.875} if two_experts else {}
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=tiny_wan(seed=0), vae=vae, scheduler=unipc,
                       **extra)


def test_the_readme_has_its_snippets():
    assert len(snippets()) >= 5  # library, pools, per prompt, drop-in, Wan 2.2


@pytest.mark.slow
def test_every_readme_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path / "profiles"))
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    pipe, pipe22 = _pipeline(two_experts=False), _pipeline(two_experts=True)
    namespace = {
        "large": pipe.transformer, "small": tiny_wan(heads=1, layers=1, seed=1), "pipe": pipe, "pipe22": pipe22,
        "negative_embeds": torch.zeros(1, 6, 32), "prompt_embeds": torch.randn(1, 6, 32, generator=g),
        "calibration_embeds": torch.randn(2, 6, 32, generator=g), "noise": torch.randn(1, 16, 2, 2, 2, generator=g),
        "latent_shape": (16, 2, 2, 2), "video_size": {"height": 16, "width": 16, "num_frames": 5},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the snippets' own warnings (tiny random models) are not what is tested
        for i, code in enumerate(snippets()):
            exec(compile(code, f"README.md snippet {i}", "exec"), namespace)
    assert namespace["x"].shape == namespace["noise"].shape and torch.isfinite(namespace["x"]).all()
    from adaptive.blend import BlendedTransformer

    assert isinstance(pipe22.transformer, BlendedTransformer)  # Wan 2.2 blended with its stored pool plan
    assert len(namespace["video"][0]) == 5  # the drop-in's video: five frames
