"""Plans over a pool stored and found like a pair's profile: calibrate_pool on an analytic pool whose
safe segments are known, "auto" for a pool sampler and for an unmodified Wan 2.2 pipeline, and a
profile of another pool refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tiny_wan
from test_pool import closeness, off_outside

from adaptive import GuidedDenoiser, Pool, Schedule, as_denoiser, calibrate_pool, sample, sigmas
from adaptive.errors import CalibrationError, PairMismatchError
from adaptive.pool_profiles import check_pool_profile, key_of, pool_path, read_pool_profile

_high, _low, _small = off_outside(0.875 - 1e-9, 1.0), off_outside(0.0, 0.875), off_outside(0.4, 0.8)
_narrow = off_outside(0.5, 0.7)


def high(x, s, **_):
    return _high(x, s)


def low(x, s, **_):
    return _low(x, s)


def small(x, s, **_):  # exact in (0.4, 0.8]: its safe segment
    return _small(x, s)


def other_small(x, s, **_):  # exact in (0.5, 0.7] only
    return _narrow(x, s)


COSTS = {"high": 1.0, "low": 1.0, "small": 0.2}


def test_a_pool_plan_is_calibrated_stored_and_run_by_auto(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    pool = Pool({"high": high, "low": low, "small": small}, COSTS)
    profile = calibrate_pool(pool, [{}], num_steps=20, shift=3.0, shape=(8,), boundary_ratio=0.875, metric=closeness,
                             target=0.99, n_trials=8, name="analytic")
    grid = sigmas(20, 3.0).tolist()
    want = ["high" if s >= 0.875 else "small" if 0.4 < s <= 0.8 else "low" for s in grid[:-1]]
    assert profile.schedule().step_models(grid) == want  # the known safe segment, high -> low -> small -> low
    assert profile.sampler == "euler-20-shift3" and "of the compute of" in profile.decision
    stored = read_pool_profile(pool_path(__import__("adaptive").ProfileStore(tmp_path), profile.pool_key,
                                         profile.sampler, Schedule.experts(0.875)))
    assert stored.to_dict() == profile.to_dict()
    noise = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        auto = sample(pool, noise, sigmas(20, 3.0), "auto")
    torch.testing.assert_close(auto, sample(pool, noise, sigmas(20, 3.0), profile.schedule()), rtol=0, atol=0)
    other = Pool({"high": high, "low": low, "small": other_small}, COSTS)
    with pytest.raises(CalibrationError, match="calibrate_pool"):
        sample(other, noise, sigmas(20, 3.0), "auto")  # nothing stored for these members: said how to
    with pytest.raises(PairMismatchError, match="'analytic'.*other members"):
        check_pool_profile(profile, key_of(other)[0])
    with pytest.raises(CalibrationError, match="boundary_ratio"):
        calibrate_pool(pool, [{}], num_steps=8, shape=(8,), n_trials=1, save=False)


def test_wan22_auto_runs_the_stored_pool_plan_call_by_call(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    prompt, null = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(3)), torch.zeros(1, 6, 32)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    big, low_expert, little = tiny_wan(seed=0), tiny_wan(seed=2), tiny_wan(heads=1, layers=1, seed=1)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=big, transformer_2=low_expert, vae=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), boundary_ratio=0.875)
    # The two calls of the README: calibrate the pipeline's pool once, then blend with "auto".
    profile = calibrate_pool(pipe, [{"encoder_hidden_states": prompt}], small=little, guidance_scale=4.0,
                             guidance_scale_2=3.0, uncond={"encoder_hidden_states": null}, num_steps=8,
                             shape=tuple(latents.shape[1:]), target=0.9, n_trials=4,
                             metric=lambda generated, reference: torch.ones(len(generated)),  # a path test
                             store=tmp_path)
    assert "small" in {m.split(":")[0] for m in profile.schedule().models}
    assert profile.reference == Schedule.experts(0.875) and profile.sampler == "euler-8-shift3"
    guided = lambda model, scale: GuidedDenoiser(as_denoiser(model), scale, {"encoder_hidden_states": null})  # noqa: E731
    by_hand = Pool.of({"high": guided(big, 4.0), "low": guided(low_expert, 3.0), "small": guided(little, 3.0)},
                      x=latents, encoder_hidden_states=prompt)
    assert key_of(by_hand)[0] == profile.pool_key  # the same pool built by hand has the same key

    def run():
        return pipe(prompt_embeds=prompt, negative_prompt_embeds=null, latents=latents.clone(), height=16, width=16,
                    num_frames=5, num_inference_steps=8, guidance_scale=4.0, guidance_scale_2=3.0,
                    output_type="latent").frames

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        from adaptive.blend import blend, unblend
        blend(pipe, little, "auto", num_inference_steps=8, guidance_scale=4.0, guidance_scale_2=3.0, store=tmp_path)
    auto = run()
    assert pipe.transformer.decisions.models[0] == profile.schedule().step_models(pipe.scheduler.sigmas)
    blend(pipe, little, profile.schedule(), num_inference_steps=8)
    torch.testing.assert_close(auto, run(), rtol=0, atol=0)  # what find_plan's plan run by hand gives
    unblend(pipe)
    with pytest.raises(CalibrationError, match="calibrate_pool"):  # other guidance scales: another pool
        blend(pipe, little, "auto", num_inference_steps=8, guidance_scale=5.0, store=tmp_path)
    with pytest.raises(PairMismatchError, match="other members or guidance"):
        blend(pipe, tiny_wan(heads=1, layers=1, seed=7), profile, num_inference_steps=8, guidance_scale=4.0,
              guidance_scale_2=3.0)
