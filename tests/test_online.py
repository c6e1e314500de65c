"""The online controller and per-prompt calibration, on synthetic pairs with known answers.

The synthetic pair: Large's velocity is ``-x``; Small adds an error of relative size 2.0 at sigmas
above the prompt's own ``c`` and below 0.15, and 0.02 in between. So prompt ``c`` has a known safe
window: Small may start at the first step with ``sigma <= c``.
"""

from __future__ import annotations

import dataclasses
import warnings

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
    # At 0.999 one step of Small's error above the cut fails the target (it keeps 0.994): the known
    # answer is the first step at or below each prompt's cut.
    profile = calibrate(cut_pair(), conds, num_steps=20, seeds=[0, 1], quality_target=0.999, n_trials=12,
                        store=tmp_path, progress=False, per_prompt=True, search_steps=False)
    windows = profile.per_prompt["windows"]
    starts = [windows[prompt_key(cond)]["start"] for cond in conds]
    assert starts == [first_step_at_or_below(grid, cut) for cut in CUTS]
    # The stored controller reproduces those starts online, within one step, on fresh noise.
    stored = ProfileStore(tmp_path).get(profile.pair_fingerprint, profile.sampler)
    assert stored is not None and stored.controller == profile.controller
    config = ControllerConfig.from_dict(stored.controller)
    c = torch.tensor(CUTS).view(-1, 1)
    # Small costs half of Large here (plain functions: no FLOPs to count), so the probes a late
    # window needs cost more than it saves: held out, the controller would cost more than Large, and
    # the fit says so (schedule="online" then runs these windows). Its rule is still right:
    assert "does not pay" in config.fallback, config.fit
    rule = dataclasses.replace(config, fallback="")
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))  # seeded: runs alike after any test
    _, online = sample(cut_pair(), noise, grid, rule, return_decisions=True, c=c)
    assert online.hand_in[0] is not None, online.summary()
    stop = first_step_at_or_below(grid, 0.15)
    for row, start in enumerate(starts):
        if online.hand_in[row] is not None:  # never early, one step late (the probe at the start saw it)
            assert online.hand_in[row] == start + 1 and all(i < stop for i in online.small_steps(row)), \
                online.summary()
        else:
            assert "budget" in online.reason[row]
    # Per-prompt boundaries at sampling time; an unseen prompt gets the pair-level window.
    c_new = torch.tensor([[0.9], [0.5], [0.42]])
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(8))
    _, fixed = sample(cut_pair(), noise, grid, stored, return_decisions=True, c=c_new)
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


def test_checks_return_to_large_at_the_window_end_and_respect_their_budget():
    grid = sigmas(20)
    config = ControllerConfig(threshold=0.1, sigma_out=0.0, smoothing=1.0, probe_budget=20, small_span=2,
                              monitor_every=2, monitor_threshold=0.5, large_probe_budget=30)
    c = torch.tensor([[0.9]])
    noise = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    _, decisions = sample(cut_pair(), noise, grid, config, return_decisions=True, c=c)
    # Small's error returns below sigma 0.15: a check sees it; a check step runs Large, so at most one
    # Small step lies past the window.
    end = first_step_at_or_below(grid, 0.15)
    assert decisions.back[0] is not None and end <= decisions.back[0] <= end + 1, decisions.summary()
    assert max(decisions.small_steps(0)) <= end and "check" in decisions.reason[0]
    assert all(decisions.models[0][step] == "large" for step, _, _ in decisions.monitors[0])
    tight = dataclasses.replace(config, large_probe_budget=2)
    _, limited = sample(cut_pair(), noise, grid, tight, return_decisions=True, c=c)
    assert len(limited.monitors[0]) == 2 and "budget" in limited.reason[0]
    assert limited.extra_small_calls[0] == len(limited.probes[0]) + 2


def test_fit_controller_hands_over_on_the_raw_probe_and_validates_the_return():
    """Curves high before each sample's window and tiny inside: the raw-probe fit hands over one step
    after the start (the probe at the start says so), never before, and keeps Small inside."""
    grid = sigmas(20).tolist()
    rng = np.random.default_rng(0)
    prompts = [p for p in range(8) for _ in range(3)]
    start_of = rng.integers(3, 12, 8)
    starts = [int(start_of[p]) for p in prompts]
    stops = [s + 6 for s in starts]
    steps = np.arange(20)[None, :]
    inside = (steps >= np.array(starts)[:, None]) & (steps < np.array(stops)[:, None])
    curves = np.where(inside, 0.01, rng.uniform(0.5, 5.0, (24, 20)))
    config = fit_controller(grid, curves, starts, stops, prompts, small_cost=0.2)
    assert not config.fallback and config.smoothing == 1.0, config.fit
    d = replay(config, grid, curves)
    assert d.hand_in == [s + 1 for s in starts]
    for row, (a, b) in enumerate(zip(starts, stops)):
        assert d.small_steps(row) and all(a - 1 <= i <= b for i in d.small_steps(row)), d.summary()
    # The old fit's failure (issue #20): a moving average lags the hand-over, and a threshold fitted
    # through the lag admits the high divergence outside the windows.
    lagged = ControllerConfig(threshold=config.threshold, smoothing=0.5, probe_budget=20, small_span=5)
    assert replay(lagged, grid, curves).hand_in != d.hand_in


def test_a_controller_that_failed_validation_falls_back_to_the_windows(tmp_path, monkeypatch):
    grid = sigmas(12)
    config = ControllerConfig(threshold=0.1, fallback="no rule kept every held-out prompt inside its window")
    with pytest.raises(CalibrationError, match="failed its validation"):
        sample(cut_pair(), torch.randn(1, 4), grid, config, c=torch.ones(1, 1))
    key = prompt_key({"c": torch.tensor([[0.5]])})
    profile = Profile(pair_fingerprint=fingerprint(cut_pair()), sampler="euler-12-shift1", num_steps=12, shift=1.0,
                      sigma_in=0.8, sigma_out=0.3, controller=config.to_dict(),
                      per_prompt={"windows": {key: {"start": 6, "stop": 9, "sigma_in": 0.5, "sigma_out": 0.2}}})
    ProfileStore(tmp_path).save(profile)
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    with pytest.warns(UserWarning, match="not used"):
        _, d = sample(cut_pair(), torch.randn(2, 4), grid, "online", return_decisions=True,
                      c=torch.tensor([[0.5], [0.7]]))
    assert d.small_steps(0) == [6, 7, 8] and d.small_steps(1) == profile.schedule().small_steps(grid)
    assert all("failed its validation" in r for r in d.reason)


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
    with pytest.raises(CalibrationError, match="small_span"):
        ControllerConfig(threshold=0.1, small_span=-1)
    old = {k: v for k, v in config.to_dict().items() if k not in ("small_span", "fallback")}
    assert ControllerConfig.from_dict(old) == config  # profiles written before issue #20 still load
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


WINDOW_SETS = {"issue": [(0.2, 0.6), (0.1, 0.35), (0.55, 0.9), (0.5, 0.5)],
               "sliding": [(0.1, 0.5), (0.3, 0.7), (0.5, 0.9), (0.2, 0.6), (0.5, 0.5)]}
# Measured outcome of the leave-one-prompt-out check (see docs/online): on the issue's set the windows'
# ends cannot be told from the probes; on the sliding set with shift 3 too few held-out samples hand
# over to repay the probes against the stored pair window. Only the sliding set, shift 1, pays.
FALLS_BACK = {("issue", 1.0): True, ("issue", 3.0): True, ("sliding", 1.0): False, ("sliding", 3.0): True}


def _calibrated_windows(tmp_path, windows, shift):
    from adaptive.toy.windowed import window_conds, windowed_pair

    pair = windowed_pair(mu=0.3, std=0.5, offset=6.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = calibrate(pair, window_conds(windows), num_steps=20, shift=shift, seeds=[0, 1, 2, 3],
                            quality_target=0.99, n_trials=12, store=tmp_path, progress=False, per_prompt=True,
                            search_steps=False)
    said = [str(w.message) for w in caught if "online controller is not used" in str(w.message)]
    return pair, profile, ControllerConfig.from_dict(profile.controller), said


@pytest.mark.parametrize("name", sorted(WINDOW_SETS))
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_online_plan_stays_inside_each_prompts_safe_window(tmp_path, monkeypatch, name, shift):
    """Exact-velocity pair, Small exact only inside a window that is part of the conditioning ((0.5,
    0.5): never safe). ``sample(..., "online")``, whether the controller decides or it fell back to
    the stored windows: every Small step lies in the sample's safe window (one step of slack) and at
    least half of each window is used. The fitted controller itself, run even where it does not pay,
    never leaves a window by more than one step and never hands the never-safe prompt to Small."""
    from adaptive.toy.windowed import safe_steps, window_conds

    windows = WINDOW_SETS[name]
    pair, profile, config, said = _calibrated_windows(tmp_path, windows, shift)
    assert bool(config.fallback) == FALLS_BACK[(name, shift)] == bool(said), config.fit
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    grid = sigmas(20, shift)
    noise = torch.randn(len(windows), 16, generator=torch.Generator().manual_seed(11))
    cond = torch.tensor(windows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, d = sample(pair, noise, grid, "online", return_decisions=True, window=cond)
    _, own = sample(pair, noise, grid, dataclasses.replace(config, fallback=""), return_decisions=True, window=cond)
    # The last step runs from sigma <= 0.01 to 0: Small's offset moves the sample by under 0.01 * offset
    # there, and calibration may give it to Small on any prompt (it meets the quality target).
    harmless = {19} if float(grid[19]) <= 0.01 else set()
    for row, window in enumerate(windows):
        safe = safe_steps(grid, window)
        allowed = set(range(safe[0] - 1, safe[-1] + 2)) if safe else set()
        small = d.small_steps(row)
        assert set(small) <= allowed | harmless, (window, d.summary())
        assert len([i for i in small if i in safe]) >= len(safe) / 2, (window, d.summary())
        # A calibrated prompt runs its stored window, as calibrated, unprobed, and the reason says why.
        stored = profile.per_prompt["windows"][prompt_key(window_conds(windows)[row])]
        assert small == list(range(stored["start"], stored["stop"])), d.summary()
        assert d.extra_small_calls[row] == 0 and "per-prompt" in d.reason[row]
        assert ("failed its validation" if config.fallback else "calibrated prompt") in d.reason[row]
        assert set(own.small_steps(row)) <= allowed, (window, own.summary())
    if not config.fallback:  # a prompt not calibrated: the controller decides it, beside a calibrated one
        unseen = torch.tensor([windows[0], (0.25, 0.65)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, mixed = sample(pair, noise[:2], grid, "online", return_decisions=True, window=unseen)
        alone, by_controller = sample(pair, noise[1:2], grid, config, return_decisions=True, window=unseen[1:])
        assert mixed.models[0] == d.models[0] and mixed.extra_small_calls[0] == 0
        assert mixed.models[1] == by_controller.models[0] and mixed.probes[1] == by_controller.probes[0]
        assert mixed.extra_small_calls[1] > 0 and "per-prompt" not in mixed.reason[1]
        torch.testing.assert_close(x[1:], alone)
        # On another grid (the profile is only the nearest one) no stored window is taken as calibrated there.
        other = sigmas(20, 4.0 - shift)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, elsewhere = sample(pair, noise, other, "online", return_decisions=True, window=cond)
        assert not any("per-prompt" in r for r in elsewhere.reason), elsewhere.summary()


def test_online_falls_back_where_the_probes_do_not_pay_and_runs_where_they_do(tmp_path, monkeypatch):
    """Three prompts with one safe window: the pair window already takes all of it, so the controller,
    sound as it is (held-out it costs under Large, the old bar), cannot beat it once its probes and its
    one-step-late hand-over are counted; calibration says so and "online" runs the stored windows. On
    the sliding set (shift 1) the same check lets the controller run, and it costs less held-out than
    the pair window does."""
    same = [(0.3, 0.7), (0.31, 0.7), (0.29, 0.71)]  # one safe window (steps 6-13) on this grid
    pair, profile, config, said = _calibrated_windows(tmp_path / "same", same, 1.0)
    fit = config.fit
    chosen = min((r for r in fit["leave_one_prompt_out"] if r["outside_steps"] == 0 and r["below_target"] == 0),
                 key=lambda r: r["cost"])
    assert list(profile.small_steps) == list(range(6, 14)) and fit["fallback_cost"] == pytest.approx(0.65)
    assert chosen["cost"] < 1.0 and chosen["handover_rate"] == 1.0  # sound, and it hands every sample over
    assert chosen["cost"] >= fit["fallback_cost"] and "does not pay" in config.fallback and said, config.fallback
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path / "same"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, d = sample(pair, torch.randn(3, 16), sigmas(20), "online", return_decisions=True, window=torch.tensor(same))
    assert all(d.small_steps(r) == list(range(6, 14)) and d.extra_small_calls[r] == 0 for r in range(3))

    _, sliding, used, _ = _calibrated_windows(tmp_path / "sliding", WINDOW_SETS["sliding"], 1.0)
    best = min((r for r in used.fit["leave_one_prompt_out"] if r["outside_steps"] == 0 and r["below_target"] == 0),
               key=lambda r: r["cost"])
    assert not used.fallback and best["cost"] < used.fit["fallback_cost"], used.fit
    assert best["handover_rate"] > best["break_even_rate"]


def test_validation_counts_the_probes_of_samples_that_never_hand_over():
    """Held-out compute is per sample with every sample's probes, those that never hand over too, and
    the controller is used only if it costs less than what "online" would run instead."""
    grid = sigmas(20).tolist()
    rng = np.random.default_rng(1)
    first = [4, 5, 6, 7, 8, 9, None, None]  # two prompts never safe
    prompts = [p for p in range(len(first)) for _ in range(3)]
    starts = [first[p] for p in prompts]
    stops = [None if a is None else a + 8 for a in starts]
    steps = np.arange(20)[None, :]
    lo = np.array([20 if a is None else a for a in starts])[:, None]
    curves = np.where((steps >= lo) & (steps < lo + 8), 0.01, rng.uniform(0.5, 5.0, (len(starts), 20)))
    against_large = fit_controller(grid, curves, starts, stops, prompts, small_cost=0.2)
    assert not against_large.fallback, against_large.fit
    row = min((r for r in against_large.fit["leave_one_prompt_out"]
               if r["outside_steps"] == 0 and r["below_target"] == 0), key=lambda r: r["cost"])
    # Held out, the never-safe prompts and the earliest and latest windows (no other prompt shows
    # them) probe and keep Large: half of the samples hand over.
    assert row["handover_rate"] == pytest.approx(0.5)
    assert row["cost"] == pytest.approx(1 + row["probe_cost"] - row["handover_rate"] * row["saving"])
    # The never-safe samples pay for their probes: each costs more than Large alone.
    d = replay(against_large, grid, curves)
    never = [k for k, a in enumerate(starts) if a is None]
    assert all(d.hand_in[k] is None and c > 1.0 for k, c in zip(never, np.array(d.cost(0.2))[never]))
    # Against a stored pair window cheaper than its held-out compute it falls back, and says why.
    cheaper = fit_controller(grid, curves, starts, stops, prompts, small_cost=0.2, fallback_cost=row["cost"] - 0.01)
    assert "does not pay" in cheaper.fallback and "50% of held-out samples hand over" in cheaper.fallback
    assert f"held-out it costs {row['cost']:.3f}" in cheaper.fallback
    with pytest.raises(CalibrationError, match="fallback_cost"):
        fit_controller(grid, curves, starts, stops, prompts, small_cost=0.2, fallback_cost=0.0)


def test_a_window_that_opened_before_the_probes_is_not_entered():
    """With a validated span, Small may only start where the probes saw the window open: a sample low
    from its first probe keeps Large (how much of its window is left is unknown)."""
    grid = sigmas(12).tolist()
    config = ControllerConfig(threshold=0.1, smoothing=1.0, probe_budget=6, small_span=3)
    d = replay(config, grid, [[0.01] * 12, [0.5, 0.5, 0.01, 0.01] + [0.01] * 8])
    assert d.hand_in == [None, 3] and d.small_steps(1) == [3, 4, 5] and d.back[1] == 6
    assert "budget" in d.reason[0]
