"""Optuna storages for calibration studies, with heartbeats so a dead worker's trial is retried.

- ``None``: the caller's default (SQLite next to the profiles);
- an SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``): an ``RDBStorage`` with
  heartbeats (on SQLite every transaction takes the write lock, so workers never run one queued
  trial twice) — a worker that dies mid-trial has its trial marked FAIL after ``grace_period`` seconds
  and re-queued (``RetryFailedTrialCallback``) for the others;
- ``journal:///path/to/file.log`` (or a path ending in ``.log``): Optuna's ``JournalFileBackend`` on
  shared disk, no server (no heartbeats: a killed worker's trial stays RUNNING and is not counted);
- any Optuna storage object, used as is.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections.abc import Iterator
from typing import Any

import optuna

from adaptive.errors import StorageError

_SCHEMA_ATTEMPTS = 5
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 60


@contextlib.contextmanager
def storage_errors(storage: Any) -> Iterator[None]:
    """Turn a storage's failure to open or write (a missing folder, an uninstalled database driver, a
    read-only file) into a :class:`StorageError` naming the URL and what to do."""
    try:
        yield
    except ImportError as err:
        module = getattr(err.__cause__ or err.__context__ or err, "name", None)
        needs = f"the Python module {module!r}" if module else "a database driver"
        raise StorageError(f"storage {storage!r} needs {needs}, which is not installed; install it "
                           "(e.g. `pip install psycopg2-binary` for postgresql://, `pip install pymysql` and "
                           "mysql+pymysql:// for MySQL) or use sqlite:///path/studies.db") from None
    except OSError as err:
        raise StorageError(f"storage {storage!r}: cannot open {err.filename or 'the file'} ({err.strerror}); "
                           "create its folder or choose a writable path") from None
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(err, SQLAlchemyError):
            raise
        detail = str(getattr(err, "orig", None) or err).splitlines()[0]
        where = ""
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            where = f" (the file {storage[len('sqlite:///'):]}: does its folder exist, and may you write there?)"
        raise StorageError(f"storage {storage!r} cannot be opened or written: {detail}{where}") from None


def open_storage(storage: Any, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = GRACE_PERIOD) -> Any:
    """An Optuna storage for ``storage`` (URL, journal path or storage object); see the module doc.
    A URL that cannot be opened (missing folder, driver not installed) raises :class:`StorageError`."""
    if not isinstance(storage, str):
        return storage
    with storage_errors(storage):
        return _open(storage, heartbeat_interval, grace_period)


def _open(storage: str, heartbeat_interval: int, grace_period: int) -> Any:
    if storage.startswith("journal://") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = storage[len("journal://"):] if storage.startswith("journal://") else storage
        return JournalStorage(JournalFileBackend(path))
    if "://" not in storage:
        raise ValueError(f"storage {storage!r} is neither an SQLAlchemy URL (sqlite:///x.db, postgresql://...) "
                         "nor a journal file (journal:///path/file.log)")
    sqlite = storage.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                                 **_retry_callback())
            return _serialized(rdb) if sqlite else rdb
        except Exception as err:  # noqa: BLE001 - SQLAlchemy's error classes differ per database driver
            if not lost_schema_race(err) or attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _serialized(rdb: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    """Make every transaction on an SQLite file take the write lock when it begins.

    Optuna claims a queued trial (``enqueue_trial``) with ``SELECT ... FOR UPDATE``, which SQLite
    ignores: two workers read the same WAITING trial, both run it, and the second one's ``tell``
    fails with "Cannot tell a COMPLETE trial" (optuna/optuna#4002). ``BEGIN IMMEDIATE`` (SQLAlchemy's
    pysqlite recipe for real transactions) makes each read-then-write atomic, so the second worker
    sees the trial RUNNING and takes the next one. Calibration trials take seconds and a
    transaction milliseconds, so serialising them costs nothing measurable.
    """
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN would be deferred

    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(rdb.engine, "connect", on_connect)
    event.listen(rdb.engine, "begin", on_begin)
    rdb.engine.dispose()  # connections opened before the listeners would keep deferred transactions
    return rdb


def lost_schema_race(err: BaseException) -> bool:
    """Whether ``err`` is what the loser sees when workers open a new database at once.

    Each creates Optuna's tables and stamps the schema version: the loser gets "already exists" for
    a table, or a unique-constraint error for the version row. The schema is complete by then, so
    opening the database again succeeds.
    """
    from sqlalchemy.exc import IntegrityError

    return isinstance(err, IntegrityError) or "already exists" in str(err)


def _retry_callback() -> dict[str, Any]:
    # Optuna 4.9 renamed the stale-trial hook; support both spellings.
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    if "heartbeat_stale_trial_callback" in params and hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
