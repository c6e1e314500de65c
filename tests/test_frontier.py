"""The measured frontier (adaptive.frontier, `flowblend frontier`): every one-window blend against
Large with fewer steps, on exact Gaussian flows whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_calibration import SPECTRUM, OneMinusRelL2, SpectrumVelocity, spectrum_pair

from adaptive import ModelPair
from adaptive.frontier import Frontier, Point, measure_frontier

STEPS = 20


def _frontier(small: SpectrumVelocity, **kw) -> Frontier:
    return measure_frontier(spectrum_pair(small), [{}], STEPS, seeds=[0, 1, 2, 3], shift=3.0, progress=False, **kw)


@pytest.fixture(scope="module")
def exact_in_the_middle() -> Frontier:
    return _frontier(SpectrumVelocity(SPECTRUM, 1, error=2.0, exact_in=(0.3, 0.7)))


def test_every_window_and_every_large_step_count_is_measured(exact_in_the_middle):
    f = exact_in_the_middle
    assert sorted(f.large_fewer()) == list(range(1, STEPS + 1))
    assert len(f.blends()) == STEPS * (STEPS + 1) // 2
    assert f.metric == "one_minus_rel_l2" and f.samples == 4
    assert f.large_fewer()[STEPS].quality(f.metric) == 1.0
    # compute: Large alone costs k / n; a window of w Small steps saves w (1 - r) Large calls
    r = f.small_cost
    assert 0.05 < r < 0.2
    window = f.find(STEPS, 5, 9)
    assert window is not None and window.cost == pytest.approx((STEPS - 4 * (1 - r)) / STEPS)
    # the flow bends: fewer Large steps lose quality, monotonically
    q = [f.large_fewer()[k].quality(f.metric) for k in range(1, STEPS + 1)]
    assert q[STEPS // 3] < 0.9 and all(a <= b + 1e-9 for a, b in zip(q, q[1:]))


def test_a_small_exact_in_the_middle_beats_fewer_large_steps_inside_its_window(exact_in_the_middle):
    f = exact_in_the_middle
    grid = torch.tensor([float(s) for s in __import__("adaptive").sigmas(STEPS, 3.0)])
    winners = f.winners()
    assert winners, f.table()
    for c in winners:  # every winning window lies where Small is exact
        assert all(0.3 < grid[i] <= 0.7 for i in range(c.point.start, c.point.stop)), c.describe()
        assert c.other.is_large_only and c.other.cost <= c.point.cost + 1e-9
    best = f.cheapest(0.98)
    assert not best.is_large_only and "on the measured frontier" in f.verdict(best.steps, best.start, best.stop)
    # a window over the unsafe high-noise steps is beaten by Large with fewer steps
    bad = f.verdict(STEPS, 0, 4)
    assert bad.startswith("NOT on the measured frontier"), bad
    assert best in f.pareto()


def test_a_bad_small_on_a_curved_flow_never_beats_fewer_large_steps():
    wrong = SPECTRUM.clone()
    wrong[:4] *= 3.0
    wrong[16:] *= 0.2
    f = _frontier(SpectrumVelocity(wrong, 1, error=0.5, exact_in=(1.0, 1.0)))
    assert f.winners() == []
    assert all(p.is_large_only for p in f.pareto() if p.quality(f.metric) > 0.5)
    assert f.cheapest(0.9).is_large_only


def test_frontier_round_trips_and_writes_its_table_and_plot(exact_in_the_middle, tmp_path):
    f = exact_in_the_middle
    path = f.save(tmp_path / "f.json")
    assert Frontier.load(path) == f
    table = f.table()
    assert f"| one_minus_rel_l2 | {len(f.winners())} of {len(f.blends())} |" in table
    assert f.plot(tmp_path / "f.png", highlight=[f.cheapest(0.98)]).stat().st_size > 10_000
    assert json.loads(path.read_text())["points"][0]["scores"]["one_minus_rel_l2"]


def test_the_paired_comparison_sees_sample_noise():
    """Two plans that differ by less than the spread of their per-sample differences do not beat
    each other; the same mean difference on consistent samples does."""
    scores = {"m": (0.90, 0.99, 0.85, 0.97)}
    a = Point(4, 0, 0, 0.5, scores)
    noisy = Point(4, 1, 2, 0.4, {"m": (0.95, 0.94, 0.90, 0.93)})
    steady = Point(4, 2, 3, 0.4, {"m": tuple(v + 0.01 for v in scores["m"])})
    f = Frontier("p", 4, 1.0, 0.1, "m", (a, noisy, steady), 4)
    assert not f.compare(noisy, a).beats()
    assert f.compare(steady, a).beats() and f.compare(steady, a).difference == pytest.approx(0.01)


def test_every_metric_is_recorded_and_bad_requests_fail_before_any_work():
    pair = ModelPair(SpectrumVelocity(SPECTRUM, 4), SpectrumVelocity(SPECTRUM * 0.9, 1), sample_shape=(64,))
    from adaptive.metrics import LatentSimilarity

    f = measure_frontier(pair, [{}], 4, seeds=[0], metrics={"rel": OneMinusRelL2(), "cos": LatentSimilarity()},
                         blend_steps=[2, 4], extra=[(3, 1, 2)], progress=False)
    assert f.metric == "rel" and f.metrics == ["rel", "cos"]
    assert len(f.blends()) == 3 + 10 + 1 and f.find(3, 1, 2) is not None
    assert all(np.isfinite(p.quality("cos")) for p in f.points)
    for kwargs, message in (({"blend_steps": [5]}, "blend_steps"), ({"extra": [(4, 3, 5)]}, "extra plan"),
                            ({"metrics": {}}, "at least one metric")):
        with pytest.raises(ValueError, match=message):
            measure_frontier(pair, [{}], 4, seeds=[0], progress=False, **kwargs)


# A peer: SRDiffusion's online rule (bench row 6c) ------------------------------------------------


def test_srdiffusion_rule_online_matches_its_offline_hand_over_and_the_matched_compute():
    from adaptive import Schedule, sample, sigmas
    from adaptive.bench import Row, SRDiffusionRule, _flops, _run, velocity_changes

    wrong = SPECTRUM.clone()
    wrong[:8] *= 2.0
    pair = spectrum_pair(SpectrumVelocity(wrong, 1))
    noise = torch.randn(6, 64, generator=torch.Generator().manual_seed(3))
    grid = sigmas(STEPS, 3.0)
    changes = velocity_changes(pair, noise, grid, {})
    assert changes.shape == (STEPS - 1, 6)
    rule = SRDiffusionRule.matched(changes, 0.6, 0.1, STEPS)
    first = rule.handover(changes)
    assert ((first > 2) & (first <= STEPS)).any()  # it fires, and never before it has two changes to compare
    # Online, each row runs Large until its own hand-over step and Small after it, never back.
    online = _run(pair, Row("srd", rule, STEPS), noise, 3.0, {})
    for row in range(6):
        plan = Schedule.from_steps(grid, ["large"] * int(first[row]) + ["small"] * (STEPS - int(first[row])))
        alone = sample(pair, noise[row:row + 1], grid, plan)
        assert torch.allclose(online[row:row + 1], alone, atol=1e-5), row
    # the matched threshold buys the asked compute (within a step per row), counted as FLOPs
    small_share = np.clip(STEPS - first, 0, STEPS).mean() / STEPS
    flops = _flops(pair, Row("srd", rule, STEPS), noise, 3.0, {}) / _flops(pair, Row("L", None, STEPS), noise, 3.0, {})
    assert flops == pytest.approx(1 - small_share * (1 - pair_cost(pair)), abs=0.02)
    assert abs((1 - small_share * 0.9) - 0.6) < 1.0 / STEPS + 0.05


def pair_cost(pair) -> float:
    from adaptive.metering import flops_per_row

    flops = flops_per_row(pair, torch.zeros(1, 64))
    return flops["small"] / flops["large"]
