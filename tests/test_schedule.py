from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive import Schedule, ScheduleError, SigmaGridError, Stage, sigmas
from adaptive.schedule import SNAP


def test_lsl_small_takes_steps_starting_inside_the_window():
    grid = sigmas(10)
    schedule = Schedule.lsl(0.8, 0.3)
    expected = [i for i, s in enumerate(grid.tolist()[:-1]) if 0.3 < s <= 0.8]
    assert schedule.small_steps(grid) == expected == [2, 3, 4, 5, 6]
    assert schedule.model_for(0.8) == "small" and schedule.model_for(0.3) == "large"


def test_equal_boundaries_mean_large_only():
    assert Schedule.lsl(0.5, 0.5) == Schedule.large_only()
    assert Schedule.lsl(0.5, 0.5).small_steps(sigmas(20)) == []


def test_full_window_is_small_everywhere():
    assert Schedule.lsl(1.0, 0.0).small_steps(sigmas(7)) == list(range(7))


def test_other_constructors():
    grid = sigmas(10)
    assert Schedule.small_first(0.5).small_steps(grid) == [0, 1, 2, 3, 4]
    assert Schedule.large_first(0.5).small_steps(grid) == [5, 6, 7, 8, 9]
    three = Schedule.from_stages([(1.0, 0.7, "large"), (0.7, 0.4, "medium"), (0.4, 0.2, "small"), (0.2, 0.0, "large")])
    assert three.models == ("large", "medium", "small")
    assert three.step_models(grid)[:4] == ["large", "large", "large", "medium"]


def test_from_steps_round_trips_per_step_names():
    grid = sigmas(12, shift=3.0)
    names = ["large"] * 3 + ["small"] * 6 + ["large"] * 3
    schedule = Schedule.from_steps(grid, names)
    assert schedule.step_models(grid) == names
    # Boundaries sit between grid points: robust to the float32 round trip through timesteps.
    assert schedule.step_models((grid * 1000).float() / 1000) == names


@pytest.mark.parametrize("stages, message", [
    ([(1.0, 0.5, "large"), (0.6, 0.0, "small")], "overlap"),
    ([(1.0, 0.5, "large"), (0.4, 0.0, "small")], "gap"),
    ([(1.0, 0.5, "large")], "cover"),
    ([(1.2, 0.0, "large")], "outside"),
    ([(1.0, 0.5, "large"), (0.5, float("nan"), "small")], "outside"),
    ([], "at least one"),
])
def test_bad_stages_raise_clear_errors(stages, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.from_stages(stages)


def test_bad_boundaries():
    with pytest.raises(ScheduleError, match="sigma_in"):
        Schedule.lsl(0.2, 0.6)
    with pytest.raises(ScheduleError, match=r"\[0, 1\]"):
        Schedule.lsl(1.5, 0.2)
    with pytest.raises(ScheduleError, match="training timestep"):
        Schedule.large_only().model_for(500.0)


def test_unknown_model_is_named():
    with pytest.raises(ScheduleError, match="medium"):
        Schedule.from_stages([(1.0, 0.5, "large"), (0.5, 0.0, "medium")]).check_models(["large", "small"])


@pytest.mark.parametrize("grid, message", [
    ([1.0], "num_steps"), ([0.0, 1.0], "descending"), ([1.0, 0.5, 0.5, 0.0], "descending"),
    ([2.0, 0.0], "timesteps"), ([1.0, float("nan"), 0.0], "NaN"),
])
def test_bad_grids(grid, message):
    with pytest.raises(SigmaGridError, match=message):
        Schedule.large_only().step_models(grid)


def test_json_round_trip_and_errors():
    schedule = Schedule.lsl(0.9, 0.25)
    assert Schedule.from_json(schedule.to_json()) == schedule
    for text in ["{", "[]", '{"stages": [{"sigma_hi": 1}]}', '{"version": 99, "stages": []}',
                 '{"stages": [{"sigma_hi": "1", "sigma_lo": 0, "model": "large"}]}']:
        with pytest.raises(ScheduleError):
            Schedule.from_json(text)


def test_schedule_is_immutable():
    with pytest.raises(AttributeError):
        Schedule.large_only().stages = ()  # type: ignore[misc]


unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(a=unit, b=unit, steps=st.integers(1, 60), shift=st.floats(0.5, 8.0))
def test_lsl_properties(a, b, steps, shift):
    sigma_in, sigma_out = max(a, b), min(a, b)
    schedule = Schedule.lsl(sigma_in, sigma_out)
    assert Schedule.from_json(schedule.to_json()) == schedule
    grid = sigmas(steps, shift=shift)
    values = grid.tolist()
    small = schedule.small_steps(grid)
    # A boundary within SNAP of a step's start sigma counts as that sigma (issue #26 item 4).
    assert small == [i for i in range(steps) if sigma_out + SNAP < values[i] <= sigma_in + SNAP]
    assert small == list(range(small[0], small[-1] + 1)) if small else True  # one contiguous block
    assert Schedule.from_steps(grid, schedule.step_models(grid)).step_models(grid) == schedule.step_models(grid)


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.sampled_from(["large", "small", "medium"]), min_size=1, max_size=40),
       shift=st.floats(0.5, 8.0))
def test_from_steps_any_grid(names, shift):
    grid = sigmas(len(names), shift=shift)
    schedule = Schedule.from_steps(grid, names)
    assert schedule.step_models(grid) == names
    assert Schedule.from_json(json.dumps(schedule.to_dict())) == schedule
    stages = schedule.stages
    assert stages[0].sigma_hi == 1.0 and stages[-1].sigma_lo == 0.0
    assert all(math.isclose(x.sigma_lo, y.sigma_hi) for x, y in zip(stages, stages[1:]))


def test_stage_dataclass_is_frozen():
    with pytest.raises(AttributeError):
        Stage(1.0, 0.0, "large").model = "small"  # type: ignore[misc]
