"""Plans over a pool inside unmodified diffusers pipelines: guidance only where the plan says (Wan's
separate cond/uncond calls, LTX's batched ones) and Wan 2.2's two experts with a Small between them,
call by call as planned and equal to a hand-written loop; stored profiles of the previous schema."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_ltx, tiny_wan
from test_diffusers import _wan_pipe

from adaptive import Profile, Schedule, sample, sigmas
from adaptive.blend import BlendedTransformer, blend, experts_plan, unblend
from adaptive.schedule import base_of, is_unguided

PROMPT, NULL = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(3)), torch.zeros(1, 6, 32)
LATENTS = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))


def counting(modules: dict[str, torch.nn.Module]) -> list[tuple[str, int]]:
    """Every forward call of the named modules, as (name, batch rows)."""
    calls: list[tuple[str, int]] = []
    for name, module in modules.items():
        module.register_forward_hook(lambda m, args, kwargs, out, name=name: calls.append(
            (name, int((args[0] if args else kwargs["hidden_states"]).shape[0]))), with_kwargs=True)
    return calls


def run(pipe, steps: int = 10, scale: float = 4.0):
    return pipe(prompt_embeds=PROMPT, negative_prompt_embeds=NULL, latents=LATENTS.clone(), height=16, width=16,
                num_frames=5, num_inference_steps=steps, guidance_scale=scale, output_type="latent").frames


def hand_loop(pipe, models: dict[str, torch.nn.Module], plan: Schedule, steps: int = 10, scale: float = 4.0):
    """The calls written out: the plan's model for the step's sigma, guidance only on guided steps."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    x, expected = LATENTS.clone(), []
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            name = plan.model_for(float(scheduler.sigmas[i]))
            model = models[base_of(name)]
            cond = model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=PROMPT, return_dict=False)[0]
            expected.append((base_of(name), 1))
            if not is_unguided(name):
                uncond = model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=NULL, return_dict=False)[0]
                expected.append((base_of(name), 1))
                cond = uncond + scale * (cond - uncond)
            x = scheduler.step(cond, t, x, return_dict=False)[0]
    return x, expected


def test_wan_guidance_interval_skips_the_uncond_call(wan_pair):
    large, small = wan_pair
    pipe = _wan_pipe(large)
    plan = Schedule.lsl(0.85, 0.35).guided_within(0.95, 0.3)
    blend(pipe, small, plan)
    calls = counting({"large": large, "small": small})
    out = run(pipe)
    made = list(calls)
    calls.clear()
    want, expected = hand_loop(pipe, {"large": large, "small": small}, plan)
    assert made == expected  # call by call as planned: one call on unguided steps, two on guided ones
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    names = plan.step_models(pipe.scheduler.sigmas)
    assert {"large", "large:cond", "small"} <= set(names)
    assert pipe.transformer.skipped == sum(is_unguided(n) for n in names)


def test_wan22_experts_with_small_between_and_a_guidance_interval():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    high, low, small = tiny_wan(seed=0), tiny_wan(seed=2), tiny_wan(heads=1, layers=1, seed=1)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=high, transformer_2=low, vae=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), boundary_ratio=0.875)
    experts_only = run(pipe)  # the pipeline's own expert switch
    blend(pipe, None, None, num_inference_steps=10)  # the experts as the pipeline runs them
    assert pipe.transformer is pipe.transformer_2
    torch.testing.assert_close(run(pipe), experts_only, rtol=0, atol=0)

    plan = experts_plan(Schedule.lsl(0.8, 0.45), 0.875).guided_within(0.97, 0.3)
    blend(pipe, small, plan, num_inference_steps=10)
    calls = counting({"high": high, "low": low, "small": small})
    out = run(pipe)
    made = list(calls)
    calls.clear()
    want, expected = hand_loop(pipe, {"high": high, "low": low, "small": small}, plan)
    assert made == expected
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    order = [base_of(n) for n in plan.step_models(pipe.scheduler.sigmas)]
    assert list(dict.fromkeys(order)) == ["high", "low", "small"] and order[-1] == "low"  # high -> small -> low
    unblend(pipe)
    assert pipe.transformer is high and pipe.transformer_2 is low
    with pytest.raises(ValueError, match="no stored pool profile.*calibrate_pool"):  # nothing calibrated: how to
        blend(pipe, small, "auto", num_inference_steps=10)
    with pytest.raises(ValueError, match="two experts takes 'auto'.*online controller is for a Large and Small"):
        blend(pipe, small, "online", num_inference_steps=10)


@pytest.mark.parametrize("steps,shift", [(8, 3.0), (20, 5.0), (30, 8.0), (50, 12.0)])
def test_expert_switch_matches_diffusers_rule(steps, shift):
    """On the grids users run, the plan's expert per step is diffusers' ``t >= boundary_ratio * 1000``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    for ratio in (0.875, 0.9):
        theirs = ["high" if t >= ratio * 1000 else "low" for t in scheduler.timesteps]
        assert experts_plan(None, ratio).step_models(scheduler.sigmas) == theirs


def test_ltx_batched_guidance_runs_the_conditional_half_alone():
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    large, small = tiny_ltx(seed=0), tiny_ltx(seed=1)
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                       transformer=large)
    pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio = 8, 4
    video = torch.randn(1, 8, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    packed = pipe._pack_latents(video, 1, 1)
    prompt, mask, null = torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 5, 16)

    def go():
        return pipe(prompt_embeds=prompt, prompt_attention_mask=mask, negative_prompt_embeds=null,
                    negative_prompt_attention_mask=mask, latents=packed.clone(), height=32, width=32, num_frames=5,
                    num_inference_steps=6, guidance_scale=3.0, output_type="latent").frames

    plan = Schedule.lsl(0.8, 0.35).guided_within(0.9, 0.3)
    blend(pipe, small, plan)
    calls = counting({"large": large, "small": small})
    out = go()
    names = plan.step_models(pipe.scheduler.sigmas)
    assert calls == [(base_of(n), 1 if is_unguided(n) else 2) for n in names]
    assert pipe.transformer.skipped == sum(is_unguided(n) for n in names)
    # the same plan with guidance everywhere differs only through the skipped guidance
    blend(pipe, small, Schedule.lsl(0.8, 0.35))
    assert not torch.allclose(go(), out)
    # hand-written on the run's grid (LTX shifts it by the latent size): the conditional half alone on unguided steps
    grid, timesteps = pipe.scheduler.sigmas.tolist(), pipe.scheduler.timesteps
    x = packed.clone()
    rope = (pipe.vae_temporal_compression_ratio / 25, 8, 8)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            name = names[i]
            model = {"large": large, "small": small}[base_of(name)]

            def call(text):
                return model(hidden_states=x, encoder_hidden_states=text, timestep=t.expand(1),
                             encoder_attention_mask=mask, num_frames=2, height=4, width=4,
                             rope_interpolation_scale=rope, return_dict=False)[0].float()
            v = call(prompt)
            if not is_unguided(name):
                u = call(null)
                v = u + 3.0 * (v - u)
            x = x + (grid[i + 1] - grid[i]) * v
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-5)


def test_unguided_plan_outside_a_pipeline_warns_and_runs_guided(wan_pair):
    large, small = wan_pair
    blended = BlendedTransformer({"large": large, "small": small}, Schedule.large_only().guided_within(0.5, 0.0))
    with pytest.warns(UserWarning, match="does not say which call"):
        blended(hidden_states=LATENTS, timestep=torch.tensor([900.0]), encoder_hidden_states=PROMPT,
                return_dict=False)
    assert blended.skipped == 0


def test_stored_profiles_of_the_previous_schema_load_and_sample_the_same():
    """Every profile shipped before plans over a pool (the shipped profile as it was, kept in
    tests/data): its plan is the Large/Small schedule its fields say, with guidance on every step, and
    sampling with the profile equals sampling with that schedule."""
    from adaptive.toy import load_pair
    from adaptive.toy.pair import prompt_conds, seeded_noise

    files = sorted(Path(__file__).parent.glob("data/*schema[12].json"))
    files += [p for p in sorted(Path("profiles").glob("*.json")) if json.loads(p.read_text())["schema_version"] < 3]
    assert files
    pair, _ = load_pair()
    for path in files:
        data = json.loads(path.read_text())
        profile = Profile.from_json(path.read_text())
        assert profile.guidance == () and data["schema_version"] < 3
        steps = profile.steps
        plan = profile.schedule_for_steps(steps)
        window = data["plan"]
        if window["start"] == window["stop"]:
            assert plan == Schedule.large_only()
        else:
            assert plan.steps_of("small", sigmas(steps, profile.shift)) == list(range(window["start"], window["stop"]))
        noise, cond = seeded_noise([0]), prompt_conds(["a 3 moving up"])[0]
        grid = sigmas(steps, profile.shift)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = sample(pair, noise, grid, profile, check_every=0, **cond)
        b = sample(pair, noise, grid, plan, check_every=0, **cond)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_wan22_plan_found_then_run_by_the_pipeline():
    """The whole path for a Wan 2.2 user: a pool of the pipeline's two experts and a Small (tiny random
    models of the real classes), find_plan places the Small window between the experts on the
    pipeline's grid, and blend runs the found plan call by call."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from adaptive.calibration.segments import window, find_plan
    from adaptive.pool import Pool

    high, low, small = tiny_wan(seed=0), tiny_wan(seed=2), tiny_wan(heads=1, layers=1, seed=1)
    latent = LATENTS[:1]
    pool = Pool.of({"high": high, "low": low, "small": small}, x=latent, encoder_hidden_states=PROMPT)
    assert pool.costs["small"] < pool.costs["high"] == 1.0
    found = find_plan(pool, [{"encoder_hidden_states": PROMPT}], [window("small", replaces=("high", "low"))],
                      num_steps=8, shift=3.0, shape=tuple(latent.shape[1:]), reference=Schedule.experts(0.875),
                      metric=lambda generated, reference: torch.ones(len(generated)), target=0.9,
                      n_trials=4)  # random models: a metric every plan meets, this test is of the path
    assert "small" in found.schedule.models and found.cost < found.reference_cost
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=high, transformer_2=low, vae=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), boundary_ratio=0.875)
    blend(pipe, small, found.schedule, num_inference_steps=8)
    calls = counting({"high": high, "low": low, "small": small})
    run(pipe, steps=8, scale=1.0)  # no guidance: one call per step
    assert [name for name, _ in calls] == found.schedule.step_models(pipe.scheduler.sigmas)
