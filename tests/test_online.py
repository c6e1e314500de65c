"""The online controller and per-prompt calibration, on synthetic pairs with known answers.

The synthetic pair: Large's velocity is ``-x``; Small adds an error of relative size 2.0 at sigmas
above the prompt's own ``c`` and below 0.15, and 0.02 in between. So prompt ``c`` has a known safe
window: Small may start at the first step with ``sigma <= c``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive import CalibrationError, ModelPair, Profile, ProfileStore, Schedule, calibrate, fingerprint, sample, sigmas
from adaptive.controller import ControllerConfig, Decisions, OnlineController, fit_controller, replay
from adaptive.metering import Meter
from adaptive.profiles import prompt_key

DIRECTION = torch.tensor([1.0, -1.0, 1.0, -1.0]) / 2
CUTS = (0.9, 0.7, 0.5, 0.3)


def large(x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    return -x


def small(x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    assert c is not None
    s = sigma.view(-1, 1)
    bad = (s > c[:, :1]) | (s < 0.15)
    error = torch.where(bad, torch.full_like(s, 2.0), torch.full_like(s, 0.02))
    return -x + error * x.norm(dim=1, keepdim=True) * DIRECTION


def cut_pair() -> ModelPair:
    return ModelPair(large, small, sample_shape=(4,))


def first_step_at_or_below(grid: torch.Tensor, cut: float) -> int:
    return int(np.argmax(grid.numpy()[:-1] <= cut))


def test_hand_over_follows_the_conditioning_within_one_step():
    grid = sigmas(20)
    config = ControllerConfig(threshold=0.1, sigma_out=0.15, smoothing=1.0, probe_budget=20)
    c = torch.tensor(CUTS).view(-1, 1)
    _, decisions = sample(cut_pair(), torch.randn(4, 4), grid, config, return_decisions=True, c=c)
    for row, cut in enumerate(CUTS):
        expected = first_step_at_or_below(grid, cut)
        assert decisions.hand_in[row] is not None
        assert abs(decisions.hand_in[row] - expected) <= 1, (cut, decisions.summary())
        assert decisions.back[row] == first_step_at_or_below(grid, 0.15)
        plan = decisions.models[row]
        assert plan[:decisions.hand_in[row]] == ["large"] * decisions.hand_in[row]  # L -> S -> L, in that order
        assert set(plan[decisions.hand_in[row]:decisions.back[row]]) == {"small"}


def test_per_prompt_calibration_finds_each_prompts_window_and_fits_the_controller(tmp_path):
    grid = sigmas(20)
    conds = [{"c": torch.tensor([[cut]])} for cut in CUTS]
    profile = calibrate(cut_pair(), conds, num_steps=20, seeds=[0, 1], quality_target=0.99, n_trials=12,
                        store=tmp_path, progress=False, per_prompt=True, search_steps=False)
    windows = profile.per_prompt["windows"]
    starts = [windows[prompt_key(cond)]["start"] for cond in conds]
    assert starts == [first_step_at_or_below(grid, cut) for cut in CUTS]
    # The stored controller reproduces those starts online, within one step, on fresh noise.
    stored = ProfileStore(tmp_path).get(profile.pair_fingerprint, profile.sampler)
    assert stored is not None and stored.controller == profile.controller
    config = ControllerConfig.from_dict(stored.controller)
    c = torch.tensor(CUTS).view(-1, 1)
    _, online = sample(cut_pair(), torch.randn(4, 4), grid, config, return_decisions=True, c=c)
    for row, start in enumerate(starts):
        assert online.hand_in[row] is not None and abs(online.hand_in[row] - start) <= 1, online.summary()
    # Per-prompt boundaries at sampling time; an unseen prompt gets the pair-level window.
    c_new = torch.tensor([[0.9], [0.5], [0.42]])
    _, fixed = sample(cut_pair(), torch.randn(3, 4), grid, stored, return_decisions=True, c=c_new)
    assert fixed.small_steps(0) == list(range(windows[prompt_key(conds[0])]["start"],
                                              windows[prompt_key(conds[0])]["stop"]))
    assert fixed.small_steps(2) == stored.schedule().small_steps(grid)
    assert "not calibrated" in fixed.reason[2] and "per-prompt" in fixed.reason[1]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.lists(st.floats(0.0, 3.0), min_size=12, max_size=12), min_size=1, max_size=4),
       budget=st.integers(0, 12), threshold=st.floats(0.0, 2.0), smoothing=st.floats(0.05, 1.0),
       patience=st.integers(1, 3), probe_from=st.floats(0.0, 1.0))
def test_probe_budget_is_never_exceeded(values, budget, threshold, smoothing, patience, probe_from):
    config = ControllerConfig(threshold=threshold, sigma_out=0.2, smoothing=smoothing, patience=patience,
                              probe_budget=budget, probe_from_sigma=probe_from)
    decisions = replay(config, sigmas(12).tolist(), values)
    for row in range(len(values)):
        assert decisions.extra_small_calls[row] <= budget
        plan = "".join("S" if m == "small" else "L" for m in decisions.models[row])
        assert "SL" not in plan or "LS" not in plan.split("SL", 1)[1]  # at most one Small stage


def test_probe_budget_counts_real_model_calls():
    meter = Meter(cut_pair())
    config = ControllerConfig(threshold=0.001, smoothing=1.0, probe_budget=3)  # never low enough
    c = torch.tensor(CUTS).view(-1, 1)
    _, decisions = sample(meter.pair, torch.randn(4, 4), sigmas(10), config, return_decisions=True, c=c)
    assert meter.rows["small"] == 4 * 3 and decisions.extra_small_calls == [3, 3, 3, 3]
    assert all("budget" in reason for reason in decisions.reason)
    assert decisions.cost(small_cost=0.1) == pytest.approx([1.0 + 3 * 0.1 / 10] * 4)


def test_decisions_are_deterministic_for_a_fixed_seed():
    config = ControllerConfig(threshold=0.5, sigma_out=0.15, probe_budget=10)
    c = torch.tensor(CUTS).view(-1, 1)
    runs = []
    for _ in range(2):
        noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
        runs.append(sample(cut_pair(), noise, sigmas(16), config, return_decisions=True, c=c))
    (x1, d1), (x2, d2) = runs
    assert torch.equal(x1, x2) and d1.to_dict() == d2.to_dict()


def test_split_batch_equals_each_sample_alone_and_shared_decides_once():
    config = ControllerConfig(threshold=0.1, sigma_out=0.15, smoothing=1.0, probe_budget=20)
    c = torch.tensor(CUTS).view(-1, 1)
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    pair = cut_pair()
    together, decisions = sample(pair, noise, sigmas(12), config, return_decisions=True, c=c)
    for row in range(4):
        alone, own = sample(pair, noise[row:row + 1], sigmas(12), config, return_decisions=True, c=c[row:row + 1])
        torch.testing.assert_close(together[row:row + 1], alone)
        assert own.models[0] == decisions.models[row]
    shared_x, shared = sample(pair, noise, sigmas(12), config, batch_decisions="shared", return_decisions=True, c=c)
    assert shared.shared and len(shared.models) == 1
    with pytest.raises(ValueError, match="batch_decisions"):
        sample(pair, noise, sigmas(12), config, batch_decisions="each", c=c)


def test_guidance_stays_inside_each_sample_model():
    """Split decisions under CFG: every call carries cond and uncond of the same samples."""
    seen: list[tuple[str, int, bool]] = []

    def recorded(name, fn):
        def model(x, sigma, c):
            seen.append((name, x.shape[0], bool((c == -1).all())))
            return fn(x, sigma, c=c.clamp_min(0))
        return model

    pair = ModelPair(recorded("large", large), recorded("small", small)).guided(3.0, {"c": -torch.ones(1, 1)})
    config = ControllerConfig(threshold=0.1, sigma_out=0.15, smoothing=1.0, probe_budget=20)
    sample(pair, torch.randn(4, 4), sigmas(12), config, c=torch.tensor(CUTS).view(-1, 1))
    for _, rows, all_uncond in seen[2:]:  # after the dry run
        assert rows % 2 == 0 and not all_uncond  # batched CFG: cond and uncond halves of the same samples


def test_monitor_returns_to_large_early_and_respects_its_budget():
    grid = sigmas(20)
    config = ControllerConfig(threshold=0.1, sigma_out=0.0, smoothing=1.0, probe_budget=20, monitor_every=1,
                              monitor_threshold=0.5, large_probe_budget=30)
    c = torch.tensor([[0.9]])
    _, decisions = sample(cut_pair(), torch.randn(1, 4), grid, config, return_decisions=True, c=c)
    # Small's error returns below sigma 0.15: the Large checks see it and hand back there.
    assert decisions.back[0] is not None and abs(decisions.back[0] - (first_step_at_or_below(grid, 0.15) + 1)) <= 1
    assert "monitored" in decisions.reason[0]
    tight = dataclasses.replace(config, large_probe_budget=2)
    _, limited = sample(cut_pair(), torch.randn(1, 4), grid, tight, return_decisions=True, c=c)
    assert limited.extra_large_calls == [2] and limited.back[0] is None


def test_fit_controller_recovers_a_known_threshold_and_correction():
    grid = sigmas(20).tolist()
    rng = np.random.default_rng(0)
    starts = rng.integers(2, 12, 40)
    curves = np.where(np.arange(20)[None, :] >= starts[:, None] - 1, 0.03, 0.6)
    # Prompts that hand over later also return later (a known, learnable correction).
    sigma_outs = [0.3 - 0.01 * int(s) for s in starts]
    config = fit_controller(grid, curves, [int(s) for s in starts], sigma_outs, prior_sigma_out=0.2,
                            smoothing=1.0)
    hand_in = replay(config, grid, curves).hand_in
    assert hand_in == [int(s) for s in starts]
    assert config.regression, config.fit
    predicted = [config.predict_sigma_out([float(np.log(0.6)), grid[s]]) for s in (4, 8)]
    assert predicted[0] > predicted[1]


def test_controller_config_round_trips_and_rejects_bad_input(tmp_path):
    config = ControllerConfig(threshold=0.2, sigma_out=0.3, regression={
        "features": ["mean_log_divergence", "hand_in_sigma"], "mean": [0.0, 0.5], "scale": [1.0, 1.0],
        "coef": [0.1, -0.2], "intercept": 0.01})
    assert ControllerConfig.from_dict(config.to_dict()) == config
    profile = Profile(pair_fingerprint="abc", sampler="euler-8-shift1", num_steps=8, shift=1.0, sigma_in=0.8,
                      sigma_out=0.3, controller=config.to_dict(),
                      per_prompt={"windows": {"k": {"start": 1, "stop": 5, "sigma_in": 0.9, "sigma_out": 0.4}}})
    loaded = Profile.load(profile.save(tmp_path / "p.json"))
    assert loaded == profile and loaded.schedule_for("k") == Schedule.lsl(0.9, 0.4)
    assert loaded.schedule_for("unknown") == Schedule.lsl(0.8, 0.3)
    with pytest.raises(CalibrationError, match="per_prompt=True"):
        ControllerConfig.from_dict({})
    with pytest.raises(CalibrationError, match="smoothing"):
        ControllerConfig(threshold=0.1, smoothing=0.0)
    with pytest.raises(CalibrationError, match="features"):
        ControllerConfig(threshold=0.1, regression={**config.regression, "features": ["other", "x"]})


def test_online_needs_a_calibrated_controller(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    pair = cut_pair()
    ProfileStore(tmp_path).save(Profile(pair_fingerprint=fingerprint(pair), sampler="euler-8-shift1", num_steps=8,
                                        shift=1.0, sigma_in=0.8, sigma_out=0.3))
    with pytest.raises(CalibrationError, match="per_prompt=True"):
        sample(pair, torch.randn(1, 4), sigmas(8), "online", c=torch.ones(1, 1))
    with pytest.raises(CalibrationError, match="probe_steps"):
        calibrate(pair, [{"c": torch.ones(1, 1)}], num_steps=8, seeds=[0], probe_steps=[0, 1], per_prompt=True,
                  store=tmp_path, progress=False)


def test_replay_equals_the_sampler_decisions():
    """The model-free replay (used to fit the threshold) makes the decisions the sampler makes."""
    grid = sigmas(16)
    config = ControllerConfig(threshold=0.3, sigma_out=0.15, smoothing=0.5, probe_budget=16)
    c = torch.tensor(CUTS).view(-1, 1)
    _, live = sample(cut_pair(), torch.randn(4, 4), grid, config, return_decisions=True, c=c)
    recorded = np.full((4, 16), 10.0)
    for row, probes in enumerate(live.probes):
        for step, _, value, _ in probes:
            recorded[row, step] = value
    assert replay(config, grid.tolist(), recorded).models == live.models
    assert isinstance(live, Decisions) and isinstance(OnlineController(config, grid.tolist(), 1), OnlineController)
