"""Issue #27: what calibration spends, in Large passes per calibration sample, by phase, within a budget.

Counted against the models' real calls: every Large and Small call on every sample, wrapped and
summed, is what the profile's cost record says (the ledger is not an estimate)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_calibration import SPECTRUM, OneMinusRelL2, SpectrumVelocity, spectrum_pair  # noqa: E402

from adaptive import CalibrationError, ModelPair, calibrate  # noqa: E402
from adaptive.calibration import Evaluator, Ledger  # noqa: E402
from adaptive.probing import run_probe  # noqa: E402
from adaptive.schedule import sigmas  # noqa: E402


class Counted(torch.nn.Module):
    """A denoiser that counts the samples it is called on (rows of each call)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x, sigma)


def _middle_pair() -> tuple[ModelPair, Counted, Counted]:
    """Small exact for sigma in (0.3, 0.7], far off elsewhere (test_calibration's case b)."""
    large, small = Counted(SpectrumVelocity(SPECTRUM, 10)), Counted(SpectrumVelocity(SPECTRUM, 1, 2.0, (0.3, 0.7)))
    return ModelPair(large, small, sample_shape=(64,), metric=OneMinusRelL2()), large, small


def _calibrate(pair: ModelPair, tmp_path, budget, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibrate(pair, [{}], 30, seeds=[0, 1, 2, 3], shift=3.0, quality_target=0.98,
                         n_trials=kwargs.pop("n_trials", 30), store=tmp_path, progress=False, budget=budget, **kwargs)


@pytest.mark.parametrize("budget", [3.0, 2.0, None])
def test_the_cost_record_is_every_model_call_made_and_stays_within_the_budget(tmp_path, budget):
    pair, large, small = _middle_pair()
    profile = _calibrate(pair, tmp_path / str(budget), budget)
    cost = profile.cost
    samples, steps = 4, 30
    ratio = cost.small_cost_ratio
    # The input check and the FLOP count call each model once on one sample: not calibration work.
    counted = ((large.rows - 2) + ratio * (small.rows - 2)) / samples
    assert cost.calibration_large_equivalents_per_sample == pytest.approx(counted, rel=1e-9)
    assert cost.calibration_passes == pytest.approx(counted / steps)
    phases = dict(cost.passes_by_phase)
    assert sum(phases.values()) == pytest.approx(counted / steps)
    assert phases["probe"] == pytest.approx(1 + ratio)  # Large at every step, Small beside it
    if budget is not None:
        assert cost.calibration_passes <= budget + 1e-9 and cost.budget_passes == budget
    # Whatever the budget, the window Small is exact in is found (the known answer).
    grid = sigmas(profile.plan["steps"], 3.0).tolist()  # on the plan's own grid (fewer steps may pay too)
    small_steps = list(range(profile.plan["start"], profile.plan["stop"]))
    assert small_steps and all(0.3 < grid[i] <= 0.7 for i in small_steps)


def test_a_tighter_budget_explores_less_and_says_what_it_left(tmp_path):
    pair, _, _ = _middle_pair()
    free = _calibrate(pair, tmp_path / "free", None, n_trials=40)
    tight = _calibrate(pair, tmp_path / "tight", 2.0, n_trials=40)
    assert tight.cost.calibration_passes < free.cost.calibration_passes
    assert free.cost.unexplored is None
    assert tight.cost.unexplored and "a larger --budget explores them" in tight.cost.unexplored
    assert tight.calibration["n_trials"] < free.calibration["n_trials"] == 40
    # The record reads back as written.
    from adaptive import Profile

    again = Profile.from_json(tight.to_json())
    assert again.cost == tight.cost and again.cost.passes_by_phase[0][0] == "probe"


def test_a_hopeless_candidate_is_dropped_after_its_first_group_of_samples():
    """Small far off everywhere: screening one window stops after the first of four groups, and
    spends about a quarter of what judging it on every sample costs."""
    pair = ModelPair(SpectrumVelocity(SPECTRUM, 1), SpectrumVelocity(SPECTRUM, 1, error=3.0, exact_in=(1.0, 1.0)),
                     sample_shape=(64,))
    _, reference = run_probe(pair, [{}], 12, list(range(8)), shape=(64,), progress=False)
    screened = Evaluator(pair, reference, OneMinusRelL2(), 0.5)
    quality, seen, cut = screened.screen(2, 10, target=0.99)
    assert (seen, cut) == (2, False) and quality < 0.99
    full = Evaluator(pair, reference, OneMinusRelL2(), 0.5)
    assert full.quality(2, 10) < 0.99
    assert screened.large_equivalents == pytest.approx(full.large_equivalents / 4)
    # Its per-sample values are those of the full judgement, for the samples it saw.
    assert np.allclose(screened.qualities(2, 10, [0, 4]), full.qualities(2, 10)[[0, 4]])


def test_the_budget_stops_a_search_before_it_overruns():
    ledger = Ledger(samples=4, steps=10, budget=2.0)
    with ledger.phase("probe"):
        ledger.charge(11, rows=4)
    assert ledger.affords(9, rows=4) and not ledger.affords(9.5, rows=4)
    ledger.reserve = 0.5
    assert not ledger.affords(9, rows=4)  # the search leaves the reserve to the per-prompt phase
    with ledger.phase("per-prompt"):
        assert ledger.affords(9, rows=4)


@pytest.mark.parametrize("budget", [0.5, 1.0, float("nan"), "3", True])
def test_a_budget_that_cannot_pay_for_the_probe_is_refused_before_any_model_call(tmp_path, budget):
    pair, large, _ = _middle_pair()
    with pytest.raises(CalibrationError, match="budget is in Large passes per calibration sample"):
        calibrate(pair, [{}], 30, seeds=[0], store=tmp_path, progress=False, budget=budget)
    assert large.rows == 0


def test_a_budget_the_probe_would_spend_whole_is_refused_before_the_probe(tmp_path):
    """Issue #38 (low) and #34: a budget of 1.05 passes was accepted, the probe (1 + Small's cost) spent it
    and the profile ran Large alone; now it is refused before the probe, with the probe's price and the
    least budget that leaves something to search with (one dry call per model prices Small)."""
    pair, large, _ = _middle_pair()
    with pytest.raises(CalibrationError, match=r"budget=1.05 .* cannot pay for the probe alone \(1\.\d\d.*budget >= 2\.\d"):
        calibrate(pair, [{}], 30, seeds=[0, 1, 2, 3], shift=3.0, quality_target=0.98, n_trials=5,
                  store=tmp_path, progress=False, budget=1.05)
    assert large.rows <= 2  # the pair's dry call and the one that prices Small, no probe
