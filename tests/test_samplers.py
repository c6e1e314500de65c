"""Calibration on the sampler the pipeline runs: UniPC and DPM-Solver++ stepped by their own diffusers
schedulers, history carried across model switches, known answers found by sweeping every plan."""

from __future__ import annotations

import pytest
import torch

from adaptive import ModelPair, Schedule, sample
from adaptive.errors import SigmaGridError
from adaptive.samplers import Sampler, path, sampler_for
from adaptive.toy.exact import SUITE, calibrate_case

MULTISTEP = ("unipc", "dpm++")
CASES = {case.name: case for case in SUITE}


def _wan_unipc(**options):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, **options)


def test_a_sampler_is_named_by_its_scheduler_and_options():
    wan = _wan_unipc()
    assert Sampler.of(wan) == Sampler.of("unipc", 3.0) == Sampler.of({**wan.config, "_class_name": "UniPCMultistepScheduler"})
    assert Sampler.of(wan).signature(30) == "unipc-30-shift3"
    third = Sampler.of(_wan_unipc(solver_order=3))
    assert third.family.startswith("unipc_") and third.signature(30) != "unipc-30-shift3"
    assert third.options == (("solver_order", 3),)
    assert Sampler.of("euler", 3.0).grid(12) == pytest.approx(__import__("adaptive").sigmas(12, 3.0).tolist())
    with pytest.raises(ValueError, match="use_flow_sigmas=True"):
        from diffusers import UniPCMultistepScheduler
        Sampler.of(UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=False))
    with pytest.raises(ValueError, match="is not a flow sampler"):
        from diffusers import FlowMatchHeunDiscreteScheduler
        Sampler.of(FlowMatchHeunDiscreteScheduler())
    with pytest.raises(ValueError, match="disagrees"):
        sampler_for(wan, 5.0)
    assert Sampler.from_dict(third.to_dict()) == third


@pytest.mark.parametrize("name", MULTISTEP)
def test_a_run_restarted_from_its_recorded_steps_continues_exactly(name):
    torch.manual_seed(0)
    a = torch.randn(8, 8) * 0.3
    model = lambda x, s: torch.tanh(x @ a) + s * x  # noqa: E731  (a velocity that depends on x and sigma)
    sampler = Sampler.of(name, 3.0)
    noise = torch.randn(4, 8)
    states, velocities = path(model, noise, sampler.run(10), 0, 10, keep_velocities=True)
    for i in (1, 4, 9):
        run = sampler.run(10).replay(states[:i], velocities[:i])
        again, _ = path(model, states[i], run, i, 10)
        torch.testing.assert_close(again[-1], states[-1], rtol=0, atol=1e-6)
    # a subset of rows replays alone: the scheduler's arithmetic is per row
    rows = torch.tensor([1, 3])
    run = sampler.run(10).replay([s[rows] for s in states[:5]], [v[rows] for v in velocities[:5]])
    torch.testing.assert_close(path(model, states[5][rows], run, 5, 10)[0][-1], states[-1][rows], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", MULTISTEP)
def test_sample_on_a_multistep_sampler_is_the_scheduler_stepped_by_hand(name):
    torch.manual_seed(1)
    a, b = torch.randn(6, 6) * 0.3, torch.randn(6, 6) * 0.3
    col = lambda s: torch.as_tensor(s, dtype=torch.float32).reshape(-1, 1)  # noqa: E731  (a float, or one per row)
    large, small = (lambda x, s: torch.tanh(x @ a) - x * col(s)), (lambda x, s: torch.tanh(x @ b) - x * col(s))
    sampler = Sampler.of(name, 3.0)
    schedule = Schedule.lsl(0.9, 0.5)
    noise = torch.randn(3, 6)
    ours, why = sample(ModelPair(large, small), noise, 12, schedule, sampler=sampler, return_decisions=True)
    scheduler = sampler.scheduler()
    scheduler.set_timesteps(12)
    x = noise.clone()
    chosen = []
    for i, t in enumerate(scheduler.timesteps):  # what a pipeline does: route by the step, ask about t / 1000
        name_i = schedule.model_for(float(scheduler.sigmas[i]))
        chosen.append(name_i)
        v = {"large": large, "small": small}[name_i](x, float(t) / 1000)
        x = scheduler.step(v, t, x, return_dict=False)[0]
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-6)
    assert why.models[0] == chosen and "small" in chosen
    with pytest.raises(SigmaGridError, match="pass the step count"):
        sample(ModelPair(large, small), noise, __import__("adaptive").sigmas(12, 3.0), schedule, sampler=sampler)


@pytest.mark.parametrize("name", MULTISTEP)
def test_the_sweep_on_a_multistep_sampler_is_what_sample_gives(name):
    case = CASES["blend-12"]
    sampler = Sampler.of(name, case.shift)
    pair = case.pair()
    noise = case.noise().float()
    reference = sample(pair, noise, case.steps, None, sampler=sampler)
    for steps, start, stop in ((12, 3, 7), (8, 0, 2), (9, 0, 0)):
        grid = sampler.grid(steps)
        plan = Schedule.from_steps(grid, ["small" if start <= i < stop else "large" for i in range(steps)])
        out = sample(pair, noise, steps, plan, sampler=sampler)
        quality = float((1 - (out - reference).norm(dim=-1) / reference.norm(dim=-1)).mean())
        assert case.quality_of((steps, start, stop), sampler) == pytest.approx(quality, abs=1e-5)


@pytest.mark.parametrize("name", MULTISTEP)
@pytest.mark.parametrize("case_name, answer", [("blend-12", "window"), ("small-first-20", "window"),
                                               ("bad-small-20", "fewer steps"), ("none-12", "large")])
def test_calibration_on_a_multistep_sampler_finds_the_known_answer(name, case_name, answer):
    case = CASES[case_name]
    sampler = Sampler.of(name, case.shift)
    best = case.optimum(sampler=sampler)
    profile = calibrate_case(case, sampler=sampler)
    plan = profile.plan
    assert profile.sampler == sampler.signature(case.steps)
    assert case.quality_of(plan, sampler) >= case.target
    assert plan.cost <= 1.15 * best.cost + 1e-9, (plan, best)
    if answer == "window":
        assert plan.start < plan.stop and plan.cost < 0.6
    elif answer == "fewer steps":
        assert plan.steps < case.steps and plan.cost < 0.9
    else:
        assert plan.is_large_only and plan.steps == case.steps


def test_a_sampler_with_options_of_its_own_finds_its_own_profile(tmp_path):
    from adaptive import Profile, ProfileStore

    listed = Sampler.of(_wan_unipc(disable_corrector=[0]))  # a list option: hashable, a family of its own
    assert listed.options == (("disable_corrector", (0,)),) and hash(listed) and listed.family.startswith("unipc_")
    assert Sampler.from_dict(__import__("json").loads(__import__("json").dumps(listed.to_dict()))) == listed
    store = ProfileStore(tmp_path)
    for steps in (6, 8):  # "6" sorts before "8": the exact key must win, not the first name
        store.save(Profile(pair_fingerprint="f", sampler=listed.signature(steps), num_steps=steps, shift=3.0,
                           sigma_in=0.8, sigma_out=0.3))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        found = store.for_sigmas("f", listed.grid(8), listed.family, listed.signature(8))
    assert found.sampler == listed.signature(8)


def test_the_guidance_interval_is_searched_on_the_multistep_sampler_and_judged_as_it_runs():
    """The guidance phase steps UniPC itself (history replayed across restarts): on an exact guided case it
    lands on the swept optimum of UniPC's own table, and each interval's recorded quality is what a
    straight UniPC run of that plan gives."""
    from adaptive.toy.exact import GuidedCase, calibrate_guided_case

    case = GuidedCase("guided-8", 8, 3.0, 0.96, scale=3.0, seeds=tuple(range(4)))
    sampler = Sampler.of("unipc", case.shift)
    best = case.optimum(sampler=sampler)
    profile = calibrate_guided_case(case, sampler=sampler, budget=None, n_trials=8)
    assert profile.sampler == sampler.signature(case.steps) and profile.guidance
    for interval in profile.guidance:
        plan = (interval.steps, interval.start, interval.stop)
        assert interval.quality == pytest.approx(case.quality_of(plan, sampler), abs=1e-4)
    plan = case.recommended(profile)
    assert case.quality_of(plan, sampler) >= case.target
    assert case.cost(plan[0], plan[2] - plan[1]) <= best.cost + 1e-9, (plan, best)


def test_a_pool_plan_is_found_and_judged_on_the_multistep_sampler():
    """find_plan on UniPC: the analytic guidance window of its docstring, and the found plan's quality is
    what sample() gives on the same sampler and noise; the record keeps the sampler (its grid is UniPC's)."""
    from adaptive.calibration.segments import GUIDANCE, FoundPlan, find_plan
    from adaptive.metrics import LatentStructure
    from adaptive.pool import Pool
    from adaptive.probing import batch_conditions

    bump = lambda s: ((torch.as_tensor(s) > 0.3) & (torch.as_tensor(s) <= 0.7)).float().view(-1, 1)  # noqa: E731
    model = lambda x, s, c: -x + c * bump(s)  # noqa: E731  (guidance matters in (0.3, 0.7] only)
    pool = Pool.of(ModelPair(model, model).guided(4.0, {"c": torch.zeros(1, 1)}), costs={"large": 1, "small": 1})
    cond = {"c": torch.ones(1, 1)}
    sampler = Sampler.of("unipc", 3.0)
    found = find_plan(pool, [cond], [GUIDANCE], num_steps=10, shape=(4,), target=0.999, n_trials=6, sampler=sampler)
    assert found.sampler == sampler and found.grid == pytest.approx(sampler.grid(10))
    start, stop = found.windows["guidance"]
    assert 0 < start < stop < 10 and found.cost < found.reference_cost
    assert FoundPlan.from_dict(found.to_dict()) == found
    noise, batched = batch_conditions([cond], (0, 1), (4,), torch.device("cpu"))
    reference = sample(pool, noise, 10, Schedule.large_only(), sampler=sampler, **batched)
    ours = sample(pool, noise, 10, found.schedule, sampler=sampler, **batched)
    assert float(LatentStructure()(ours, reference).mean()) == pytest.approx(found.quality, abs=1e-4)
