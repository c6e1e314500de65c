"""The measurement layer on analytic pairs with known answers: the one interleaved loop
(adaptive.metering.interleaved), the bench rows and table (adaptive.bench) and the oracle check
(adaptive.oracle, `flowblend oracle`)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_calibration import SPECTRUM, SpectrumVelocity, expected_steps, pair_of, small_wrong_outside, spectrum_pair

from adaptive import Meter, ModelPair, Profile, Schedule, sample, sigmas
from adaptive.bench import BlendPlan, SRDiffusionRule, bench_rows, blend_plan, matched_steps, run_bench
from adaptive.metering import interleaved
from adaptive.metrics import rel_l2
from adaptive.oracle import check_oracle

STEPS = 10


# The loop ----------------------------------------------------------------------------------------
def test_interleaved_alternates_runs_keeps_the_first_output_and_meters_each_run():
    order: list[str] = []
    meter = Meter(ModelPair(lambda x, s: x, lambda x, s: x))

    def run(name: str, schedule: Schedule | None):
        def go() -> torch.Tensor:
            order.append(name)
            return sample(meter.pair, torch.full((2, 3), float(len(order))), sigmas(4), schedule)
        return go

    m = interleaved({"large": run("large", None), "blend": run("blend", Schedule.lsl(0.8, 0.3))}, rounds=3,
                    meter=meter, per_row={"large": 10, "small": 1})
    assert order == ["large", "blend"] * 3  # rounds, not one run's repeats back to back
    assert torch.equal(m.outputs["large"], sample(meter.pair, torch.full((2, 3), 1.0), sigmas(4), None))
    assert m.calls == {"large": {"large": 4, "small": 0}, "blend": {"large": 2, "small": 2}}
    assert m.flops == {"large": 2 * 4 * 10.0, "blend": 2 * 2 * 10.0 + 2 * 2 * 1.0}  # rows x calls x FLOPs per row
    assert all(len(m.seconds[k]) == 3 and len(m.model_seconds[k]) == 3 for k in m.seconds)
    assert all(math.isnan(m.peak_gib[k]) for k in m.seconds)  # no CUDA: nothing to read
    assert m.best("blend") <= m.median("blend") <= max(m.seconds["blend"])
    assert m.total("blend") == pytest.approx(sum(m.seconds["blend"]))


def test_interleaved_with_a_timed_meter_splits_wall_time_from_time_inside_the_models():
    meter = Meter(spectrum_pair(SpectrumVelocity(SPECTRUM, 1)), timed=True)
    noise = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    m = interleaved({"blend": lambda: sample(meter.pair, noise, sigmas(STEPS, 3.0), Schedule.lsl(0.7, 0.3))},
                    rounds=2, meter=meter)
    for wall, inside in zip(m.seconds["blend"], m.model_seconds["blend"]):
        assert 0 < inside <= wall


# Bench rows and the table ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def middle_pair() -> ModelPair:
    """Small exact for sigma in (0.3, 0.7] and off elsewhere; FLOPs of a Small call 1/10 of Large's."""
    return spectrum_pair(SpectrumVelocity(SPECTRUM, 1, error=2.0, exact_in=(0.3, 0.7)))


def test_bench_rows_give_every_peer_the_compute_of_the_plan(middle_pair):
    noise = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    plan = BlendPlan(Schedule.lsl(0.7, 0.3), STEPS, "a test")
    rows = bench_rows(middle_pair, noise, {}, STEPS, 3.0, plan, oracle=Schedule.lsl(0.9, 0.2),
                      other_noise=torch.randn(3, 64))
    names = [row.name.split(" ")[0] for row in rows]
    assert names == ["1.", "1b.", "2.", "3.", "5.", "6a.", "6b.", "6c.", "7.", "8a.", "8b.", "8c.", "8d."]
    by = dict(zip(names, rows))
    grid = sigmas(STEPS, 3.0)
    small = len(plan.schedule.small_steps(grid))
    assert by["3."].name == "3. FlowBlending (a test)" and by["3."].schedule is plan.schedule
    fraction = 1 - small / STEPS * (1 - 0.1)  # Small's FLOPs are a tenth of Large's
    # Small-first and Small-last take as many Small steps as the plan (same compute); Large alone the steps it buys
    assert len(by["6a."].schedule.small_steps(grid)) == len(by["6b."].schedule.small_steps(grid)) == small
    assert by["6a."].schedule.small_steps(grid)[0] == 0 and by["6b."].schedule.small_steps(grid)[-1] == STEPS - 1
    assert by["7."].num_steps == matched_steps(fraction, STEPS) == round(fraction * STEPS)
    assert isinstance(by["6c."].schedule, SRDiffusionRule)
    assert (by["8a."].sampler, by["8a."].num_steps, by["8c."].cache) == ("heun", STEPS // 2, 0.1)


def test_run_bench_measures_each_row_against_row_one_in_one_run(middle_pair):
    noise = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    plan = BlendPlan(Schedule.lsl(0.7, 0.3), STEPS, "a test")
    rows = bench_rows(middle_pair, noise, {}, STEPS, 3.0, plan, other_noise=torch.randn(3, 64))

    def quality(videos: torch.Tensor, reference: torch.Tensor | None) -> dict[str, float]:
        return {} if reference is None else {"feature_sim": float(1 - rel_l2(videos, reference).mean())}

    result = run_bench(middle_pair, rows, noise, {}, 3.0, quality, repeats=2, progress=False)
    table = {r["name"].split(" ")[0]: r for r in result["rows"]}
    raw = result["seconds_raw"]
    assert all(len(v) == 2 for v in raw.values()) and list(raw) == [row.name for row in rows]
    small = len(plan.schedule.small_steps(sigmas(STEPS, 3.0)))
    assert small > 0 and table["3."]["flops_saved_pct"] == pytest.approx(100 * small / STEPS * 0.9)
    assert table["2."]["flops_saved_pct"] == pytest.approx(90)
    # the plan's Small window is where Small is exact: the blend is Large's output, Small alone is not
    assert table["3."]["feature_sim"] > 0.999 and table["2."]["feature_sim"] < 0.9
    assert table["1b."]["feature_sim"] < 0.9  # other noise, other samples
    assert torch.equal(result["outputs"][rows[3].name], sample(middle_pair, noise, sigmas(STEPS, 3.0), plan.schedule))
    assert "feature_sim" not in table["1."] and table["1."]["speedup"] == 1.0


def test_blend_plan_takes_the_profiles_recommended_plan_on_its_own_grid():
    plan = {"steps": 9, "start": 0, "stop": 0, "sigma_in": 0.0, "sigma_out": 0.0, "quality": 0.96, "cost": 0.3}
    profile = Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
                      sigma_out=0.4, plan=plan)
    fallback = Schedule.lsl(0.85, 0.3)
    chosen = blend_plan(profile, 30, fallback)
    assert (chosen.steps, chosen.source) == (9, "recommended plan, profile euler-30-shift3: Large, 9 steps")
    assert blend_plan(profile, 20, fallback) == BlendPlan(profile.schedule(), 20, "profile euler-30-shift3")
    assert blend_plan(None, 20, fallback) == BlendPlan(fallback, 20, "default window (no profile stored)")
    # the plan takes fewer steps than the table: the profile's best full-grid window gets a row of its own
    pair = spectrum_pair(SpectrumVelocity(SPECTRUM, 1))
    rows = bench_rows(pair, torch.randn(2, 64), {}, 30, 3.0, chosen, profile=profile)
    assert [r.name for r in rows if r.name.startswith("3b.")] == ["3b. best 30-step window (profile euler-30-shift3)"]


# The oracle --------------------------------------------------------------------------------------
def test_check_oracle_finds_the_known_window_and_writes_what_bench_reads(tmp_path):
    pair = pair_of(small_wrong_outside(0.3, 0.7))
    report = check_oracle(pair, [{}], 12, seeds=[0, 1], target=0.999, trials=8, progress=False, command="test")
    steps = expected_steps(0.3, 0.7)
    assert list(range(report.oracle.start, report.oracle.stop)) == steps and report.oracle.quality >= 0.999
    assert (report.proposal.start, report.proposal.stop) == (steps[0], steps[-1] + 1)  # the detector sees it too
    assert report.distance(report.refined) == 0 and report.refined.quality >= 0.999
    spent = report.large_equivalents
    assert spent["probe"] == pytest.approx(12 * (1 + report.small_cost)) and spent["refinement"] < spent["sweep"]
    data = json.loads(report.save(tmp_path / "oracle.json").read_text())
    assert data["command"] == "test" and data["refined"]["trials"] == 8 and data["proposal"]["steps_from_oracle"] == 0
    window = Schedule.lsl(data["oracle"]["sigma_in"], data["oracle"]["sigma_out"])  # what bench --oracle runs
    assert window.small_steps(sigmas(12)) == steps
