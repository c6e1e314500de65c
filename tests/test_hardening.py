"""Issue #17 items 5-9: problems found by a hostile user, each failing before the fix."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch
from conftest import tiny_wan

from adaptive import CalibrationError, ModelPair, PairMismatchError, Schedule, ScheduleError, calibrate, sample, sigmas
from adaptive.calibration import make_study, refine, Evaluator, StepSearch
from adaptive.metrics import LatentSimilarity
from adaptive.probing import run_probe


# Item 9 ---------------------------------------------------------------------------------------------

def test_schedule_takes_numpy_sigmas_and_refuses_bools():
    assert Schedule.lsl(np.float32(0.8), np.float64(0.3)).small_steps(sigmas(10)) == [2, 3, 4, 5, 6]
    assert Schedule.small_first(np.float32(0.5)).stages[0].sigma_lo == 0.5
    for bad in (True, False, np.bool_(True), float("nan"), "0.5"):
        with pytest.raises(ScheduleError):
            Schedule.lsl(bad, 0.0)


@pytest.mark.parametrize("shift", [math.inf, -math.inf, math.nan, 0.0, -1.0, True])
def test_sigmas_refuses_non_finite_or_non_positive_shift(shift):
    with pytest.raises(ValueError, match="shift"):
        sigmas(3, shift=shift)


def test_calibrate_with_a_seed_count_says_how_to_write_seeds(tmp_path):
    pair = ModelPair(lambda x, s: -x, lambda x, s: -x)
    with pytest.raises(CalibrationError, match=r"range\(3\)"):
        calibrate(pair, [{}], num_steps=4, seeds=3, shape=(4,), n_trials=1, store=tmp_path, progress=False)


def test_a_model_returning_none_is_named_before_sampling():
    pair = ModelPair(lambda x, s: -x, lambda x, s: None)
    with pytest.raises(PairMismatchError, match="'small' returned NoneType"):
        sample(pair, torch.ones(2, 3), sigmas(3), Schedule.lsl(0.8, 0.3))


def test_cond_batch_that_differs_from_the_noise_batch_is_named_every_time():
    pair = ModelPair(tiny_wan(seed=0), tiny_wan(heads=1, layers=1, seed=1))
    x = torch.randn(2, 16, 1, 4, 4)
    sample(pair, x, sigmas(2), None, encoder_hidden_states=torch.randn(2, 5, 32))  # checked, cached
    for _ in range(2):  # before: a deep RuntimeError (cache key without cond shapes)
        with pytest.raises(PairMismatchError, match="does not match the noise batch of 2"):
            sample(pair, x, sigmas(2), None, encoder_hidden_states=torch.randn(3, 5, 32))


def _first_start(study: optuna.Study) -> int:
    dist = {"start": optuna.distributions.IntDistribution(0, 10**6)}
    return study.ask(dist).params["start"]


def test_a_fresh_study_is_deterministic_and_a_joining_worker_samples_differently(tmp_path):
    first = make_study(f"sqlite:///{tmp_path / 'a.db'}", "s")
    fresh = make_study(f"sqlite:///{tmp_path / 'b.db'}", "s")
    assert _first_start(first) == _first_start(fresh)  # both created their study with seed 0
    joined = make_study(f"sqlite:///{tmp_path / 'a.db'}", "s")
    # Before: the joining worker also used TPE seed 0 and proposed the same windows.
    assert _first_start(joined) != _first_start(make_study(f"sqlite:///{tmp_path / 'c.db'}", "s"))


def test_trials_running_in_other_workers_count_against_the_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    pair = ModelPair(lambda x, s: -x, lambda x, s: -0.9 * x)
    curve, reference = run_probe(pair, [{}], 6, [0], 1.0, (4,), None, False)
    search = StepSearch(Evaluator(pair, reference, LatentSimilarity(), 0.5), 1.0)
    other = make_study(url, "shared")
    for _ in range(2):  # another worker holds two trials, still running
        other.ask()
    study = refine(search, None, 0.9, 3, url, "shared", progress=False)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    # Before: 3 more complete trials here (5 in all once the other worker finishes).
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1
