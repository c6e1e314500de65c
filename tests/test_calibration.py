"""Automatic boundaries on synthetic pairs with known answers, and the profile store."""

from __future__ import annotations

import json
import multiprocessing as mp
import warnings

import numpy as np
import pytest
import torch
from conftest import gaussian_velocity

from adaptive import (
    Schedule,
    CalibrationError,
    ChangePointDetector,
    CurveError,
    ModelPair,
    Profile,
    ProfileError,
    ProfileStore,
    calibrate,
    fingerprint,
    probe,
    sample,
    sigmas,
)
from adaptive.calibration import Evaluator, sweep
from adaptive.metrics import LatentSimilarity
from adaptive.probing import run_probe
from adaptive.toy.exact import OneMinusRelL2  # noqa: F401  (test_budget and test_frontier import it from here)

STEPS = 12
LARGE = gaussian_velocity(0.5, 0.3)


def small_wrong_outside(lo: float, hi: float, error: float = 2.0):
    """Small equals Large for sigma in (lo, hi] and is off by ``error`` elsewhere."""

    def small(x, sigma):
        inside = ((sigma > lo) & (sigma <= hi)).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return LARGE(x, sigma) + (1 - inside) * error

    return small


def pair_of(small) -> ModelPair:
    return ModelPair(LARGE, small, sample_shape=(8,))


def expected_steps(lo: float, hi: float) -> list[int]:
    return [i for i, s in enumerate(sigmas(STEPS).tolist()[:-1]) if lo < s <= hi]


def test_probe_measures_divergence_where_small_is_wrong():
    curve = probe(pair_of(small_wrong_outside(0.3, 0.7)), [{}], STEPS, seeds=[0, 1, 2])
    inside = expected_steps(0.3, 0.7)
    mean = curve.mean()
    assert curve.rel_l2.shape == (STEPS, 3)
    assert np.allclose(mean[inside], 0.0)
    assert np.all(np.delete(mean, inside) > 0.1)
    assert curve.cost["large_calls"] == STEPS and curve.cost["small_calls"] == STEPS


def test_probe_noise_is_reproducible_from_the_seed():
    seen = []
    pair = ModelPair(lambda x, s: seen.append(x.clone()) or x, lambda x, s: x, sample_shape=(5,))
    probe(pair, [{}], 3, seeds=[7])
    assert torch.equal(seen[1][0], torch.randn(5, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("lo, hi", [(0.3, 0.7), (0.0, 0.5), (0.5, 1.0)])
def test_detector_finds_a_known_window(lo, hi):
    curve = probe(pair_of(small_wrong_outside(lo, hi)), [{}], STEPS, seeds=[0, 1])
    found = ChangePointDetector(min_size=2).fit(curve).predict()
    steps = expected_steps(lo, hi)
    assert found is not None
    assert (found.start, found.stop) == (steps[0], steps[-1] + 1)
    assert found.schedule().small_steps(sigmas(STEPS)) == steps


def test_detector_small_identical_and_useless():
    same = probe(pair_of(LARGE), [{}], STEPS, seeds=[0])
    assert (ChangePointDetector().fit(same).predict().sigma_in, ChangePointDetector().fit(same).predict().sigma_out) \
        == (1.0, 0.0)
    useless = probe(pair_of(lambda x, s: LARGE(x, s) + 3.0), [{}], STEPS, seeds=[0])
    assert ChangePointDetector().fit(useless).predict() is None


@pytest.mark.parametrize("bad", [[], [np.nan, 0.1, 0.2], [0.1, np.inf], [[]], [-0.1, 0.2]])
def test_detector_rejects_bad_curves(bad):
    with pytest.raises(CurveError):
        ChangePointDetector().fit(np.asarray(bad, dtype=float))


def test_calibrate_finds_the_known_window(tmp_path):
    small = small_wrong_outside(0.3, 0.7)
    profile = calibrate(pair_of(small), [{}], STEPS, seeds=[0, 1, 2], quality_target=0.999, n_trials=30,
                        store=tmp_path, progress=False, search_steps=False)
    assert list(profile.small_steps) == expected_steps(0.3, 0.7)
    assert profile.schedule().small_steps(sigmas(STEPS)) == expected_steps(0.3, 0.7)
    assert profile.quality["achieved"] >= 0.999
    # The oracle agrees.
    curve, ref = run_probe(pair_of(small), [{}], STEPS, [0, 1, 2], progress=False)
    start, stop, _, _ = sweep(Evaluator(pair_of(small), ref, LatentSimilarity(), 0.5), 0.999, progress=False)
    assert list(range(start, stop)) == list(profile.small_steps)
    # Stored and found again by the pair's fingerprint and sampler.
    assert ProfileStore(tmp_path).find(pair_of(small), profile.sampler) == profile


def test_calibrate_identical_and_useless(tmp_path):
    same = calibrate(pair_of(LARGE), [{}], STEPS, seeds=[0], n_trials=5, store=tmp_path, progress=False,
                     search_steps=False)
    assert (same.sigma_in, same.sigma_out) == (1.0, 0.0)
    with pytest.warns(UserWarning, match="quality_target"):
        # Useless everywhere, even for the last step (sigma 0.001 -> 0), which any error-bounded Small passes.
        useless = calibrate(pair_of(lambda x, s: LARGE(x, s) + 1000.0), [{}], STEPS, seeds=[0], n_trials=8,
                            store=tmp_path, progress=False, search_steps=False)
    assert useless.is_large_only and useless.proposal is None and useless.to_dict()["proposal"] == {}
    assert useless.schedule().small_steps(sigmas(STEPS)) == []


def test_unreachable_target_gives_large_only_with_a_clear_note(tmp_path):
    with pytest.warns(UserWarning, match="no plan cheaper than Large with all 12 steps met quality_target=0.9999"):
        profile = calibrate(pair_of(lambda x, s: LARGE(x, s) + 50.0), [{}], STEPS, seeds=[0], quality_target=0.9999,
                            n_trials=6, store=tmp_path, progress=False, search_steps=False)
    assert profile.is_large_only and "Lower the target" in profile.note


@pytest.mark.parametrize("kwargs, message", [
    ({"conds": []}, "conds"), ({"seeds": []}, "seed"), ({"quality_target": 1.5}, "quality_target"),
    ({"n_trials": -1}, "n_trials"), ({"num_steps": 1}, "num_steps"),
])
def test_bad_calibration_inputs(tmp_path, kwargs, message):
    args = {"conds": [{}], "num_steps": STEPS, "seeds": [0], "shape": (8,), "store": tmp_path, "progress": False}
    args.update(kwargs)
    with pytest.raises(CalibrationError, match=message):
        calibrate(ModelPair(LARGE, LARGE), **args)


def test_schedule_auto_calibrates_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    pair = pair_of(small_wrong_outside(0.3, 0.7))
    noise = torch.randn(2, 8)
    with pytest.warns(UserWarning, match=f"calibrating once on this batch's first 2 prompts .* {tmp_path}"):
        first = sample(pair, noise, sigmas(STEPS), "auto")  # said before any work, naming where it goes
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(files) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stored now: no second calibration, no warning
        second = sample(pair, noise, sigmas(STEPS), "auto")
    assert torch.equal(first, second) and sorted(p.name for p in tmp_path.glob("*.json")) == files


def test_schedule_online_with_an_empty_store_calibrates_what_online_needs(tmp_path, monkeypatch):
    """Issue #17 item 4: 'online' over an empty store used to store a profile without a controller and
    fail on every retry; it now calibrates per prompt, with the controller, and samples."""
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    pair = pair_of(small_wrong_outside(0.3, 0.7))
    with pytest.warns(UserWarning, match="per prompt, with the online controller"):
        _, why = sample(pair, torch.randn(2, 8), sigmas(STEPS), "online", return_decisions=True)
    assert len(why.models) == 2 and ProfileStore(tmp_path).all()[0].controller


def test_profile_round_trip_and_corrupt_files(tmp_path):
    profile = Profile(pair_fingerprint="f" * 24, sampler="euler-30-shift3", num_steps=30, shift=3.0,
                      sigma_in=0.8, sigma_out=0.2, small_steps=(5, 6, 7))
    assert Profile.from_json(profile.to_json()) == profile
    path = profile.save(tmp_path / "p.json")
    assert Profile.load(path) == profile
    path.write_text(profile.to_json()[:40])
    with pytest.raises(ProfileError, match=str(path)):
        Profile.load(path)
    data = json.loads(profile.to_json())
    data["schema_version"] = 99
    with pytest.raises(ProfileError, match="schema version"):
        Profile.from_json(json.dumps(data))
    with pytest.raises(ProfileError, match="sigma_out"):
        Profile(pair_fingerprint="x", sampler="s", num_steps=3, shift=1.0, sigma_in=0.2, sigma_out=0.5)


def test_store_refuses_a_foreign_file_and_finds_near_misses(tmp_path):
    store = ProfileStore(tmp_path)
    pair = pair_of(LARGE)
    fp = fingerprint(pair)
    profile = Profile(pair_fingerprint=fp, sampler="euler-30-shift3", num_steps=30, shift=3.0,
                      sigma_in=0.8, sigma_out=0.2)
    store.save(profile)
    with pytest.warns(UserWarning, match="mapped through"):
        assert store.find(pair, "euler-50-shift5") == profile
    other = Profile(pair_fingerprint="someone-else", sampler="euler-30-shift3", num_steps=30, shift=3.0,
                    sigma_in=0.5, sigma_out=0.5)
    store.path_for(fp, "euler-20-shift1").write_text(other.to_json())
    with pytest.raises(ProfileError, match="not the one its name says"):
        store.get(fp, "euler-20-shift1")
    assert store.path_for("../../etc/passwd", "x/../y").parent == tmp_path


def _calibrate_worker(root: str, seed_offset: int) -> None:
    torch.set_num_threads(1)
    pair = pair_of(small_wrong_outside(0.3, 0.7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrate(pair, [{}], STEPS, seeds=[0, 1], n_trials=10, store=root, progress=False, budget=None)


def test_two_processes_calibrating_into_one_store(tmp_path):
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_calibrate_worker, args=(str(tmp_path), k)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0]
    profiles = ProfileStore(tmp_path).all()
    assert len(profiles) == 1
    assert profiles[0].calibration["n_trials"] >= 10
    assert not list(tmp_path.glob(".*.tmp"))


def test_probe_reports_non_finite_velocities():
    from adaptive import NonFiniteVelocityError

    broken = ModelPair(LARGE, lambda x, s: x * float("nan"), sample_shape=(8,))
    with pytest.raises(NonFiniteVelocityError, match="'small' returned NaN/Inf in the dry run"):
        probe(broken, [{}], 4, seeds=[0])


def test_fingerprint_ignores_where_weights_were_loaded_from(tmp_path):
    from conftest import tiny_wan
    from diffusers import WanTransformer3DModel

    model = tiny_wan(seed=5)
    for name in ("a", "b"):
        model.save_pretrained(tmp_path / name)
    loaded = [WanTransformer3DModel.from_pretrained(tmp_path / n) for n in ("a", "b")]
    assert fingerprint(ModelPair(loaded[0], loaded[0])) == fingerprint(ModelPair(loaded[1], loaded[1]))
    assert fingerprint(ModelPair(loaded[0], loaded[0])) != fingerprint(ModelPair(loaded[0], tiny_wan(seed=6)))


def test_a_metered_or_moved_pair_is_the_pair_its_profile_was_calibrated_on(tmp_path):
    """Counting calls (``Meter``) or moving a model to a device changes how it runs, not what it is: its
    profile runs there (per_prompt_eval.py samples a per-prompt profile through a Meter)."""
    from conftest import tiny_wan

    from adaptive import Meter, sample, sigmas
    from adaptive.denoisers import DeviceDenoiser

    pair = ModelPair(tiny_wan(seed=5), tiny_wan(heads=1, layers=1, seed=6), sample_shape=(16, 1, 4, 4)).guided(
        3.0, {"encoder_hidden_states": torch.zeros(1, 3, 32)})
    meter = Meter(pair)
    moved = ModelPair(DeviceDenoiser(pair.large, "cpu"), pair.small, sample_shape=pair.sample_shape)
    assert fingerprint(meter.pair) == fingerprint(pair) == fingerprint(moved)
    assert fingerprint(meter.pair) != fingerprint(ModelPair(pair.small, pair.large))
    cond = [{"encoder_hidden_states": torch.randn(1, 3, 32)}]
    profile = calibrate(pair, cond, num_steps=4, seeds=[0], n_trials=2, store=tmp_path, progress=False)
    out = sample(meter.pair, torch.randn(1, 16, 1, 4, 4), sigmas(4, 3.0), profile, **cond[0])
    assert torch.isfinite(out).all() and meter.calls["large"] > 0


def test_shipped_profile_is_found_for_the_embedded_pair():
    from pathlib import Path

    from adaptive.toy import load_pair

    pair, _ = load_pair()
    store = ProfileStore(Path(__file__).resolve().parents[1] / "profiles")
    profile = store.find(pair, "euler-30-shift3")
    # calibrated with the pair's own metric, and its recommended plan saves compute
    assert profile is not None and profile.quality["metric"] == pair.metric.name
    assert profile.plan and profile.plan["cost"] < 1.0 and profile.plan["quality"] >= profile.quality["target"]


# The honest frontier: step count is part of the search --------------------------------------------
# An exact Gaussian flow with a power-law spectrum (x0 ~ N(0, diag(k^-1)), 64 dims) bends: Large with
# 10 of 30 Euler steps (shift 3) lands 0.21 relative L2 from Large with 30, with 27 steps 0.012.
SPECTRUM = torch.arange(1, 65, dtype=torch.float64) ** -1.0
SPECTRUM = SPECTRUM / SPECTRUM.mean() * 0.25


class SpectrumVelocity(torch.nn.Module):
    """The exact velocity for data ``N(0, diag(spectrum))``; ``work`` identity matmuls make its
    FLOPs (what calibration counts as cost) proportional to ``work``."""

    def __init__(self, spectrum: torch.Tensor, work: int, error: float = 0.0, exact_in=(0.0, 1.0)) -> None:
        super().__init__()
        self.spectrum, self.work, self.error, self.exact_in = spectrum, work, error, exact_in
        self.eye = torch.eye(spectrum.numel())

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        for _ in range(self.work):
            x = x @ self.eye
        s = sigma.view(-1, 1).double()
        v = ((s - (1 - s) * self.spectrum) / ((1 - s) ** 2 * self.spectrum + s**2) * x.double()).float()
        lo, hi = self.exact_in
        inside = ((sigma > lo) & (sigma <= hi)).float().view(-1, 1)
        return v + (1 - inside) * self.error


def spectrum_pair(small: SpectrumVelocity) -> ModelPair:
    return ModelPair(SpectrumVelocity(SPECTRUM, 10), small, sample_shape=(64,), metric=OneMinusRelL2())


def spectrum_calibration(small: SpectrumVelocity, target: float, tmp_path) -> Profile:
    pair = spectrum_pair(small)
    return calibrate(pair, [{}], 30, seeds=[0, 1, 2, 3], shift=3.0, quality_target=target, n_trials=30,
                     metric=OneMinusRelL2(), store=tmp_path, progress=False)


def test_a_bad_small_on_a_curved_flow_gets_large_with_fewer_steps(tmp_path, monkeypatch):
    """(a) Small's spectrum is wrong (coarse scales x3, fine scales x0.2) and its mean is off at every
    noise level: every window it takes costs more quality than dropping Large steps does, so the
    plan is Large alone with fewer steps. (With the spectrum wrong but the mean right, calibration
    finds that Small is harmless at high noise, where every zero-mean model has nearly the same
    velocity, and blends there: the search is not told the answer.)"""
    wrong = SPECTRUM.clone()
    wrong[:4] *= 3.0
    wrong[16:] *= 0.2
    # (Its mean off by 1, not 0.5: with 0.5, Small on the last step of 16 costs less quality than the
    # target leaves, and calibration rightly finds that blend at 0.50 of the compute instead of 0.53.)
    profile = spectrum_calibration(SpectrumVelocity(wrong, 1, error=1.0, exact_in=(1.0, 1.0)), 0.9, tmp_path)
    assert profile.plan_schedule() == Schedule.large_only() and 10 < profile.steps < 30, profile.decision
    # the least step count that meets the target, pinned down: one step fewer fails it
    fewer = {p["steps"]: p["quality"] for p in profile.frontier if p["start"] == p["stop"]}
    assert fewer[profile.steps] >= 0.9 > fewer[profile.steps - 1]
    assert profile.plan["cost"] == pytest.approx(profile.steps / 30)
    assert profile.decision.startswith(f"Large with {profile.steps} of 30 steps meets the target")
    # A caller who fixes 30 steps gets what was asked, and one warning naming the cheaper plan.
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(tmp_path))
    pair = spectrum_pair(SpectrumVelocity(wrong, 1, error=1.0, exact_in=(1.0, 1.0)))
    noise = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    with pytest.warns(UserWarning, match=f"cheaper plan .* Large with {profile.steps} of 30 steps"):
        out = sample(pair, noise, sigmas(30, 3.0), "auto")
    assert torch.equal(out, sample(pair, noise, sigmas(30, 3.0), profile.schedule()))  # the best 30-step plan
    from adaptive import sample_heun

    with pytest.warns(UserWarning, match="calibrated with Euler steps; Heun runs its sigma window"):
        sample_heun(pair, noise, sigmas(30, 3.0), "auto")  # not silently: the profile is Euler's
    assert profile.schedule().small_steps(sigmas(30, 3.0)) or profile.is_large_only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recommended grid is the profile's own: no "other grid" warning
        fewer = sample(pair, noise, sigmas(profile.steps, 3.0), "auto")
    assert torch.equal(fewer, sample(pair, noise, sigmas(profile.steps, 3.0)))  # Large alone, as recommended


def test_a_small_exact_in_the_middle_of_a_curved_flow_gets_that_window(tmp_path):
    """(b) Small is exact for sigma in (0.3, 0.7] and far off elsewhere; Large needs 27 of 30 steps
    for the target, the window costs less: the plan blends, and Small runs only inside the window."""
    profile = spectrum_calibration(SpectrumVelocity(SPECTRUM, 1, error=2.0, exact_in=(0.3, 0.7)), 0.98, tmp_path)
    assert profile.plan_schedule() != Schedule.large_only(), profile.decision
    grid = sigmas(profile.steps, 3.0).tolist()
    small = profile.plan_schedule().small_steps(grid)
    assert small and all(0.3 < grid[i] <= 0.7 for i in small)
    # Large alone was measured, and wherever it met the target it cost more than the window (screened
    # out on some samples: "samples" says how many judged it).
    fewer = [p for p in profile.frontier if p["start"] == p["stop"]]
    assert fewer and all(p["quality"] < 0.98 or p["cost"] > profile.plan["cost"] for p in fewer)
    assert profile.cost.calibration_passes <= 3.0 + 1e-9 and profile.cost.budget_passes == 3.0
    assert profile.plan["quality"] >= 0.98 and "Small on steps" in profile.decision


def test_profile_with_a_plan_round_trips_and_old_profiles_still_load(tmp_path):
    plan = {"steps": 9, "start": 0, "stop": 0, "sigma_in": 0.0, "sigma_out": 0.0, "quality": 0.96, "cost": 0.3}
    profile = Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
                      sigma_out=0.4, plan=plan, frontier=[dict(plan, steps=9), dict(plan, steps=8, quality=0.9)])
    again = Profile.from_json(profile.to_json())
    assert again == profile and again.steps == again.recommended_steps == 9
    assert again.plan_schedule().small_steps(sigmas(9, 3.0)) == []
    assert again.schedule_for_steps(30) == again.schedule() and again.schedule_for_steps(9) == again.plan_schedule()
    old = json.loads(profile.to_json())
    for key in ("plan", "frontier"):
        del old[key]
    old["schema_version"] = 1
    assert Profile.from_dict(old).steps == 30 and "not searched" in Profile.from_dict(
        {**old, "small_steps": [3, 4]}).decision
    for bad in ({"plan": dict(plan, steps=31)}, {"plan": dict(plan, start=5, stop=4)},
                {"frontier": [dict(plan, quality="a")]}, {"frontier": [dict(plan, steps=-1)]},
                {"plan": dict(plan, sigma_in=2.0)}):
        with pytest.raises(ProfileError):
            Profile.from_dict({**json.loads(profile.to_json()), **bad})


def test_step_search_survives_a_metric_that_returns_nan_and_no_trials_means_no_work(tmp_path):
    """The bisection counts a NaN as failing and ends; n_trials=0 enqueues and runs nothing."""

    class NanBelow:
        name = "nan_below"

        def __call__(self, generated, reference):
            value = 1 - rel_l2(generated, reference)
            return torch.where(value < 0.97, torch.full_like(value, float("nan")), value)

    from adaptive.metrics import rel_l2

    pair = spectrum_pair(SpectrumVelocity(SPECTRUM, 1, error=0.5, exact_in=(1.0, 1.0)))
    profile = calibrate(pair, [{}], 16, seeds=[0], shift=3.0, quality_target=0.97, n_trials=4, metric=NanBelow(),
                        store=tmp_path, progress=False)
    assert profile.plan_schedule() == Schedule.large_only() and 1 < profile.steps <= 16
    import optuna

    study = optuna.load_study(study_name=profile.calibration["study_name"],
                              storage=f"sqlite:///{tmp_path}/studies.db")
    assert len(study.trials) < 4 + 3 + 2 * 5 + 2
    idle = calibrate(pair, [{}], 16, seeds=[1], shift=3.0, n_trials=0, store=tmp_path / "idle", progress=False)
    study = optuna.load_study(study_name=idle.calibration["study_name"],
                              storage=f"sqlite:///{tmp_path / 'idle'}/studies.db")
    assert study.trials == [] and idle.steps == 16


def test_a_fixed_grid_calibration_never_joins_a_step_search_study(tmp_path):
    pair = spectrum_pair(SpectrumVelocity(SPECTRUM, 1, error=0.5, exact_in=(1.0, 1.0)))
    args = dict(seeds=[0], shift=3.0, quality_target=0.9, n_trials=6, metric=OneMinusRelL2(), store=tmp_path,
                progress=False)
    searched = calibrate(pair, [{}], 16, **args)
    fixed = calibrate(pair, [{}], 16, search_steps=False, **args)
    assert searched.steps < 16 and fixed.steps == 16
    assert searched.calibration["study_name"] != fixed.calibration["study_name"]
    assert all(p["steps"] == 16 for p in fixed.frontier)


def test_a_profile_judged_by_another_metric_is_called_out():
    from adaptive.auto import warn_if_other_metric

    pair = pair_of(LARGE)  # no metric of its own: latent_structure
    stale = Profile(pair_fingerprint=fingerprint(pair), sampler="euler-12-shift1", num_steps=12, shift=1.0,
                    sigma_in=0.8, sigma_out=0.4, quality={"metric": "toy_feature_cosine", "target": 0.95})
    with pytest.warns(UserWarning, match="calibrated on metric 'toy_feature_cosine'.*'latent_structure'"):
        assert warn_if_other_metric(stale, pair)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_other_metric(Profile(**{**stale.to_dict(), "small_steps": (),
                                                   "quality": {"metric": "latent_structure"}}), pair)


def test_a_weaker_calibration_never_silently_replaces_a_stored_profile(tmp_path):
    """Issue #17 item 3: `calibrate --trials 0` over a good profile kept it only with force."""
    pair = pair_of(small_wrong_outside(0.3, 0.7))
    args = dict(quality_target=0.999, store=tmp_path, progress=False, search_steps=False)
    good = calibrate(pair, [{}], STEPS, seeds=[0], n_trials=10, **args)
    path = ProfileStore(tmp_path).path_for(good.pair_fingerprint, good.sampler)
    ran = good.calibration["n_trials"]  # the budget may stop the search before 10
    assert ran > 0
    with pytest.warns(UserWarning, match=f"kept the stored profile .*it ran 0 trials, the stored one {ran}"):
        calibrate(pair, [{}], STEPS, seeds=[1], n_trials=0, **args)
    assert Profile.load(path) == good and Profile.load(f"{path}.rejected").calibration["n_trials"] == 0
    assert [p.calibration["n_trials"] for p in ProfileStore(tmp_path).all()] == [ran]  # backups are not profiles
    forced = calibrate(pair, [{}], STEPS, seeds=[1], n_trials=0, force=True, **args)
    assert Profile.load(path) == forced and Profile.load(f"{path}.previous") == good
