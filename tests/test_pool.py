"""Plans over a pool of denoisers: schedules that relabel sigma intervals, the pool and its costs, and
the search that places a guidance interval and model windows, checked on analytic velocity fields
whose safe segments are known exactly."""

from __future__ import annotations

import warnings

import pytest
import torch

from adaptive import ModelPair, Schedule, ScheduleError, sample, sigmas
from adaptive.calibration.segments import GUIDANCE, FoundPlan, find_plan, window
from adaptive.errors import CalibrationError, PairMismatchError
from adaptive.metrics import rel_l2
from adaptive.pool import Pool
from adaptive.schedule import base_of, unguided
from conftest import gaussian_velocity

EXACT = gaussian_velocity(0.5, 0.5)


def closeness(generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return 1 - rel_l2(generated, reference)


def inside(lo: float, hi: float):
    return lambda s: ((s > lo) & (s <= hi)).to(torch.float32).view(-1, 1)


def off_outside(lo: float, hi: float, size: float = 3.0):
    """The exact velocity inside (lo, hi], a wrong one (shifted by ``size``) outside."""
    return lambda x, s, **_: EXACT(x, s) + size * (1 - inside(lo, hi)(s))


def expected_steps(grid: list[float], lo: float, hi: float) -> list[int]:
    return [i for i, s in enumerate(grid[:-1]) if lo < s <= hi]


# Schedules over a pool --------------------------------------------------------------------------

def test_relabel_and_guidance_compose_on_every_grid():
    plan = Schedule.lsl(0.8, 0.3).guided_within(0.9, 0.2)
    grid = sigmas(10).tolist()
    assert plan.step_models(grid) == ["large:cond", "large", "small", "small", "small", "small", "small", "large",
                                      "large:cond", "large:cond"]
    # a mapping renames the conditional-only variants of the models it names alike
    split = plan.relabel(1.0, 0.85, inside={"large": "high"}, outside={"large": "low"})
    assert split.step_models(grid)[:2] == ["high:cond", "high"] and split.step_models(grid)[-1] == "low:cond"
    assert Schedule.lsl(0.8, 0.3).relabel(0.0, 0.0, outside=unguided).models == ("large:cond", "small:cond")
    assert base_of("small:cond") == "small"
    with pytest.raises(ScheduleError, match="no cost per call"):
        plan.cost(grid, {"large": 1.0})
    with pytest.raises(ScheduleError, match="sigma_hi"):
        plan.relabel(0.2, 0.5, inside={})


def test_experts_boundary_follows_diffusers_on_the_boundary():
    """diffusers' Wan 2.2 switch runs a step starting at t >= boundary_ratio * 1000 on the high expert."""
    grid = [1.0, 0.875, 0.8749, 0.5, 0.0]
    assert Schedule.experts(0.875).step_models(grid) == ["high", "high", "low", "low"]
    ours = Schedule.large_first(0.875, "high", "low")  # our own boundaries give the step to the stage below
    assert ours.step_models(grid)[:2] == ["high", "low"]


def test_pool_costs_given_and_measured():
    pair = ModelPair(lambda x, s, c: -x + c, lambda x, s, c: -x).guided(3.0, {"c": torch.zeros(1, 1)})
    pool = Pool.of(pair, costs={"large": 1.0, "small": 0.3})
    assert pool.costs == {"large": 1.0, "large:cond": 0.5, "small": 0.3, "small:cond": 0.15}
    assert pool.reference == "large" and pool.guided("large") and not pool.guided("large:cond")
    big, little = torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 2, bias=False)
    measured = Pool.of(ModelPair(lambda x, s: big(big(x)), lambda x, s: big(x)), x=torch.ones(3, 8))
    assert measured.costs == pytest.approx({"large": 1.0, "large:cond": 1.0, "small": 0.5, "small:cond": 0.5})
    assert not measured.guided("large")  # no guidance: its variant is the model itself
    with pytest.raises(PairMismatchError, match="give costs"):
        Pool.of(pair)
    with pytest.raises(PairMismatchError, match="positive finite"):
        Pool({"large": EXACT}, {"large": 0.0})
    with pytest.raises(ScheduleError, match="medium"):
        pool.cost(Schedule.large_first(0.5, small="medium"), sigmas(4))


def test_a_pool_runs_a_plan_call_by_call():
    calls: list[tuple[str, float]] = []

    def counted(name: str, fn):
        def model(x, s, **cond):
            calls.append((name, round(float(s[0]), 4)))
            return fn(x, s, **cond)
        return model

    pool = Pool({n: counted(n, EXACT) for n in ("high", "small", "low")}, {"high": 1, "small": 0.2, "low": 1})
    plan = Schedule.experts(0.875).relabel(0.8, 0.4, inside={"high": "small", "low": "small"})
    grid = sigmas(12, 3.0)
    sample(pool, torch.zeros(1, 4), grid, plan, check_every=0)
    assert [n for n, _ in calls] == plan.step_models(grid)
    assert set(plan.step_models(grid)) == {"high", "small", "low"}


# The search, on fields with known answers ----------------------------------------------------------

def guided_pool(lo: float, hi: float) -> Pool:
    """Guided and conditional-only velocities are equal outside (lo, hi] and differ inside it."""
    bump = inside(lo, hi)

    def model(x, s, c):
        return EXACT(x, s) + 2.0 * c * bump(s)

    pair = ModelPair(model, model).guided(4.0, {"c": torch.zeros(1, 1)})
    return Pool.of(pair, costs={"large": 1.0, "small": 1.0})


@pytest.mark.parametrize("num_steps,shift,lo,hi", [(20, 1.0, 0.33, 0.71), (30, 3.0, 0.52, 0.93), (25, 5.0, 0.21, 0.86),
                                                   (12, 2.0, 0.05, 0.47)])
def test_guidance_interval_found_on_grids_and_shifts(num_steps, shift, lo, hi):
    pool = guided_pool(lo, hi)
    found = find_plan(pool, [{"c": torch.ones(1, 1)}], [GUIDANCE], num_steps=num_steps, shift=shift, seeds=[0, 1],
                      shape=(16,), metric=closeness, target=0.99, n_trials=8)
    grid = sigmas(num_steps, shift).tolist()
    truth = expected_steps(grid, lo, hi)
    start, stop = found.windows["guidance"]
    assert abs(start - truth[0]) <= 1 and abs(stop - (truth[-1] + 1)) <= 1  # within one step (here: exact)
    assert [i for i, m in enumerate(found.schedule.step_models(grid)) if m == "large"] == truth
    assert found.quality >= 0.99 and found.cost == pytest.approx(num_steps * 0.5 + len(truth) * 0.5)
    # the obvious alternatives at equal compute were measured, and fall short of the target here
    fewer, unguided_run = found.alternatives["large_fewer"], found.alternatives["no_guidance"]
    assert fewer["cost"] <= found.cost and unguided_run["cost"] <= found.cost
    assert unguided_run["quality"] < 0.99


def test_three_denoisers_each_where_it_is_safe():
    """Medium is exact in (0.2, 0.9], Small in (0.4, 0.7]: the plan is L M S M L with those edges."""
    pool = Pool({"large": EXACT, "medium": off_outside(0.2, 0.9), "small": off_outside(0.4, 0.7)},
                {"large": 1.0, "medium": 0.5, "small": 0.2})
    axes = [window("medium"), window("small", replaces=("medium",))]
    found = find_plan(pool, [{}], axes, num_steps=24, shift=1.0, seeds=[0, 1, 2], shape=(8,), metric=closeness,
                      target=0.99, n_trials=8)
    grid = sigmas(24).tolist()
    want = ["small" if 0.4 < s <= 0.7 else "medium" if 0.2 < s <= 0.9 else "large" for s in grid[:-1]]
    assert found.schedule.step_models(grid) == want
    assert found.quality == pytest.approx(1.0) and found.fraction < 0.6
    assert FoundPlan.from_dict(found.to_dict()) == found


def test_wan22_experts_with_a_small_between_them():
    """The reference runs Wan 2.2's experts; a Small exact in (0.4, 0.8] takes the middle: high -> low
    -> small -> low on the caller's grid, and a cheaper step count is searched jointly."""
    high, low = off_outside(0.875 - 1e-9, 1.0), off_outside(0.0, 0.875)
    pool = Pool({"high": high, "low": low, "small": off_outside(0.4, 0.8)}, {"high": 1.0, "low": 1.0, "small": 0.2})
    found = find_plan(pool, [{}], [window("small", replaces=("high", "low"))], num_steps=[20, 16],
                      reference=Schedule.experts(0.875), shift=3.0, shape=(8,), metric=closeness, target=0.99,
                      n_trials=8)
    grid = found.grid
    want = ["high" if s >= 0.875 else "small" if 0.4 < s <= 0.8 else "low" for s in grid[:-1]]
    assert found.schedule.step_models(grid) == want


def test_search_refuses_bad_input_before_any_model_call():
    calls = []
    pool = Pool({"large": lambda x, s: calls.append(1) or -x}, {"large": 1.0})
    with pytest.raises(CalibrationError, match="guided pool"):
        find_plan(pool, [{}], [GUIDANCE], num_steps=8, shape=(2,))
    with pytest.raises(CalibrationError, match="num_steps"):
        find_plan(pool, [{}], [], num_steps=0, shape=(2,))
    assert not calls


# Calibration's guidance phase ----------------------------------------------------------------------

class Counted(torch.nn.Module):
    """``EXACT + 2 c`` inside (lo, hi] (so guidance matters there only), off by ``off`` outside the
    window where the model is exact; counts the rows of every call."""

    def __init__(self, lo: float, hi: float, exact_in: tuple[float, float] = (0.0, 1.0), off: float = 3.0) -> None:
        super().__init__()
        self.bump, self.exact, self.off, self.rows = inside(lo, hi), inside(*exact_in), off, 0

    def forward(self, x, sigma, c):
        self.rows += x.shape[0]
        return EXACT(x, sigma) + 2.0 * c * self.bump(sigma) + self.off * (1 - self.exact(sigma))


@pytest.mark.parametrize("budget", [None, 3.0])
def test_calibrate_finds_the_guidance_interval_and_charges_every_call(tmp_path, budget):
    from adaptive import calibrate

    lo, hi = 0.33, 0.71
    large, small = Counted(lo, hi), Counted(lo, hi, exact_in=(0.4, 0.8))
    pair = ModelPair(large, small, metric=closeness).guided(4.0, {"c": torch.zeros(1, 1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile = calibrate(pair, [{"c": torch.ones(1, 1)}, {"c": torch.ones(1, 1)}], num_steps=20, seeds=[0, 1],
                            shape=(8,), quality_target=0.99, n_trials=16, store=tmp_path, progress=False,
                            budget=budget)
    samples, ratio = 4, profile.cost.small_cost_ratio
    # a guided call is 2 rows per sample (one Large call), a conditional one 1; the input check and the FLOP
    # count call each guided model once on one sample (2 rows each): not calibration work
    counted = ((large.rows - 4) + ratio * (small.rows - 4)) / 2 / samples
    assert profile.cost.calibration_large_equivalents_per_sample == pytest.approx(counted, rel=1e-9)
    phases = dict(profile.cost.passes_by_phase)
    if budget is not None:
        assert profile.cost.calibration_passes <= budget + 1e-9
    if budget is not None and profile.guidance_for(profile.steps) is None:  # the budget ran out first: said so
        assert "guidance candidate(s)" in profile.cost.unexplored
    else:
        interval = profile.guidance_for(profile.steps)
        assert interval is not None and phases["guidance"] > 0
        grid = sigmas(interval.steps, 1.0).tolist()
        truth = expected_steps(grid, lo, hi)
        assert interval.start <= truth[0] and interval.stop >= truth[-1] + 1  # never cuts guidance that matters
        if budget is None:  # searched to the end: the known interval, within one step
            assert abs(interval.start - truth[0]) <= 1 and abs(interval.stop - (truth[-1] + 1)) <= 1
            assert interval.no_guidance_quality is not None and interval.no_guidance_quality < 0.99
        assert interval.quality >= 0.99 and interval.cost < profile.plan.cost
        assert "Guidance only on steps" in profile.decision
        # the stored plan runs it: one call per step outside the interval, two inside
        plan = profile.plan_schedule()
        before = large.rows + small.rows
        sample(pair, torch.zeros(1, 8), sigmas(profile.steps, 1.0), profile, check_every=0, c=torch.ones(1, 1))
        names = plan.step_models(sigmas(profile.steps, 1.0))
        assert large.rows + small.rows - before == sum(1 if n.endswith(":cond") else 2 for n in names) + 4  # + the check


# What a hostile review found ------------------------------------------------------------------------

def test_guidance_at_scale_one_is_no_guidance(tmp_path):
    from adaptive import calibrate

    pair = ModelPair(Counted(0.3, 0.7), Counted(0.3, 0.7, exact_in=(0.4, 0.8)), metric=closeness).guided(
        1.0, {"c": torch.zeros(1, 1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile = calibrate(pair, [{"c": torch.ones(1, 1)}] * 2, num_steps=10, seeds=[0, 1], shape=(8,),
                            quality_target=0.99, n_trials=6, store=tmp_path, progress=False)
    assert profile.guidance == () and "guidance" not in dict(profile.cost.passes_by_phase)


def test_a_plan_without_guidance_runs_on_models_without_it():
    """A stored plan's conditional-only steps run an unguided model as it is (its one call)."""
    plan = Schedule.lsl(0.8, 0.3).guided_within(0.9, 0.2)
    pair = ModelPair(EXACT, EXACT)
    with_names = sample(pair, torch.ones(2, 3), sigmas(10), plan)
    torch.testing.assert_close(with_names, sample(pair, torch.ones(2, 3), sigmas(10), Schedule.lsl(0.8, 0.3)))


def test_guided_large_with_an_unguided_small():
    """A distilled Small has no guidance to skip: the guidance axis leaves its steps alone."""
    bump = inside(0.3, 0.7)
    large = ModelPair(lambda x, s, c: EXACT(x, s) + 2 * c * bump(s), EXACT).guided(4.0, {"c": torch.zeros(1, 1)})
    pool = Pool.of({"large": large.large, "small": off_outside(0.4, 0.8)}, costs={"large": 1.0, "small": 0.2})
    assert pool.costs == {"large": 1.0, "large:cond": 0.5, "small": 0.2, "small:cond": 0.2}
    grid = sigmas(20).tolist()
    for axes in ([GUIDANCE, window("small")], [window("small"), GUIDANCE]):
        found = find_plan(pool, [{"c": torch.ones(1, 1)}], axes, num_steps=20, shape=(8,), metric=closeness,
                          target=0.99, n_trials=12)
        # Small takes steps where guidance does not matter and it is exact: sigma in (0.7, 0.8]
        small = [i for i, m in enumerate(found.schedule.step_models(grid)) if base_of(m) == "small"]
        assert small and all(0.7 < grid[i] <= 0.8 for i in small)


def test_decisions_price_steps_without_guidance():
    from adaptive.switch import plan_decisions

    names = ["large:cond", "large", "small", "small:cond", "large"]
    decisions = plan_decisions([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], [names], ["test"])
    assert decisions.cost(0.1) == pytest.approx([(0.5 + 1 + 0.1 + 0.05 + 1) / 5])
    assert decisions.small_steps(0) == [2, 3] and decisions.summary().startswith("row 0: lLSsL")
