"""Issue #38: hardening, round 3 — each test fails on the code before its fix."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from conftest import tiny_wan

from adaptive import CalibrationError, ModelPair, PairMismatchError, Pool, Schedule, ScheduleError, calibrate, sigmas
from adaptive.calibration.segments import GUIDANCE, FoundPlan, find_plan, window
from adaptive.cli import main


class GradRecorder(torch.nn.Module):
    """An analytic denoiser with a trainable parameter (as diffusers' from_pretrained leaves them): records
    whether autograd was on at each call."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(scale))
        self.grad_on: list[bool] = []

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.grad_on.append(torch.is_grad_enabled())
        s = sigma.view(-1, *[1] * (x.ndim - 1))
        return self.weight * (x - (1 - s) * c.view(-1, *[1] * (x.ndim - 1)))


def _guided_recorders():
    large, small = GradRecorder(1.0), GradRecorder(0.97)
    pair = ModelPair(large, small, sample_shape=(4,)).guided(3.0, {"c": torch.zeros(1, 1)})
    return large, small, pair


# High 1: no model call in calibration (its guidance phase included), find_plan or the frontier keeps a graph ---

def test_calibration_with_its_guidance_phase_never_runs_a_model_with_autograd(tmp_path):
    large, small, pair = _guided_recorders()
    conds = [{"c": torch.full((1, 1), v)} for v in (0.5, -0.5)]
    profile = calibrate(pair, conds, num_steps=6, seeds=[0, 1], n_trials=4, store=tmp_path, progress=False,
                        budget=None)
    assert profile.guidance or profile.calibration.guidance_scale == 3.0
    calls = large.grad_on + small.grad_on
    assert calls and not any(calls), f"{sum(calls)} of {len(calls)} model calls ran with autograd on"


def test_find_plan_and_the_frontier_never_run_a_model_with_autograd():
    from adaptive.frontier import measure_frontier

    large, small, pair = _guided_recorders()
    conds = [{"c": torch.full((1, 1), 0.5)}]
    find_plan(Pool.of(pair, costs={"large": 1.0, "small": 0.2}), conds, [GUIDANCE], num_steps=4, seeds=[0, 1],
              shape=(4,), n_trials=2)
    measure_frontier(pair, conds, 3, [0, 1], 1.0, blend_steps=(3,))
    calls = large.grad_on + small.grad_on
    assert calls and not any(calls)


def test_the_cli_loader_freezes_the_models_it_loads(tmp_path):
    import argparse

    from safetensors.torch import save_file

    from adaptive.cli.options import load_user_pair as _load_user_pair

    tiny_wan(heads=2, layers=1, seed=0).save_pretrained(tmp_path / "large")
    tiny_wan(heads=1, layers=1, seed=1).save_pretrained(tmp_path / "small")
    save_file({"prompt_embeds": torch.randn(1, 3, 32)}, str(tmp_path / "emb.safetensors"))
    args = argparse.Namespace(large=str(tmp_path / "large"), small=str(tmp_path / "small"), dtype=torch.float32,
                              device="cpu", allow_download=False, embeddings=str(tmp_path / "emb.safetensors"),
                              shape="16,1,4,4", guidance=4.0)
    pair, _ = _load_user_pair(args)
    params = [p for m in pair.modules().values() if m is not None for p in m.parameters()]
    assert params and not any(p.requires_grad for p in params)


# High 2: guidance is never applied twice ----------------------------------------------------------------

def test_a_guided_pair_cannot_be_guided_again_and_the_message_says_what_to_do():
    base = ModelPair(lambda x, s, c: x + c, lambda x, s, c: x)
    pair = base.guided(5.0, {"c": torch.zeros(1, 1)})
    with pytest.raises(PairMismatchError, match=r"already guided \(scale 5\).*base.guided"):
        pair.guided(5.0, {"c": torch.zeros(1, 1)})
    with pytest.raises(PairMismatchError, match="already guided"):
        Pool.of(pair.guided(5.0), costs={"large": 1.0, "small": 0.1})
    Pool.of(pair, costs={"large": 1.0, "small": 0.1})  # the once-guided pair is what a pool takes


# Medium 3 and 7: one rule for guidance scales -------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.0, -2.0, 0.5, math.nan, math.inf, True])
def test_a_guidance_scale_below_one_or_not_finite_is_refused_when_given(scale):
    with pytest.raises(PairMismatchError, match=r"finite number >= 1 \(1: no guidance"):
        ModelPair(lambda x, s: -x, lambda x, s: -x).guided(scale)


def test_scale_one_is_no_guidance():
    pair = ModelPair(lambda x, s, c: x + c, lambda x, s, c: x).guided(1.0, {"c": torch.zeros(1, 1)})
    out = pair.large(torch.zeros(1, 2), 0.5, c=torch.ones(1, 1))
    assert torch.equal(out, torch.ones(1, 2))  # the conditional velocity alone


FAST = ["--steps", "2", "--num-prompts", "1", "--seeds", "1", "--trials", "0"]  # should a check be missed


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_the_cli_refuses_a_guidance_scale_when_parsing(value, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["calibrate", "--guidance", value, *FAST, "--store", str(tmp_path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--guidance" in err and ("finite number >= 1" in err or "expected a number" in err)


# Medium 4: an empty guidance interval is said in words ---------------------------------------------------

def test_an_empty_guidance_interval_reads_no_guidance_on_any_step():
    from adaptive.profiles import Profile
    from adaptive.records import GuidanceInterval

    profile = Profile.load("profiles/6322ceca7d97a2bdafcefe35__euler-30-shift3.json")
    import dataclasses

    empty = GuidanceInterval(profile.steps, 0, 0, 0.0, 0.0, 0.97, 0.5, None, None)
    text = dataclasses.replace(profile, guidance=(empty,)).decision
    assert "No guidance on any step" in text and "0..-1" not in text


# Medium 5 and 6: the CLI checks a diffusers pair's folders and inputs before loading any model --------------

def _folders(tmp_path, weights: bool = True):
    for name, heads in (("large", 2), ("small", 1)):
        tiny_wan(heads=heads, layers=1, seed=heads).save_pretrained(tmp_path / name)
    if not weights:
        for f in (tmp_path / "large").glob("*.safetensors"):
            f.unlink()
    return ["--large", str(tmp_path / "large"), "--small", str(tmp_path / "small")]


def test_a_folder_with_a_config_but_no_weights_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", *_folders(tmp_path, weights=False), "--embeddings", "x", "--shape", "16,1,4,4", *FAST,
              "--store", str(tmp_path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "flowblend calibrate: error: --large" in err and "no weights" in err


def test_missing_embeddings_or_shape_and_a_lone_large_are_found_before_loading(tmp_path, capsys, monkeypatch):
    import diffusers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(diffusers.AutoModel, "from_pretrained", refuse)
    folders = _folders(tmp_path)
    for argv, expected in ((folders, "needs --embeddings and --shape"),
                           (folders[:2], "give both --large and --small"),
                           ([*folders, "--pair", "toy-moving-digits"], "give one of them")):
        with pytest.raises(SystemExit):
            main(["calibrate", *argv, *FAST, "--store", str(tmp_path), "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert "usage: flowblend calibrate" in err and expected in err


# Medium 8: a search the budget stopped says so ----------------------------------------------------------

def test_a_budget_that_stops_the_search_is_named_in_the_note(tmp_path):
    from conftest import gaussian_velocity

    pair = ModelPair(gaussian_velocity(0.0, 0.5), gaussian_velocity(0.3, 0.9), sample_shape=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile = calibrate(pair, [{}], num_steps=20, seeds=[0, 1, 2, 3], quality_target=0.999, n_trials=12,
                            budget=2.0, store=tmp_path, progress=False)
    assert profile.steps == 20 and profile.note
    assert "nan" not in profile.note and "budget of 2" in profile.note and "give more trials" not in profile.note


# Medium 9: find_plan checks its inputs as calibrate does -----------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(conds=[torch.zeros(1, 1)]), "conds must be a non-empty list of dicts.*list of Tensor"),
    (dict(shape=(5,)), "model 'large' failed on a latent of shape"),
    (dict(shape="4"), "shape is the latent of one sample"),
    (dict(conds=[{"c": torch.zeros(2, 1, 1)}]), "has 2 rows; give one dict per prompt"),
    (dict(n_trials=-1), "n_trials must be a non-negative integer"),
    (dict(seeds=3), "seeds must be a non-empty list"),
])
def test_find_plan_refuses_bad_inputs_before_any_search(kwargs, message):
    def large(x, s, c):
        return x @ torch.eye(4) - c

    pool = Pool.of(ModelPair(large, lambda x, s, c: x - c), costs={"large": 1.0, "small": 0.1})
    args = dict(conds=[{"c": torch.zeros(1, 1)}], num_steps=4, seeds=[0], shape=(4,), n_trials=2)
    with pytest.raises((CalibrationError, PairMismatchError), match=message):
        find_plan(pool, axes=[window("small")], **{**args, **kwargs})


# Low: records that loaded silently ---------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(shift=float("nan")), "shift must be a positive finite number"),
    (lambda d: d.update(shift=-3.0), "shift must be a positive finite number"),
    (lambda d: d.update(num_steps=10**9), "disagrees with num_steps"),
    (lambda d: d.update(num_steps=0), "num_steps must be a positive step count"),
    (lambda d: d.update(small_steps=[40, 41]), "must be steps of the grid"),
    (lambda d: d["cost"].update(fraction_of_large=-0.2), "costs are never negative"),
])
def test_a_profile_with_impossible_fields_is_refused_naming_the_field(edit, message):
    from adaptive.errors import ProfileError
    from adaptive.profiles import Profile

    data = json.loads(open("profiles/6322ceca7d97a2bdafcefe35__euler-30-shift3.json").read())
    edit(data)
    with pytest.raises(ProfileError, match=message):
        Profile.from_dict(data)


def test_a_found_plan_with_a_negative_cost_is_refused():
    plan = FoundPlan(Schedule.large_only(), 4, 1.0, 4.0, 4.0, 1.0, 0.95, {}, 0)
    assert FoundPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(CalibrationError, match="cost must be a non-negative"):
        FoundPlan.from_dict({**plan.to_dict(), "cost": -1.0})


@pytest.mark.parametrize("models, costs, message", [
    ({"large": lambda x, s: x}, {"large": "1"}, "positive finite numbers"),
    ({"large": lambda x, s: x}, {"large": True}, "positive finite numbers"),
    ({}, {}, "at least one model"),
])
def test_a_pool_refuses_costs_that_are_not_numbers_and_an_empty_pool(models, costs, message):
    with pytest.raises(PairMismatchError, match=message):
        Pool.of(models, costs=costs)


def test_a_conditional_variant_dearer_than_its_model_is_refused():
    with pytest.raises(PairMismatchError, match=r"large:cond 3 > large 2"):
        Pool({"large": lambda x, s: x, "large:cond": lambda x, s: x}, {"large": 2.0, "large:cond": 3.0})


def test_relabel_refuses_a_function_that_names_no_model():
    with pytest.raises(ScheduleError, match="returned None for model 'large'"):
        Schedule.large_only().relabel(0.8, 0.3, inside=lambda name: None)  # type: ignore[arg-type,return-value]


def test_the_cli_budget_and_schedule_arguments_say_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--budget", "inf", *FAST, "--store", str(tmp_path), "--out", str(tmp_path)])
    assert "finite number of Large passes" in capsys.readouterr().err
    profile = "profiles/6322ceca7d97a2bdafcefe35__euler-30-shift3.json"
    with pytest.raises(SystemExit):
        main(["sample", "--schedule", profile, "--steps", "2", "--store", str(tmp_path), "--out", str(tmp_path)])
    assert "is a profile, not a schedule" in capsys.readouterr().err


def test_find_plan_prints_no_optuna_trial_lines():
    import logging

    import optuna

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    optuna.logging.set_verbosity(optuna.logging.INFO)
    lines = Lines()
    logging.getLogger("optuna").addHandler(lines)
    try:
        pool = Pool.of(ModelPair(lambda x, s: -x, lambda x, s: -0.99 * x), costs={"large": 1.0, "small": 0.1})
        find_plan(pool, [{}], [window("small")], num_steps=4, seeds=[0], shape=(4,), n_trials=2)
    finally:
        logging.getLogger("optuna").removeHandler(lines)
    assert not [m for m in lines.messages if m.startswith("Trial ")]
