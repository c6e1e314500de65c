"""Issue #16 items 1, 2 and 4: typed profile parts with their own JSON round-trips, profiles found by
grid (no shift root-finding), and the probe and calibration replays stepping with the solver loop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from adaptive import ModelPair, Profile, ProfileError, Schedule, sample, sigmas
from adaptive.controller import ControllerConfig
from adaptive.profiles import migrate
from adaptive.profile_store import ProfileStore
from adaptive.records import (CalibrationInfo, Cost, CurveSummary, MeasuredPlan, PerPrompt, Proposal, Quality, Window,
                              controller_from_dict)
from adaptive.schedule import shift_of

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "profiles").glob("*.json"))
PLAN = {"steps": 9, "start": 2, "stop": 5, "quality": 0.96, "cost": 0.3, "sigma_in": 0.8, "sigma_out": 0.4}
WINDOW = {"start": 3, "stop": 9, "sigma_in": 0.8, "sigma_out": 0.3, "quality": 0.97, "cost": 0.6}

# (record, its JSON object, a damaged copy, what the error must name)
PARTS = [
    (MeasuredPlan, PLAN, dict(PLAN, stop=10), "0 <= start <= stop <= steps, got \\[9, 2, 10\\]"),
    (MeasuredPlan, {k: PLAN[k] for k in ("steps", "start", "stop", "quality", "cost")}, dict(PLAN, cost="x"),
     "cost must be a finite number"),
    (Window, WINDOW, dict(WINDOW, sigma_in=0.2), "needs 0 <= sigma_out <= sigma_in <= 1"),
    (PerPrompt, {"windows": {"k1": WINDOW}, "candidates": [[3, 9]], "mean_cost": 0.6, "fallback": "pair window"},
     {"windows": {"k1": dict(WINDOW, start="3")}}, "windows\\['k1'\\]: start and stop"),
    (CurveSummary, {"sigmas": [1.0, 0.5], "steps": [0, 1], "rel_l2": [0.1, None], "cosine": [0.0, 0.1],
                    "weighted": [0.01, 0.02]}, {"rel_l2": ["a"]}, "rel_l2 must be a list of numbers"),
    (Proposal, {"sigma_in": 0.9, "sigma_out": 0.4, "start": 2, "stop": 6, "score": None},
     {"sigma_in": 0.9, "sigma_out": 0.4, "start": 2.5, "stop": 6}, "start must be an integer"),
    (Quality, {"metric": "latent_cosine", "target": 0.95, "achieved": 0.97}, {"target": "high"},
     "target must be a finite number"),
    (Cost, {"fraction_of_large": 0.6, "small_cost_ratio": 0.3, "large_calls": 24, "small_calls": 6},
     {"fraction_of_large": "60%"}, "fraction_of_large must be a finite number"),
    (CalibrationInfo, {"num_conds": 2, "seeds": [0, 1], "n_trials": 4, "study_name": "s", "samples": 4},
     {"n_trials": "60"}, "n_trials must be an integer"),
]


@pytest.mark.parametrize("record,data,damaged,message", PARTS, ids=[f"{p[0].__name__}-{i}" for i, p in enumerate(PARTS)])
def test_each_part_round_trips_and_names_what_is_wrong(record, data, damaged, message):
    parsed = record.from_dict(data, "p.json: part")
    assert parsed.to_dict() == data and record.from_dict(parsed.to_dict()) == parsed
    assert {k: parsed[k] for k in parsed} == data  # the read-only view of code written for the dicts
    with pytest.raises(ProfileError, match=f"^p.json: part.*{message}"):
        record.from_dict(damaged, "p.json: part")


def test_the_controller_part_is_parsed_once_into_its_config():
    config = ControllerConfig(threshold=0.1, sigma_out=0.3)
    assert controller_from_dict(config.to_dict()) == config and controller_from_dict({}) is None
    with pytest.raises(ProfileError, match="p.json: controller.patience must be an integer"):
        controller_from_dict(dict(config.to_dict(), patience=1.5), "p.json: controller")
    profile = Profile(pair_fingerprint="f", sampler="euler-12-shift3", num_steps=12, shift=3.0, sigma_in=0.8,
                      sigma_out=0.3, controller=config.to_dict())
    assert profile.controller == config and ControllerConfig.from_dict(profile.controller) is profile.controller


def test_a_profile_takes_records_or_their_json_and_is_equal_either_way():
    common = dict(pair_fingerprint="f", sampler="euler-12-shift3", num_steps=12, shift=3.0, sigma_in=0.8,
                  sigma_out=0.3, created="2026-01-01T00:00:00+00:00")
    typed = Profile(**common, plan=MeasuredPlan(**PLAN), frontier=(MeasuredPlan(**PLAN),), quality=Quality(target=0.9),
                    per_prompt=PerPrompt({"k1": Window(**WINDOW)}))
    loose = Profile(**common, plan=PLAN, frontier=[PLAN], quality={"target": 0.9}, per_prompt={"windows": {"k1": WINDOW}})
    assert typed == loose and Profile.from_json(typed.to_json()) == typed
    assert typed.plan_schedule() == Schedule.lsl(0.8, 0.4) and typed.schedule_for("k1") == Schedule.lsl(0.8, 0.3)
    assert typed.windows["k1"].cost == 0.6 and typed.schedule_for("unseen") == typed.schedule()
    empty = Profile(**common)
    assert (empty.plan, empty.per_prompt, empty.controller, empty.proposal, empty.curve) == (None,) * 5
    assert {k: v for k, v in empty.to_dict().items() if k in ("plan", "quality", "controller", "frontier")} == \
        {"plan": {}, "quality": {}, "controller": {}, "frontier": []}


def test_a_schema_1_profile_is_migrated_and_the_current_schema_is_kept():
    current = Profile(pair_fingerprint="f", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
                      sigma_out=0.4).to_dict()
    assert migrate(current) == current
    old = {k: v for k, v in current.items() if k not in ("plan", "frontier", "guidance")} | {"schema_version": 1}
    assert migrate(old)["schema_version"] == 3 and Profile.from_dict(old).steps == 30
    two = {k: v for k, v in current.items() if k != "guidance"} | {"schema_version": 2}
    assert Profile.from_dict(two).guidance == () and Profile.from_dict(two).schedule() == Schedule.lsl(0.8, 0.4)
    with pytest.raises(ProfileError, match="p.json: schema version 4 is not supported"):
        migrate(dict(current, schema_version=4), "p.json")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_the_shipped_profiles_load_typed_and_write_back_what_they_read(path):
    raw = json.loads(path.read_text())
    profile = Profile.load(path)
    written = profile.to_dict()
    if raw["controller"]:  # an older controller gains the fields added since, at their defaults
        assert ControllerConfig.from_dict(written["controller"]) == ControllerConfig.from_dict(raw["controller"])
        written["controller"] = raw["controller"]
    if raw["schema_version"] < 3:  # an older schema writes back as the current one, with what migration adds
        assert written.pop("guidance") == [] and written.pop("schema_version") == 3
        raw = {k: v for k, v in raw.items() if k != "schema_version"}
    assert written == raw and Profile.from_dict(profile.to_dict()) == profile
    assert profile.plan is None or isinstance(profile.plan, MeasuredPlan)
    assert all(isinstance(p, MeasuredPlan) for p in profile.frontier)
    assert all(isinstance(w, Window) for w in profile.windows.values())
    steps = profile.steps
    assert profile.schedule_for_steps(steps) == profile.plan_schedule()


@pytest.mark.parametrize("steps", [2, 8, 30, 50])
@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 5.0, 12.0, 49.0])
def test_the_shift_of_a_grid_needs_no_search(steps, shift):
    assert shift_of(sigmas(steps, shift).tolist()) == shift
    assert shift_of((sigmas(steps, shift) * 0.99).tolist()) is None


def test_the_store_finds_a_profile_by_its_grid_not_its_name(tmp_path):
    """A profile keyed with the shift a root-finder returned (11.9999 for 12 at 8 steps) is still
    found for sigmas(8, 12.0), silently; another grid gets the nearest, with a warning naming it."""
    store = ProfileStore(tmp_path)
    stored = Profile(pair_fingerprint="abc", sampler="euler-8-shift11.9999", num_steps=8, shift=11.9999, sigma_in=0.8,
                     sigma_out=0.3)
    store.save(stored)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.for_grid("abc", 8, 12.0) == stored == store.for_sigmas("abc", sigmas(8, 12.0))
    with pytest.warns(UserWarning, match="no profile for euler on this 3-step sigma grid; using .*euler-8-shift11"):
        assert store.for_sigmas("abc", [1.0, 0.6, 0.2, 0.0]) == stored
    assert store.for_grid("abc", 8, 12.0, solver="heun") is None


def _toy_pair() -> ModelPair:
    gen = torch.Generator().manual_seed(0)
    w_large = torch.randn(6, 6, generator=gen) * 0.3
    w_small = w_large + torch.randn(6, 6, generator=gen) * 0.05

    def field(w):
        return lambda x, s: torch.tanh(x @ w) * s.view(-1, 1) + x * (1 - s.view(-1, 1))

    return ModelPair(field(w_large), field(w_small))


def test_the_probe_and_the_evaluator_step_exactly_as_the_sampler_does():
    from adaptive.calibration import Evaluator, PlanQuality
    from adaptive.metrics import LatentSimilarity
    from adaptive.probing import run_probe

    pair = _toy_pair()
    curve, reference = run_probe(pair, [{}], 12, [0, 1], 3.0, (6,), progress=False)
    grid = sigmas(12, 3.0)
    noise = reference.states[0]
    assert torch.equal(sample(pair, noise, grid, None), reference.final)
    evaluator = Evaluator(pair, reference, LatentSimilarity(), small_cost=0.3)
    metric = LatentSimilarity()
    for start, stop in [(2, 5), (2, 8), (0, 12), (5, 12)]:
        models = ["small" if start <= i < stop else "large" for i in range(12)]
        blended = sample(pair, noise, grid, Schedule.from_steps(grid, models))
        assert evaluator.qualities(start, stop).tolist() == metric(blended, reference.final).tolist()
        assert PlanQuality(evaluator)(1, models) == float(metric(blended[1:], reference.final[1:]).mean())


def test_the_calibration_package_keeps_every_name_scripts_import():
    import adaptive.calibration as calibration
    from adaptive.calibration import (DEFAULT_QUALITY_TARGET, Evaluator, Plan, StepSearch, best_window,  # noqa: F401
                                      calibrate, refine, small_cost_ratio, sweep)

    assert Plan is MeasuredPlan and all(hasattr(calibration, name) for name in calibration.__all__)
    assert dataclasses.replace(Plan(30, 0, 0, 1.0, 1.0), steps=9).is_large_only


def test_fields_a_record_does_not_know_still_load_and_the_store_keeps_old_files_byte_for_byte(tmp_path):
    """A file written by another version or tool (extra nested fields, a null study name) loads as
    before; replacing a stored file keeps its bytes as ``.previous``, and one that does not load at all
    is kept the same way (with a warning), never overwritten unseen."""
    import json
    import warnings

    data = json.loads(SHIPPED[0].read_text())
    data["cost"]["flops_ratio"] = 0.2
    data["quality"]["samples"] = 24
    data["calibration"]["study_name"] = None
    data["curve"]["probe_steps"] = [0, 1]
    profile = Profile.from_dict(data, "x.json")
    assert profile.curve is not None and list(profile.curve.rel_l2) == data["curve"]["rel_l2"]
    assert profile.cost.fraction_of_large == data["cost"]["fraction_of_large"] and profile.calibration.study_name is None

    store = ProfileStore(tmp_path)
    path = store.path_for(profile.pair_fingerprint, profile.sampler)
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    assert store.save(profile, force=True) == path
    assert path.with_name(path.name + ".previous").read_bytes() == before  # the unknown fields too
    path.write_text('{"schema_version": 2, "pair_fingerprint": 7}')  # does not load
    broken = path.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.save(profile)
    assert path.with_name(path.name + ".previous").read_bytes() == broken
    assert any("does not load" in str(w.message) for w in caught)


def test_a_profile_given_records_checks_them_as_it_checks_json():
    """A record passed to Profile is validated like its JSON: a plan outside the grid, or a recommended
    plan without its sigma boundaries, is refused at construction, not after it was saved."""
    common = dict(pair_fingerprint="f", sampler="euler-12-shift3", num_steps=12, shift=3.0, sigma_in=0.8, sigma_out=0.3)
    with pytest.raises(ProfileError, match="plan: needs 0 <= sigma_out <= sigma_in <= 1"):
        Profile(**common, plan=MeasuredPlan(9, 2, 5, 0.97, 0.3))
    with pytest.raises(ProfileError, match=r"frontier\[0\]: steps must be in \[1, 12\]"):
        Profile(**common, frontier=(MeasuredPlan(40, 0, 0, 1.0, 1.0),))
    with pytest.raises(ProfileError, match="controller.patience must be an integer"):
        Profile(**common, controller=ControllerConfig(threshold=0.1, sigma_out=0.3, patience=1.5))  # type: ignore[arg-type]
