"""Where runs live: the tracking URI, the embedded store's folder, clients, paged run search, ending a run.

Example: rnnbench train --task addition --arch lstm --tracking-uri sqlite:///$PWD/mlruns/mlflow.db

Everything goes through an explicit ``MlflowClient`` and run ids, never the fluent "active run", which
is per thread and breaks under parallel trials. The embedded default is
``sqlite:///<cwd>/mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``; ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` selects any other store or server. Torch-free; MLflow is imported where used,
so that ``--help`` and the report's first lines stay fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import ConfigError
from .schema import MLFLOW_DATABASE, OPTUNA_JOURNAL, ExperimentTag, RunStatus, Tag

PAGE_SIZE = 1000  # runs per search_runs call
MAX_METRICS_PER_CALL = 1000  # MLflow's log_batch limit
ERROR_TAG_LIMIT = 5000  # characters of an error message kept in the run's tag
_initialised: set[str] = set()  # SQLite stores this process has created or checked


def mask_url(url: str) -> str:
    """A storage or tracking URL with any password replaced by ***.

    The password is everything between ``user:`` and the last ``@`` before the query (SQLAlchemy and
    libpq read it the same way; a password with ``@`` or ``/`` is still hidden whole); ``password=``
    query parameters are masked too. When in doubt this hides too much, never too little.
    """
    url = re.sub(r"(?i)([?&;]password=)[^&;]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    authority, query_sep, query = rest.partition("?")
    user, colon, after = authority.partition(":")
    if not sep or not colon or "/" in user or "@" in user or "@" not in after:
        return url
    return f"{scheme}://{user}:***{after[after.rindex('@'):]}{query_sep}{query}"


def default_store_dir() -> Path:
    return Path("mlruns").resolve()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def plain_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else MLFLOW_TRACKING_URI, else the embedded SQLite store under ./mlruns; creates nothing."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store_dir() / MLFLOW_DATABASE}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``plain_tracking_uri``, with the embedded store's folder created and checked writable (writers call this)."""
    uri = plain_tracking_uri(uri)
    database = sqlite_path(uri)
    if database is not None:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise not_writable(database, error.strerror or type(error).__name__) from None
        for path in (database.parent, database):
            if path.exists() and not os.access(path, os.W_OK):
                raise not_writable(database, f"{path} is read-only")
    return uri


def not_writable(database: Path, reason: str) -> ConfigError:
    return ConfigError(f"cannot write the tracking store {database} ({reason}); run from a folder you can write, "
                       "or pass --tracking-uri sqlite:////a/writable/folder/mlflow.db")


def store_folder(tracking_uri: str | None = None) -> Path:
    """The folder of a local SQLite store, else ./mlruns: where the default Optuna journal lives."""
    database = sqlite_path(plain_tracking_uri(tracking_uri))
    return database.parent if database is not None else default_store_dir()


def default_journal(tracking_uri: str | None = None) -> Path:
    return store_folder(tracking_uri) / OPTUNA_JOURNAL


def artifact_location_for(tracking_uri: str, experiment: str) -> str | None:
    """For a local SQLite store, artifacts live beside the database; servers choose their own."""
    database = sqlite_path(tracking_uri)
    if database is not None:
        return (database.parent / "artifacts" / experiment).resolve().as_uri()
    return None


def ensure_store(uri: str) -> None:
    """Create or upgrade a SQLite store's schema once, under a file lock beside the database.

    MLflow creates its tables on first use without a lock of its own, so processes starting together on a
    new store race in its migrations and can leave it half-migrated for good. Every rnnbench process takes
    the lock first; the first one in creates the schema, the others find it complete.
    """
    database = sqlite_path(uri)
    if database is None or uri in _initialised:
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy.exc import OperationalError

    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.parent / f"{database.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with _quiet_migrations():
                    store = SqlAlchemyStore(uri, (database.parent / "artifacts").resolve().as_uri())
                store.engine.dispose()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError as error:
        raise not_writable(database, error.strerror or type(error).__name__) from None
    except OperationalError as error:  # "attempt to write a readonly database", "unable to open database file"
        raise not_writable(database, str(error.orig)) from None
    _initialised.add(uri)


@contextlib.contextmanager
def _quiet_migrations():
    """MLflow and alembic announce each migration at INFO on stderr; a user needs none of it."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def client_for(tracking_uri: str | None = None):
    """An MlflowClient on the resolved store, its schema created first for a new SQLite store. Each of its calls
    holds Ctrl-C and SIGTERM until it returns (``interrupts_held``)."""
    uri = resolve_tracking_uri(tracking_uri)
    ensure_store(uri)
    return _held_client_class()(tracking_uri=uri)


@functools.cache
def _held_client_class():
    """MlflowClient whose public calls hold interrupts. An interrupt that lands inside SQLAlchemy's commit or
    cleanup can leave an SQLite connection holding the database's write lock; every later write, the run's own
    end included, then waits out MLflow's 20 s busy timeout and fails (docs/tuning.md, "Faults"). Held, the
    interrupt lands between calls; a second one still interrupts at once."""
    from mlflow import MlflowClient

    class HeldClient(MlflowClient):
        def __getattribute__(self, name):
            attribute = super().__getattribute__(name)
            if name.startswith("_") or not callable(attribute):
                return attribute

            @functools.wraps(attribute)
            def held(*args, **kwargs):
                with interrupts_held():
                    return attribute(*args, **kwargs)

            return held

    return HeldClient


def get_or_create_experiment(client, name: str) -> str:
    """Experiment id for ``name``; safe when several processes create it at once.

    Every experiment rnnbench writes to is of MLflow's model-training kind; without the tag MLflow 3's UI may
    infer GenAI and hide the Models page. An experiment made elsewhere keeps a kind it already has.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if not found:
        try:
            return client.create_experiment(name, artifact_location=artifact_location_for(client.tracking_uri, name),
                                            tags={ExperimentTag.KIND: ExperimentTag.KIND_TRAINING})
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if not found:
                raise
    if ExperimentTag.KIND not in found.tags:  # made by an older rnnbench, or by MLflow's own Default
        client.set_experiment_tag(found.experiment_id, ExperimentTag.KIND, ExperimentTag.KIND_TRAINING)
    return found.experiment_id


def search_runs(client, filter_string: str = "", experiment_ids: Iterable[str] | None = None,
                deleted: bool = False) -> Iterator:
    """Every run matching ``filter_string`` (all experiments unless given), a page of PAGE_SIZE per call."""
    from mlflow.entities import ViewType

    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    experiment_ids = list(experiment_ids)
    if not experiment_ids:
        return
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=PAGE_SIZE,
                                  page_token=token, run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY)
        yield from page
        token = page.token
        if not token:
            return


def retried(call, *, attempts: int, errors: type[BaseException] | tuple = Exception, when=None, pause: float = 0.2,
            jitter: float = 0.0):
    """``call()``, tried up to ``attempts`` times while it raises one of ``errors`` for which ``when(error)`` holds
    (every such error if ``when`` is None); the n-th retry waits ``pause * n`` seconds plus up to ``jitter``. The
    last error, or one not retried, propagates. The stores' known races (a row two workers insert at once, a
    write cut by an interrupt) all clear on a later try."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except errors as error:
            if attempt == attempts or (when is not None and not when(error)):
                raise
            time.sleep(pause * attempt + random.random() * jitter)
    raise AssertionError("attempts must be >= 1")


END_RUN_ATTEMPTS = 3


@contextlib.contextmanager
def artifact_bars_off():
    """MLflow's artifact download bars off within the block: they would mix with the one-line-per-epoch (or
    per-file) output of whatever asked. Logging a pyfunc model downloads what it uploaded, so it draws one too."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as PROGRESS

    before = os.environ.get(PROGRESS.name)
    os.environ[PROGRESS.name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS.name, None)
        else:
            os.environ[PROGRESS.name] = before


def download_artifact(run_id: str, path: str, dst_path: str, tracking_uri: str | None = None) -> str:
    """One artifact of a run into ``dst_path``; returns its local path, without MLflow's download bar."""
    import mlflow.artifacts

    with artifact_bars_off():
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst_path,
                                                   tracking_uri=resolve_tracking_uri(tracking_uri))


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C and SIGTERM wait for the block to end, then act as they would have, also when the block raised. A
    second one within the block interrupts at once, so that a store that hangs can still be left. A signal the
    process ignores stays ignored. Blocks nest. Main thread only (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    # SIG_IGN stays as it is; None (a handler not set from Python) cannot be put back, so it is left alone too.
    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)
                if callable(signal.getsignal(sig)) or signal.getsignal(sig) == signal.SIG_DFL}
    stopping = False
    try:
        yield
    except KeyboardInterrupt:
        stopping = True
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # Delivered after the block, even one that raised; a KeyboardInterrupt on its way out already stops us.
        if pending and not stopping:
            signal.raise_signal(pending[0])


def end_run(client, run_id: str, status: str = RunStatus.FINISHED, reason: str | None = None) -> None:
    """End a run as FINISHED, FAILED or KILLED; ``reason`` is kept as its ``error`` tag.

    A run ends while it is being stopped, so a second Ctrl-C or SIGTERM arriving here waits until the end has
    landed (``interrupts_held``). Retried: a Ctrl-C that lands inside an SQLite write can leave that write's
    session half-flushed, and the run's last two writes, made right after, must still land or the run would stay
    RUNNING."""
    def end() -> None:
        if reason:
            client.set_tag(run_id, Tag.ERROR, reason[:ERROR_TAG_LIMIT])
        client.set_terminated(run_id, status=status)

    with interrupts_held():
        retried(end, attempts=END_RUN_ATTEMPTS)
