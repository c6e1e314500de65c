"""The drop-in inside real, unmodified diffusers pipelines with tiny random models built here."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tiny_ltx, tiny_wan

from adaptive import GuidedDenoiser, ModelPair, PairMismatchError, Schedule, TransformerDenoiser, sample, sigmas
from adaptive.blend import BlendedTransformer, blend, unblend


def _wan_pipe(large):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=large, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def _run_wan(pipe, latents, prompt, null, steps=8):
    return pipe(prompt_embeds=prompt, negative_prompt_embeds=null, latents=latents.clone(), height=16, width=16,
                num_frames=5, num_inference_steps=steps, guidance_scale=4.0, output_type="latent").frames


def test_wan_blend_equals_hand_written_loop(wan_pair):
    large, small = wan_pair
    pipe = _wan_pipe(large)
    schedule = Schedule.lsl(0.9, 0.4)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prompt, null = torch.randn(1, 6, 32), torch.zeros(1, 6, 32)
    blend(pipe, small, schedule)
    out = _run_wan(pipe, latents, prompt, null)

    # The same calls, written out: the transformer the schedule names, CFG, the scheduler's step.
    scheduler = pipe.scheduler
    scheduler.set_timesteps(8)
    x = latents.clone()
    chosen = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            name = schedule.model_for(float(t) / 1000)
            chosen.append(name)
            model = {"large": large, "small": small}[name]
            cond = model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=prompt, return_dict=False)[0]
            uncond = model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=null, return_dict=False)[0]
            x = scheduler.step(uncond + 4.0 * (cond - uncond), t, x, return_dict=False)[0]
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    assert [name for _, name in pipe.transformer.trace[::2]] == chosen == schedule.step_models(scheduler.sigmas)
    assert "small" in chosen and chosen[0] == "large" and chosen[-1] == "large"

    # Our own sampler over the contract gives the same video (up to float rounding).
    pair = ModelPair(large, small).guided(4.0, {"encoder_hidden_states": null}, batched=False)
    ours = sample(pair, latents, scheduler.sigmas, schedule, encoder_hidden_states=prompt)
    torch.testing.assert_close(ours, out, rtol=1e-4, atol=1e-5)


def test_unblend_restores_the_large_transformer(wan_pair):
    large, small = wan_pair
    pipe = _wan_pipe(large)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    prompt, null = torch.randn(1, 6, 32), torch.zeros(1, 6, 32)
    reference = _run_wan(pipe, latents, prompt, null, steps=4)
    blend(pipe, small, Schedule.lsl(1.0, 0.0))
    assert isinstance(pipe.transformer, BlendedTransformer)
    assert pipe.transformer.config.in_channels == 16 and pipe.transformer.dtype == torch.float32
    blended = _run_wan(pipe, latents, prompt, null, steps=4)
    assert not torch.equal(blended, reference)
    blend(pipe, small, Schedule.large_only())  # re-blending replaces, never nests
    assert isinstance(pipe.transformer.transformers["large"], type(large))
    unblend(pipe)
    assert pipe.transformer is large
    torch.testing.assert_close(_run_wan(pipe, latents, prompt, null, steps=4), reference, rtol=0, atol=0)


def test_blend_rejects_an_incompatible_small_model(wan_pair):
    large, _ = wan_pair
    pipe = _wan_pipe(large)
    with pytest.raises(PairMismatchError, match="in_channels"):
        blend(pipe, tiny_wan(in_channels=8), Schedule.lsl(0.8, 0.3))
    with pytest.raises(PairMismatchError, match="family"):
        blend(pipe, tiny_ltx(in_channels=16), Schedule.lsl(0.8, 0.3))


def test_ltx_blend_and_adapter():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline

    large, small = tiny_ltx(heads=2, layers=2, seed=0), tiny_ltx(heads=2, layers=1, seed=1)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False,
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                       transformer=large)
    schedule = Schedule.lsl(0.8, 0.35)
    blend(pipe, small, schedule)
    frames, height, width = 2, 8, 8  # latent grid of 5 frames, 32x32 pixels
    video = torch.randn(1, 8, frames, height, width, generator=torch.Generator().manual_seed(0))
    packed = pipe._pack_latents(video, 1, 1)
    prompt, mask = torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.long)
    null = torch.zeros(1, 5, 16)
    out = pipe(prompt_embeds=prompt, prompt_attention_mask=mask, negative_prompt_embeds=null,
               negative_prompt_attention_mask=mask, latents=packed, height=32, width=32, num_frames=5,
               num_inference_steps=6, guidance_scale=3.0, output_type="latent").frames
    grid = pipe.scheduler.sigmas
    assert [name for _, name in pipe.transformer.trace] == schedule.step_models(grid)

    # The adapter packs (B, C, F, H, W) itself; with the pipeline's rope scale it reproduces the run.
    rope = (pipe.vae_temporal_compression_ratio / 25, pipe.vae_spatial_compression_ratio,
            pipe.vae_spatial_compression_ratio)
    assert TransformerDenoiser(large).layout == "ltx"
    null_cond = {"encoder_hidden_states": null, "encoder_attention_mask": mask}
    pair = ModelPair(large, small).guided(3.0, null_cond, batched=True)
    ours = sample(pair, video, grid, schedule, encoder_hidden_states=prompt, encoder_attention_mask=mask,
                  rope_interpolation_scale=rope)
    torch.testing.assert_close(pipe._pack_latents(ours, 1, 1), out, rtol=1e-4, atol=1e-5)


def test_guided_pair_keeps_cfg_halves_on_one_model():
    seen = []

    def recorder(tag):
        def model(x, sigma, c):
            seen.append((tag, x.shape[0]))
            return x * c
        return model

    pair = ModelPair(recorder("large"), recorder("small")).guided(2.0, {"c": torch.zeros(1, 1)})
    sample(pair, torch.ones(3, 1), torch.tensor([1.0, 0.5, 0.0]), Schedule.large_first(0.7), c=torch.ones(3, 1))
    sampling_calls = [call for call in seen if call[1] == 6]  # the rest is the pair's one-row dry run
    assert sampling_calls == [("large", 6), ("small", 6)]


def test_blend_auto_uses_the_stored_profile(wan_pair, tmp_path):
    from adaptive import CalibrationError, Profile, ProfileStore, fingerprint

    large, small = wan_pair
    pipe = _wan_pipe(large)
    with pytest.raises(CalibrationError, match="flowblend calibrate"):
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    pair = ModelPair(large, small).guided(4.0)
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(pair), sampler="euler-8-shift3", num_steps=8,
                                        shift=3.0, sigma_in=0.9, sigma_out=0.4))
    blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    assert pipe.transformer.schedule == Schedule.lsl(0.9, 0.4)
    with pytest.raises(CalibrationError, match="per_prompt=True"):  # this profile has no controller
        blend(pipe, small, "online", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(pair), sampler="euler-8-shift3", num_steps=8,
                                        shift=3.0, sigma_in=0.9, sigma_out=0.4,
                                        controller={"threshold": 0.5, "sigma_out": 0.4}))
    blend(pipe, small, "online", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    assert pipe.transformer.controller_config.threshold == 0.5 and len(pipe.transformer.grid) == 9
    # A controller that failed its validation at calibration is not run: the profile's plan is, said aloud.
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(pair), sampler="euler-8-shift3", num_steps=8,
                                        shift=3.0, sigma_in=0.9, sigma_out=0.4,
                                        controller={"threshold": 0.5, "fallback": "it does not pay"}), force=True)
    with pytest.warns(UserWarning, match="not used \\(it does not pay\\)"):
        blend(pipe, small, "online", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    assert pipe.transformer.controller_config is None and pipe.transformer.schedule == Schedule.lsl(0.9, 0.4)
    # A profile whose frontier found fewer steps enough: the pipeline still runs its 8, and says so.
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(pair), sampler="euler-8-shift3", num_steps=8,
                                        shift=3.0, sigma_in=0.9, sigma_out=0.4,
                                        plan={"steps": 5, "start": 0, "stop": 0, "sigma_in": 0.0, "sigma_out": 0.0,
                                              "quality": 0.97, "cost": 0.625}), force=True)  # drops the controller
    with pytest.warns(UserWarning, match="cheaper plan meets the quality target: Large with 5 of 8 steps"):
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    assert pipe.transformer.schedule == Schedule.lsl(0.9, 0.4)  # the best 8-step window
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 5 steps is this profile's own plan: no "other grid" warning
        blend(pipe, small, "auto", num_inference_steps=5, guidance_scale=4.0, store=tmp_path)
    assert pipe.transformer.schedule == Schedule.large_only()


def test_wan_online_blend_keeps_cfg_calls_together_and_matches_the_plan(wan_pair):
    from adaptive.controller import ControllerConfig

    large, small = wan_pair
    pipe = _wan_pipe(large)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prompt, null = torch.randn(1, 6, 32), torch.zeros(1, 6, 32)
    small_calls = []
    handle = small.register_forward_hook(lambda *args: small_calls.append(1))
    # A threshold every divergence meets: hand over as soon as allowed, return at sigma 0.4.
    config = ControllerConfig(threshold=1e6, sigma_out=0.4, sigma_in_max=0.95, probe_budget=3)
    blend(pipe, small, config, num_inference_steps=8)
    out = _run_wan(pipe, latents, prompt, null)
    handle.remove()
    decisions = pipe.transformer.decisions
    plan = decisions.models[0]
    trace = pipe.transformer.trace
    assert [name for _, name in trace[::2]] == [name for _, name in trace[1::2]] == plan  # cond and uncond together
    assert "small" in plan and plan[0] == "large" and plan[-1] == "large"
    assert decisions.extra_small_calls[0] <= 3
    assert len(small_calls) == 2 * (plan.count("small") + decisions.extra_small_calls[0])
    # The video is the one the plan gives when written out as a fixed schedule.
    blend(pipe, small, Schedule.from_steps(pipe.scheduler.sigmas, plan))
    torch.testing.assert_close(_run_wan(pipe, latents, prompt, null), out, rtol=0, atol=0)
    # A second run starts a fresh controller.
    blend(pipe, small, config, num_inference_steps=8)
    _run_wan(pipe, latents, prompt, null)
    _run_wan(pipe, latents, prompt, null)
    assert pipe.transformer.decisions.models[0] == plan


def test_wan_online_blend_runs_the_validated_span_and_its_checks(wan_pair):
    """The pipeline drop-in makes the decisions the sampler makes (issue #20's rule): hand over on the
    raw probe, Small for ``small_span`` steps, then a check step (Large, with Small probed beside it)
    that sends the batch back to Large when the divergence is above ``monitor_threshold``."""
    from adaptive.controller import ControllerConfig

    large, small = wan_pair
    pipe = _wan_pipe(large)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prompt, null = torch.randn(1, 6, 32), torch.zeros(1, 6, 32)
    # First the probes alone (a threshold nothing meets), to place a threshold the divergence crosses
    # downwards: a hand-over needs a probe above it first (one below from the start opened unseen).
    blend(pipe, small, ControllerConfig(threshold=0.0, smoothing=1.0, probe_budget=4), num_inference_steps=8)
    _run_wan(pipe, latents, prompt, null)
    values = [p[2] for p in pipe.transformer.decisions.probes[0]]
    k = next(i for i in range(1, len(values)) if values[i] < max(values[:i]))
    small_calls = []
    handle = small.register_forward_hook(lambda *args: small_calls.append(1))
    config = ControllerConfig(threshold=values[k], smoothing=1.0, probe_budget=4, small_span=2,
                              monitor_every=2, monitor_threshold=0.0, large_probe_budget=2)
    blend(pipe, small, config, num_inference_steps=8)
    out = _run_wan(pipe, latents, prompt, null)
    handle.remove()
    d = pipe.transformer.decisions
    plan, h = d.models[0], d.hand_in[0]
    assert h == k + 1 and plan == ["large"] * h + ["small", "small"] + ["large"] * (8 - h - 2), d.summary()
    assert [m[0] for m in d.monitors[0]] == [h + 2] and d.back[0] == h + 2 and "check" in d.reason[0]
    assert len(small_calls) == 2 * (plan.count("small") + d.extra_small_calls[0])  # CFG: two calls each
    blend(pipe, small, Schedule.from_steps(pipe.scheduler.sigmas, plan))
    torch.testing.assert_close(_run_wan(pipe, latents, prompt, null), out, rtol=0, atol=0)


def test_small_on_its_own_device_dtype_or_offloaded_and_compiled(wan_pair):
    from adaptive import fingerprint

    large, _ = wan_pair
    noise = torch.randn(2, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    cond = {"encoder_hidden_states": torch.randn(2, 6, 32)}
    null = {"encoder_hidden_states": torch.zeros(1, 6, 32)}
    schedule, grid = Schedule.lsl(0.9, 0.3), sigmas(6, 3.0)

    def fresh_pair():  # each variant changes its Small module in place, so each gets its own copy
        return ModelPair(large, tiny_wan(heads=1, layers=1, seed=1)).guided(4.0, null)

    pair = fresh_pair()
    reference = sample(pair, noise, grid, schedule, **cond)
    offloaded = fresh_pair().placed("small", "cpu", offload=True)
    assert fingerprint(offloaded) == fingerprint(pair)  # where a model runs is not part of what it is
    torch.testing.assert_close(sample(offloaded, noise, grid, schedule, **cond), reference)
    compiled = ModelPair(tiny_wan(heads=2, layers=2, seed=0), tiny_wan(heads=1, layers=1, seed=1)).guided(4.0, null)
    compiled.compile(backend="eager")  # dynamo graph capture; inductor is the default on a GPU
    torch.testing.assert_close(sample(compiled, noise, grid, schedule, **cond), reference)
    double = fresh_pair().placed("small", "cpu", dtype=torch.float64)
    assert next(double.modules()["small"].parameters()).dtype == torch.float64
    assert fingerprint(double) != fingerprint(pair)  # a dtype change is a different model
    out = sample(double, noise, grid, schedule, **cond)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


FLOW_SOLVERS = ["unipc", "dpm++"]


def _flow_solver(kind):
    """Wan's default scheduler (UniPC on flow sigmas) and DPM-Solver++ on flow sigmas, shift 3."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if kind == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                       algorithm_type="dpmsolver++")


def _solver_pipe(large, kind):
    pipe = _wan_pipe(large)
    pipe.scheduler = _flow_solver(kind)
    return pipe


def _record_calls(large, small):
    """Forward hooks on the real transformers: (model, timestep) of every call that actually ran."""
    calls = []
    handles = [model.register_forward_pre_hook(
        lambda module, args, kwargs, name=name: calls.append((name, float(kwargs["timestep"].reshape(-1)[0]))),
        with_kwargs=True) for name, model in (("large", large), ("small", small))]
    return calls, handles


def _ran_per_step(calls, timesteps):
    """Which models ran at each step, by matching each call's timestep to the scheduler's."""
    steps = [[] for _ in timesteps]
    for name, t in calls:
        steps[[float(s) for s in timesteps].index(t)].append(name)
    return steps


@pytest.mark.parametrize("kind", FLOW_SOLVERS)
def test_fixed_schedule_on_flow_solvers_runs_the_steps_of_their_own_grid(wan_pair, kind):
    large, small = wan_pair
    pipe = _solver_pipe(large, kind)
    reference = _flow_solver(kind)
    reference.set_timesteps(8)
    grid, timesteps = reference.sigmas.tolist(), reference.timesteps.tolist()
    assert grid[1] < 0.99  # not Euler's shift-1 grid (1, 0.875, ...) nor its shift-3 one
    # These solvers cast timesteps to int: step k's timestep / 1000 lies below its sigma. Put Small's
    # entry boundary between the two, so reading sigma from the truncated timestep picks Small.
    k = next(i for i in range(1, 8) if grid[i] * 1000 - timesteps[i] > 0.05)
    schedule = Schedule.lsl((grid[k] + timesteps[k] / 1000) / 2, 0.35)
    plan = schedule.step_models(grid)
    assert plan[k] == "large" and schedule.model_for(timesteps[k] / 1000) == "small" and "small" in plan
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prompt, null = torch.randn(1, 6, 32), torch.zeros(1, 6, 32)
    for steps in (8, None):  # the grid from blend's copy of the scheduler, or read while the pipeline runs
        blend(pipe, small, schedule, num_inference_steps=steps)
        calls, handles = _record_calls(large, small)
        _run_wan(pipe, latents, prompt, null)
        for handle in handles:
            handle.remove()
        trace = pipe.transformer.trace
        assert [name for _, name in trace[::2]] == [name for _, name in trace[1::2]] == plan
        assert _ran_per_step(calls, pipe.scheduler.timesteps) == [[name, name] for name in plan]
        assert pipe.transformer.decisions.models[0] == plan and len(pipe.transformer.decisions.grid) == 9


@pytest.mark.parametrize("kind", FLOW_SOLVERS)
def test_online_controller_on_flow_solvers_decides_every_step_that_ran(wan_pair, kind):
    from adaptive.controller import ControllerConfig

    large, small = wan_pair
    pipe = _solver_pipe(large, kind)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prompt, null = torch.randn(1, 6, 32), torch.zeros(1, 6, 32)
    config = ControllerConfig(threshold=1e6, sigma_out=0.4, sigma_in_max=0.95, probe_budget=3)
    blend(pipe, small, config, num_inference_steps=8)
    calls, handles = _record_calls(large, small)
    out = _run_wan(pipe, latents, prompt, null)
    for handle in handles:
        handle.remove()
    assert pipe.transformer.grid == pipe.scheduler.sigmas.tolist()  # blend's grid is the one the solver ran
    decisions, trace = pipe.transformer.decisions, pipe.transformer.trace
    plan = decisions.models[0]
    assert len(plan) == 8 and decisions.grid == pipe.scheduler.sigmas.tolist()
    assert [name for _, name in trace[::2]] == [name for _, name in trace[1::2]] == plan
    assert "small" in plan and plan[0] == "large" and plan[-1] == "large"
    # Every call that ran: the step's model for cond and uncond, plus Small's probes on probe steps.
    probed = {step for step, *_ in decisions.probes[0]}
    expected = [[name, name] + (["small", "small"] if i in probed else []) for i, name in enumerate(plan)]
    assert [sorted(ran) for ran in _ran_per_step(calls, pipe.scheduler.timesteps)] == \
        [sorted(names) for names in expected]
    # The video is the one the plan gives when written out as a fixed schedule on the solver's grid.
    blend(pipe, small, Schedule.from_steps(pipe.scheduler.sigmas, plan))
    torch.testing.assert_close(_run_wan(pipe, latents, prompt, null), out, rtol=0, atol=0)


def test_auto_looks_the_profile_up_by_the_solvers_shift_and_says_it_was_calibrated_with_euler(wan_pair, tmp_path):
    import warnings

    from adaptive import Profile, ProfileStore, fingerprint

    large, small = wan_pair
    key = fingerprint(ModelPair(large, small).guided(4.0))
    store = ProfileStore(tmp_path)
    for shift, window in ((1.0, (0.6, 0.2)), (3.0, (0.9, 0.4))):
        store.save(Profile(pair_fingerprint=key, sampler=f"euler-8-shift{shift:g}", num_steps=8, shift=shift,
                           sigma_in=window[0], sigma_out=window[1]))
    pipe = _solver_pipe(large, "unipc")  # flow_shift=3.0
    with pytest.warns(UserWarning, match=r"calibrated with the Euler sampler for euler-8-shift3.*"
                                         r"UniPCMultistepScheduler over 8 steps"):
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    assert pipe.transformer.schedule == Schedule.lsl(0.9, 0.4)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    _run_wan(pipe, latents, torch.randn(1, 6, 32), torch.zeros(1, 6, 32))
    plan = Schedule.lsl(0.9, 0.4).step_models(pipe.scheduler.sigmas)  # the boundaries, by sigma, on UniPC's grid
    assert pipe.transformer.decisions.models[0] == plan == [name for _, name in pipe.transformer.trace[::2]]
    euler = _wan_pipe(large)  # Euler, shift 3: the grid the profile was calibrated on, so nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blend(euler, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)


@pytest.mark.parametrize("kind", FLOW_SOLVERS)
def test_a_profile_of_the_pipelines_own_scheduler_runs_there_as_calibration_judged_it(wan_pair, tmp_path, kind):
    from adaptive import Profile, ProfileStore, calibrate, fingerprint
    from adaptive.calibration import Evaluator
    from adaptive.detect import boundaries_from_steps
    from adaptive.probing import run_probe
    from adaptive.samplers import Sampler

    large, small = wan_pair
    pipe = _solver_pipe(large, kind)
    sampler = Sampler.of(pipe.scheduler)
    prompts = [torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(s)) for s in (5, 6)]
    null = torch.zeros(1, 6, 32)
    pair = ModelPair(large, small).guided(4.0, {"encoder_hidden_states": null})
    assert fingerprint(pair) == fingerprint(ModelPair(large, small).guided(4.0))  # the key blend() looks up

    # Calibrated on the pipeline's scheduler, then "auto": found with no warning, run as the profile says.
    profile = calibrate(pair, [{"encoder_hidden_states": p} for p in prompts], num_steps=8, seeds=[0, 1],
                        shape=(16, 2, 2, 2), sampler=pipe.scheduler, n_trials=4, store=tmp_path, progress=False,
                        search_steps=False, quality_target=0.8)
    assert profile.sampler == sampler.signature(8) == f"{'dpmpp' if kind == 'dpm++' else kind}-8-shift3"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    _run_wan(pipe, latents, prompts[0], null)
    plan = profile.schedule().step_models(pipe.scheduler.sigmas)
    assert pipe.transformer.decisions.models[0] == plan == [name for _, name in pipe.transformer.trace[::2]]
    assert any(m.split(":")[0] == "small" for m in plan)  # a window met the (low) target on these random models

    # A window across the multistep history: the pipeline's video is the one calibration judged.
    _, reference = run_probe(pair, [{"encoder_hidden_states": prompts[0]}], 8, [0], shape=(16, 2, 2, 2),
                             progress=False, sampler=sampler)
    judged = []
    Evaluator(pair, reference, lambda x, target: judged.append(x) or torch.ones(len(x)), 0.5).qualities(2, 5)
    window = boundaries_from_steps(reference.grid, 2, 5)
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(pair), sampler=sampler.signature(8),
                                        num_steps=8, shift=3.0, sigma_in=window.sigma_in,
                                        sigma_out=window.sigma_out), force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    calls, handles = _record_calls(large, small)
    out = _run_wan(pipe, reference.states[0], prompts[0], null)
    for handle in handles:
        handle.remove()
    expected = ["large"] * 2 + ["small"] * 3 + ["large"] * 3
    assert [name for _, name in pipe.transformer.trace[::2]] == expected
    assert _ran_per_step(calls, pipe.scheduler.timesteps) == [[name, name] for name in expected]
    torch.testing.assert_close(out, judged[0], rtol=1e-4, atol=1e-4)


def test_a_multistep_pipeline_with_only_an_euler_profile_says_so_in_one_line(wan_pair, tmp_path):
    from adaptive import Profile, ProfileStore, fingerprint

    large, small = wan_pair
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(ModelPair(large, small).guided(4.0)),
                                        sampler="euler-8-shift3", num_steps=8, shift=3.0, sigma_in=0.9, sigma_out=0.4))
    pipe = _solver_pipe(large, "unipc")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, store=tmp_path)
    messages = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "euler-8-shift3" in messages[0] and "--sampler unipc" in messages[0]
    assert pipe.transformer.schedule == Schedule.lsl(0.9, 0.4)  # run by sigma on UniPC's grid, as the README says
