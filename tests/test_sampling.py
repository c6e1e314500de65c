from __future__ import annotations

import pytest
import torch
from conftest import gaussian_velocity, tiny_wan

from adaptive import (
    GuidedDenoiser,
    Meter,
    ModelPair,
    NonFiniteVelocityError,
    PairMismatchError,
    Schedule,
    ScheduleError,
    sample,
    sample_heun,
    sigmas,
)


@pytest.mark.parametrize("steps", [1, 4, 30, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_sigmas_equal_diffusers(steps, shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(sigmas(steps, shift=shift), scheduler.sigmas.float(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("sampler, steps", [(sample, 400), (sample_heun, 60)])
def test_gaussian_field_reaches_the_data_distribution(sampler, steps):
    mu, std = 1.5, 0.4
    field = gaussian_velocity(mu, std)
    noise = torch.randn(40000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sampler(ModelPair(field, field), noise, sigmas(steps))
    assert abs(x.mean().item() - mu) < 0.01
    assert abs(x.std().item() - std) < 0.01


def test_heun_is_more_accurate_than_euler_at_few_steps():
    field = gaussian_velocity(1.0, 0.2)
    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pair = ModelPair(field, field)
    euler = sample(pair, noise, sigmas(8))
    heun = sample_heun(pair, noise, sigmas(8))
    assert abs(heun.std().item() - 0.2) < abs(euler.std().item() - 0.2)


def test_identical_models_give_bit_identical_results():
    model = tiny_wan(seed=3)
    x = torch.randn(2, 16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    cond = {"encoder_hidden_states": torch.randn(2, 3, 32)}
    one = sample(ModelPair(model, model), x, sigmas(6, shift=3.0), Schedule.large_only(), **cond)
    blended = sample(ModelPair(model, model), x, sigmas(6, shift=3.0), Schedule.lsl(0.9, 0.3), **cond)
    assert torch.equal(one, blended)


@pytest.mark.parametrize("sampler", [sample, sample_heun])
def test_small_calls_happen_exactly_at_small_steps(sampler):
    grid = sigmas(20, shift=3.0)
    schedule = Schedule.lsl(0.85, 0.4)
    seen: list[tuple[int, str]] = []
    meter = Meter(ModelPair(lambda x, s: -x, lambda x, s: -x))
    sampler(meter.pair, torch.ones(3, 2), grid, schedule, callback=lambda info: seen.append((info["i"], info["model_name"])))
    small = [i for i, name in seen if name == "small"]
    assert small == schedule.small_steps(grid)
    calls_per_step = 1 if sampler is sample else 2
    assert meter.calls["small"] == calls_per_step * len(small)
    assert meter.rows["small"] == 3 * meter.calls["small"]


def test_callback_receives_the_documented_keys():
    infos = []
    sample(ModelPair(lambda x, s: x, lambda x, s: x), torch.zeros(1, 2), sigmas(3), callback=infos.append)
    assert [sorted(i) for i in infos] == [sorted(["i", "sigma", "sigma_next", "x", "v", "model_name", "model_names"])] * 3
    assert infos[0]["sigma"] == 1.0 and infos[-1]["sigma_next"] == 0.0


def test_guidance_batched_equals_two_calls():
    model = tiny_wan(seed=4)
    x = torch.randn(2, 16, 1, 4, 4)
    cond = torch.randn(2, 3, 32)
    null = {"encoder_hidden_states": torch.zeros(1, 3, 32)}
    one = GuidedDenoiser(model, 4.0, null, batched=True)(x, 0.7, encoder_hidden_states=cond)
    two = GuidedDenoiser(model, 4.0, null, batched=False)(x, 0.7, encoder_hidden_states=cond)
    torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-5)


def test_schedule_naming_a_missing_model():
    with pytest.raises(ScheduleError, match="medium"):
        sample(ModelPair(lambda x, s: x, lambda x, s: x), torch.zeros(1, 2), sigmas(4),
               Schedule.large_first(0.5, small="medium"))


def test_mismatched_channels_are_caught_before_sampling():
    pair = ModelPair(tiny_wan(in_channels=16), tiny_wan(in_channels=8, heads=1))
    with pytest.raises(PairMismatchError, match="'small'"):
        sample(pair, torch.randn(1, 16, 1, 4, 4), sigmas(4), encoder_hidden_states=torch.randn(1, 3, 32))


def test_wrong_text_width_is_caught():
    pair = ModelPair(tiny_wan(text_dim=32), tiny_wan(text_dim=24, heads=1))
    with pytest.raises(PairMismatchError, match="text"):
        pair.check(torch.randn(1, 16, 1, 4, 4), encoder_hidden_states=torch.randn(1, 3, 32))


def test_noise_of_the_wrong_shape():
    pair = ModelPair(lambda x, s: x, lambda x, s: x, sample_shape=(4,))
    with pytest.raises(PairMismatchError, match="sample_shape"):
        sample(pair, torch.zeros(2, 3), sigmas(4))


def test_bad_sigmas_are_rejected_before_any_model_call():
    calls = []
    pair = ModelPair(lambda x, s: calls.append(1) or x, lambda x, s: x)
    with pytest.raises(ValueError, match="descending"):
        sample(pair, torch.zeros(1, 2), torch.tensor([0.0, 0.5, 1.0]))
    assert calls == []


def test_non_finite_velocity_names_model_and_step():
    def broken(x, sigma):
        return torch.where(sigma.view(-1, 1) < 0.5, torch.full_like(x, float("nan")), x)

    with pytest.raises(NonFiniteVelocityError, match=r"'small'.*step 5"):
        sample(ModelPair(lambda x, s: x, broken), torch.zeros(1, 2), sigmas(10), Schedule.large_first(0.52),
               check_every=1)


NAN = float("nan")


@pytest.mark.parametrize("sampler", [sample, sample_heun])
def test_a_model_non_finite_in_the_dry_run_is_named_before_sampling(sampler):
    calls = []
    pair = ModelPair(lambda x, s: calls.append(1) or x, lambda x, s: x / 0)  # Small: Inf from its first call
    with pytest.raises(NonFiniteVelocityError, match=r"model 'small' returned NaN/Inf in the dry run"):
        sampler(pair, torch.ones(2, 3), sigmas(6), Schedule.lsl(0.8, 0.3))
    assert calls == [1]  # Large's one dry call, no sampling step


@pytest.mark.parametrize("sampler", [sample, sample_heun])
def test_the_first_step_is_checked_by_default(sampler):
    # Finite on the dry run's single row, NaN on the whole batch: only a sampling step can see it.
    def batch_only(x, sigma):
        return x if x.shape[0] == 1 else x * NAN

    with pytest.raises(NonFiniteVelocityError, match=r"model 'large' returned NaN/Inf at step 0"):
        sampler(ModelPair(batch_only, lambda x, s: x), torch.ones(2, 3), sigmas(30), Schedule.lsl(0.8, 0.3))


def test_nan_between_two_checks_is_caught_by_the_last_step():
    # NaN from sigma < 0.05 on: steps 28 and 29 of 30, after the default's check at step 20; the check at
    # the last step names step 28, where it first appeared (issue #26 item 6).
    def late(x, sigma):
        return torch.where(sigma.view(-1, 1) < 0.05, x * NAN, x)

    grid = sigmas(30)
    assert [i for i in range(30) if grid[i] < 0.05] == [28, 29]
    with pytest.raises(NonFiniteVelocityError, match=r"'large' returned NaN/Inf at step 28"):
        sample(ModelPair(late, lambda x, s: x), torch.ones(1, 3), grid)


def test_nan_noise_is_named_as_the_noise():
    noise = torch.ones(2, 3)
    noise[1, 2] = NAN
    with pytest.raises(NonFiniteVelocityError, match="the noise holds NaN/Inf before any model ran"):
        sample(ModelPair(lambda x, s: x, lambda x, s: x), noise, sigmas(4))


def test_check_every_zero_opts_out_and_bad_values_are_refused():
    pair = ModelPair(lambda x, s: x if x.shape[0] == 1 else x * NAN, lambda x, s: x)
    assert torch.isnan(sample(pair, torch.ones(2, 3), sigmas(4), check_every=0)).all()
    with pytest.raises(ValueError, match="check_every must be a non-negative integer"):
        sample(pair, torch.ones(2, 3), sigmas(4), check_every=-2)
