"""Issue #26: hardening, round 2 — problems a hostile user found from a fresh clone, each test failing
on the code before its fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_ltx, tiny_wan

from adaptive import Schedule, sigmas
from adaptive.blend import blend


# Item 4: a boundary on a grid point picks the same steps however the grid is stored -----------------

LINEAR_10 = [1 - i / 10 for i in range(11)]


@pytest.mark.parametrize("grid", [
    torch.tensor(LINEAR_10, dtype=torch.float32), torch.tensor(LINEAR_10, dtype=torch.float64), LINEAR_10,
    np.asarray(LINEAR_10, dtype=np.float32).tolist(), [t / 1000 for t in (1000, 900, 800, 700, 600, 500, 400, 300,
                                                                             200, 100, 0)],
], ids=["float32", "float64", "list", "float32-list", "timesteps"])
def test_a_boundary_on_a_grid_point_picks_the_same_steps_on_every_grid(grid):
    """A step belongs to the stage containing its start sigma; a boundary within 1e-5 of a grid sigma
    counts as that sigma: lsl(0.8, 0.3) runs Small on steps 2-6 (sigma 0.8 .. 0.4) on every grid."""
    assert Schedule.lsl(0.8, 0.3).small_steps(grid) == [2, 3, 4, 5, 6]
    assert Schedule.small_first(0.5).small_steps(grid) == [0, 1, 2, 3, 4]
    assert Schedule.large_first(0.5).steps_of("large", grid) == [0, 1, 2, 3, 4]


def test_the_ltx_pipeline_runs_small_on_the_steps_small_steps_names():
    """LTXPipeline hands linspace(1, 0.1) sigmas to the scheduler as float32 timesteps (800, 700, ...):
    the drop-in runs Small on steps 2-6 for lsl(0.8, 0.3), as ``small_steps`` says (it ran 3-7)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    large, small = tiny_ltx(heads=2, layers=1, seed=0), tiny_ltx(heads=1, layers=1, seed=1)
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                       transformer=large)
    schedule = Schedule.lsl(0.8, 0.3)
    blend(pipe, small, schedule)
    latents = torch.randn(1, 2 * 2 * 2, 8, generator=torch.Generator().manual_seed(0))
    prompt, mask = torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe(prompt_embeds=prompt, prompt_attention_mask=mask, latents=latents, height=64, width=64, num_frames=9,
             num_inference_steps=10, guidance_scale=1.0, output_type="latent")
    ran = [i for i, (_, name) in enumerate(pipe.transformer.trace) if name == "small"]
    assert ran == [2, 3, 4, 5, 6] == schedule.small_steps(pipe.scheduler.sigmas)


def test_the_wan_pipeline_runs_small_on_boundaries_written_as_decimals():
    """Boundaries written as the decimals a user reads off the grid (float32 sigmas printed to six
    digits) pick the steps of those grid points in a WanPipeline, as ``small_steps`` does on its grid."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    large, small = tiny_wan(heads=2, layers=1, seed=0), tiny_wan(heads=1, layers=1, seed=1)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=large, vae=None, scheduler=scheduler)
    scheduler.set_timesteps(10)
    grid = scheduler.sigmas
    schedule = Schedule.lsl(round(float(grid[2]), 6), round(float(grid[7]), 6))
    blend(pipe, small, schedule)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prompt = torch.randn(1, 6, 32)
    pipe(prompt_embeds=prompt, latents=latents, height=16, width=16, num_frames=5, num_inference_steps=10,
         guidance_scale=1.0, output_type="latent")
    ran = [i for i, (_, name) in enumerate(pipe.transformer.trace) if name == "small"]
    assert ran == [2, 3, 4, 5, 6] == schedule.small_steps(grid) == schedule.small_steps(grid.double().tolist())
