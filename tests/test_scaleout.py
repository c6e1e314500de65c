"""Several worker processes share one calibration study; one is killed mid-trial (SIGKILL). Workers
that all open one new database at once all get in.

PostgreSQL: a throwaway cluster on loopback (initdb/pg_ctl in a temp dir) unless
ADAPTIVE_TEST_POSTGRES_URL names one. If PostgreSQL is not installed the test is skipped with a
loud reason. The same scenario runs on Optuna's JournalFile backend, which needs no server.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from glob import glob
from pathlib import Path

import optuna
import pytest
import torch
from conftest import gaussian_velocity

from adaptive import ModelPair, ProfileStore, calibrate
from adaptive.storage import open_storage

STEPS = 10
TRIALS = 12
LARGE = gaussian_velocity(0.5, 0.3)


def _slow_large(x, sigma):
    time.sleep(0.05)  # every trial takes time (Small prefixes are cached), so a kill lands inside one
    return LARGE(x, sigma)


def _slow_small(x, sigma):
    time.sleep(0.15)
    inside = ((sigma > 0.3) & (sigma <= 0.7)).to(x.dtype).view(-1, 1)
    return LARGE(x, sigma) + (1 - inside) * 2.0


def _worker(storage_url: str, study: str, root: str, heartbeat: bool) -> None:
    torch.set_num_threads(1)
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=3) if heartbeat else storage_url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrate(ModelPair(_slow_large, _slow_small, sample_shape=(4,)), [{}], STEPS, seeds=[0, 1], n_trials=TRIALS,
                  storage=storage, study_name=study, store=root, progress=False,
                  search_steps=False, budget=None)  # storage robustness on the window search, every trial run


def _run_workers(storage_url: str, root: Path, heartbeat: bool, study_name: str = "shared"
                 ) -> tuple[optuna.Study, dict]:
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(storage_url, study_name, str(root), heartbeat)) for _ in range(3)]
    started = time.time()
    for w in workers:
        w.start()
    victim, killed_trial = None, -1
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
        except KeyError:
            continue
        running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if t.user_attrs.get("worker_pid") in {w.pid for w in workers}]
        if running and len(study.trials) >= 3:
            victim = next(w for w in workers if w.pid == running[0].user_attrs["worker_pid"])
            os.kill(victim.pid, signal.SIGKILL)
            killed_trial = running[0].number
    assert victim is not None, "no trial was ever seen running"
    for w in workers:
        w.join(timeout=240)
    survivors = [w for w in workers if w is not victim]
    assert [w.exitcode for w in survivors] == [0, 0]
    assert victim.exitcode == -signal.SIGKILL
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    states = [t.state for t in study.trials if "record" not in t.user_attrs]  # search trials only
    counts = {s.name: states.count(s) for s in set(states)}
    counts["wall_seconds"] = round(time.time() - started, 1)
    counts["finished"] = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)  # a screened-out trial counts too
    # The trial seen running may still have finished before the signal landed (a loaded machine):
    # then nothing was killed mid-trial and the scenario is run again.
    counts["killed_mid_trial"] = study.trials[killed_trial].state not in (optuna.trial.TrialState.COMPLETE,
                                                                          optuna.trial.TrialState.PRUNED)
    counts["killed_trial_state"] = study.trials[killed_trial].state.name
    return study, counts


def _check_profile(root: Path) -> None:
    profiles = ProfileStore(root).all()
    assert len(profiles) == 1
    assert profiles[0].calibration["n_trials"] >= TRIALS
    assert not profiles[0].is_large_only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def postgres_url():
    if os.environ.get("ADAPTIVE_TEST_POSTGRES_URL"):
        yield os.environ["ADAPTIVE_TEST_POSTGRES_URL"]
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL IS NOT INSTALLED: the multi-worker PostgreSQL test did not run. Install Debian's "
                    "'postgresql' package (make test does when it can) or set ADAPTIVE_TEST_POSTGRES_URL.")
    data = Path(tempfile.mkdtemp(prefix="adaptive-pg-"))  # outside pytest's 0700 tree: postgres must reach it
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL cannot run as root and there is no 'postgres' user: the test did not run")
        os.chown(data, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(run_as + [initdb, "-D", str(data / "db"), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run(run_as + [pg_ctl, "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                             f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        subprocess.run(run_as + [_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U",
                                 "postgres", "optuna"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(run_as + [pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_postgres_workers_survive_a_killed_worker(postgres_url, tmp_path):
    pytest.importorskip("psycopg2", reason="psycopg2 is missing: install the project's [test] extra")
    for attempt in range(3):
        root = tmp_path / f"attempt{attempt}"
        study, counts = _run_workers(postgres_url, root, heartbeat=True,
                                     study_name=f"shared{attempt}")
        print(f"postgres: {counts}")
        assert TRIALS <= counts["finished"] <= TRIALS + 2  # whenever the kill lands, the survivors finish the study
        _check_profile(root)
        # A kill between trials fails nothing, and when the survivors finish the study within the
        # grace period nobody is left to notice the dead worker's trial: run the scenario again.
        if counts["killed_trial_state"] == "FAIL":
            break
    assert counts["killed_trial_state"] == "FAIL", ("three kills in a row landed between trials or too late "
                                                    "for the heartbeat to fail the dead worker's trial")
    retried = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert retried, "the failed trial was not re-queued"


def test_journal_file_workers_survive_a_killed_worker(tmp_path):
    url = f"journal://{tmp_path / 'study.log'}"
    study, counts = _run_workers(url, tmp_path, heartbeat=False)
    print(f"journal: {counts}")
    assert TRIALS <= counts["finished"] <= TRIALS + 2
    assert counts.get("RUNNING", 0) <= 1  # the killed worker's trial; no heartbeat on journal files
    _check_profile(tmp_path)


def _open_at_once(url: str, barrier, results) -> None:
    barrier.wait()  # every worker reaches the empty database together
    try:
        open_storage(url)
        results.put("ok")
    except Exception as err:  # noqa: BLE001 - reported to the test, which names it
        results.put(f"{type(err).__name__}: {err}")


def test_workers_opening_a_new_sqlite_database_at_once_all_succeed(tmp_path):
    # Each worker creates Optuna's tables and stamps the schema version; before the fix about one
    # round in three lost a worker to "UNIQUE constraint failed: alembic_version.version_num".
    ctx = mp.get_context("spawn")
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'round{round_}.db'}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        workers = [ctx.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(4)]
        for w in workers:
            w.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(timeout=60)
        assert outcomes == ["ok"] * 4, outcomes


def _drain_queue(url: str, results) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="queue", storage=open_storage(url))
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0.0, 1.0)

    try:
        study.optimize(objective, n_trials=30)
        results.put(ran)
    except Exception as err:  # noqa: BLE001 - reported to the test, which names it
        results.put(f"{type(err).__name__}: {err}")


def test_two_workers_on_sqlite_never_run_one_queued_trial_twice(tmp_path):
    # Optuna claims a queued trial with SELECT ... FOR UPDATE, which SQLite ignores; before the fix
    # (BEGIN IMMEDIATE) three rounds of three failed with "Cannot tell a COMPLETE trial"
    # (optuna/optuna#4002) -- the flake of test_two_processes_calibrating_into_one_store in CI.
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for k in range(40):
        study.enqueue_trial({"x": k / 40})
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    workers = [ctx.Process(target=_drain_queue, args=(url, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert all(isinstance(o, list) for o in outcomes), outcomes
    ran = outcomes[0] + outcomes[1]
    assert len(ran) == 60 and len(set(ran)) == 60
    counts = {state.name: len(study.get_trials(states=(state,))) for state in optuna.trial.TrialState}
    assert counts["COMPLETE"] == 60 and counts["WAITING"] == 0


def test_losing_the_schema_race_is_told_apart_from_other_database_errors(tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from adaptive.storage import lost_schema_race

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    errors = []
    for statement in ("CREATE TABLE v (n TEXT PRIMARY KEY)", "INSERT INTO v VALUES ('a')", "INSERT INTO v VALUES ('a')",
                      "CREATE TABLE v (n TEXT)", "SELECT * FROM missing"):
        try:
            with engine.begin() as connection:
                connection.execute(text(statement))
        except SQLAlchemyError as err:
            errors.append(err)
    duplicate_row, duplicate_table, missing_table = errors
    assert lost_schema_race(duplicate_row) and lost_schema_race(duplicate_table)
    assert not lost_schema_race(missing_table)
