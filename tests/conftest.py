"""Shared fixtures: tiny random diffusers models built locally (no hub), analytic velocity fields."""

from __future__ import annotations

import os

import pytest
import torch

# `make test` runs the suite on pytest-xdist workers (one per core): each worker then takes its share of
# the cores, so two workers do not fight over the same two.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(int(os.environ.get("ADAPTIVE_TEST_THREADS",
                                         max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))))


def tiny_wan(heads: int = 2, layers: int = 2, in_channels: int = 16, text_dim: int = 32, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=12, in_channels=in_channels,
        out_channels=in_channels, text_dim=text_dim, freq_dim=32, ffn_dim=32, num_layers=layers,
        rope_max_seq_len=32,
    ).eval()


def tiny_ltx(heads: int = 2, layers: int = 1, in_channels: int = 8, seed: int = 0):
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=in_channels, out_channels=in_channels, patch_size=1, patch_size_t=1,
        num_attention_heads=heads, attention_head_dim=8, cross_attention_dim=heads * 8, num_layers=layers,
        caption_channels=16,
    ).eval()


def gaussian_velocity(mu: float, std: float):
    """Exact flow-matching velocity E[noise - x0 | x_sigma = x] for data N(mu, std^2), noise N(0, 1)."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        var = (1 - s) ** 2 * std**2 + s**2
        cov = s - (1 - s) * std**2
        return -mu + cov / var * (x - (1 - s) * mu)

    return velocity


@pytest.fixture
def wan_pair():
    return tiny_wan(heads=2, layers=2, seed=0), tiny_wan(heads=1, layers=1, seed=1)
