"""Bad input, fuzzed; crash-safe profile writes; nothing loads pickles."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive import ChangePointDetector, CurveError, Profile, ProfileError, Schedule, ScheduleError, SigmaGridError
from adaptive.profile_store import ProfileStore, safe_key
PACKAGE = Path(__file__).resolve().parents[1] / "adaptive"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _valid_profile() -> Profile:
    return Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
                   sigma_out=0.3, small_steps=(4, 5, 6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_profile_from_arbitrary_json_is_a_profile_or_a_profile_error(data):
    try:
        profile = Profile.from_json(json.dumps(data))
    except ProfileError:
        return
    assert 0 <= profile.sigma_out <= profile.sigma_in <= 1


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 400), junk=st.binary(max_size=20))
def test_truncated_or_garbled_profile_files(tmp_path_factory, cut, junk):
    path = tmp_path_factory.mktemp("p") / "profile.json"
    text = _valid_profile().to_json().encode()
    path.write_bytes(text[:cut] + junk)
    try:
        loaded = Profile.load(path)
    except ProfileError as err:
        assert str(path) in str(err)
        return
    assert loaded.sigma_in == 0.8


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["sigma_in", "sigma_out", "num_steps", "schema_version", "small_steps", "curve"]),
       value=json_values)
def test_profile_with_a_wrong_field(field, value):
    data = _valid_profile().to_dict()
    data[field] = value
    try:
        Profile.from_json(json.dumps(data))
    except ProfileError:
        pass


NESTED_FIELDS = [("per_prompt", "windows"), ("per_prompt", "windows", "k1"), ("per_prompt", "windows", "k1", "sigma_in"),
                 ("per_prompt", "windows", "k1", "sigma_out"), ("per_prompt", "windows", "k1", "start"),
                 ("per_prompt", "windows", "k1", "stop"), ("per_prompt", "candidates"), ("controller",),
                 ("controller", "threshold"), ("controller", "sigma_out"), ("controller", "patience"),
                 ("controller", "probe_budget"), ("controller", "monitor_threshold"), ("controller", "regression"),
                 ("controller", "small_span"), ("controller", "fallback"),
                 ("controller", "regression", "coef"), ("controller", "regression", "mean"),
                 ("controller", "regression", "scale"), ("controller", "regression", "intercept"),
                 ("controller", "regression", "features"), ("quality", "target"), ("quality", "metric"),
                 ("cost", "fraction_of_large"), ("calibration", "n_trials")]


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(NESTED_FIELDS), value=json_values | st.floats(allow_nan=False))
def test_profile_with_a_wrong_nested_field_fails_at_load_or_samples(path, value):
    """Issue #17 item 6: a nested field either fails at load (ProfileError) or works where sampling reads it."""
    from test_hardening import _rich_profile

    from adaptive import sigmas
    from adaptive.controller import ControllerConfig
    from adaptive.profile_store import weaker_than
    profile = _rich_profile()
    data = profile.to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        loaded = Profile.from_json(json.dumps(data))
    except ProfileError:
        return
    grid = sigmas(loaded.num_steps, loaded.shift)
    for key in ("k1", "unseen"):
        loaded.schedule_for(key).step_models(grid)
    if loaded.controller:
        ControllerConfig.from_dict(loaded.controller).predict_sigma_out([0.1, 0.5])
    weaker_than(loaded, profile)
    loaded.decision


@settings(max_examples=300, deadline=None)
@given(data=json_values)
def test_schedule_from_arbitrary_json(data):
    try:
        schedule = Schedule.from_json(json.dumps(data))
    except ScheduleError:
        return
    assert schedule.stages[0].sigma_hi == 1.0 and schedule.stages[-1].sigma_lo == 0.0


@settings(max_examples=300, deadline=None)
@given(grid=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=12))
def test_step_mapping_of_arbitrary_grids(grid):
    schedule = Schedule.lsl(0.7, 0.2)
    try:
        names = schedule.step_models(grid)
    except SigmaGridError:
        return
    assert len(names) == len(grid) - 1
    assert all(n == schedule.model_for(s) for n, s in zip(names, grid))


@settings(max_examples=300, deadline=None)
@given(curve=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40))
def test_detector_on_arbitrary_curves(curve):
    try:
        result = ChangePointDetector().fit(np.asarray(curve, dtype=float)).predict()
    except CurveError:
        return
    assert result is None or 0 <= result.sigma_out <= result.sigma_in <= 1


def test_keys_cannot_escape_the_store(tmp_path):
    store = ProfileStore(tmp_path)
    for evil in ["../../x", "/etc/passwd", "..", "a/b\\c", "\x00", ""]:
        path = store.path_for(evil, evil).resolve()
        assert path.parent == tmp_path.resolve()
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", safe_key(evil))


_WRITER = """
import sys
from adaptive.profiles import Profile
big = {"rel_l2": [0.1] * 50000}
i = 0
while True:
    i += 1
    Profile(pair_fingerprint="abc", sampler="s", num_steps=30, shift=3.0, sigma_in=0.8, sigma_out=0.3,
            curve=big, note=str(i)).save(sys.argv[1])
    if i == 1:
        print("ready", flush=True)
"""


def test_killing_writers_never_leaves_a_torn_profile(tmp_path):
    path = tmp_path / "profile.json"
    _valid_profile().save(path)
    kills, torn, completed = 0, 0, set()
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.037 * round_)  # land the kill at different points of the write loop
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        try:
            completed.add(Profile.load(path).note)
        except ProfileError:
            torn += 1
    leftovers = [p for p in os.listdir(tmp_path) if p != "profile.json"]
    print(f"kills={kills} torn={torn} leftover temp files={len(leftovers)} distinct complete writes={len(completed)}")
    assert torn == 0
    assert all(p.startswith(".profile.json.") for p in leftovers)  # only ever the writer's own temp files


def test_no_pickle_or_torch_load_in_the_package():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for pattern in (r"\bimport pickle\b", r"\bpickle\.", r"torch\.load\(", r"\bdill\b", r"joblib"):
            if re.search(pattern, text):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


def test_saved_profiles_follow_the_umask_so_a_shared_store_stays_readable(tmp_path):
    import os
    import stat

    from adaptive import Profile, ProfileStore

    old = os.umask(0o022)
    try:
        path = ProfileStore(tmp_path).save(Profile(pair_fingerprint="abc", sampler="euler-8-shift1", num_steps=8,
                                                   shift=1.0, sigma_in=0.8, sigma_out=0.3))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
