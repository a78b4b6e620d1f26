"""Where studies live: the Optuna storage URL and the one way to open it.

Example: RNNBENCH_STORAGE=postgresql+psycopg://bench:PW@db/optuna rnnbench tune studies/mnist.toml --arch gru

- The URL is ``--storage``, else ``$RNNBENCH_STORAGE`` (keeps passwords off the process list), else the
  journal file ``optuna.journal`` beside the MLflow store (``benchmark.store.default_journal``).
- A path ending in ``.journal`` is a JournalStorage file: appends from many processes without SQLite's
  "database is locked". Any other storage is an Optuna RDB URL (``sqlite:///...``,
  ``postgresql+psycopg://...``); these get a heartbeat, so that trials of workers lost on other machines
  are noticed.
- ``open_storage(url, create=False)`` is for readers (the report, listings): it opens an existing storage
  and creates no file, folder or table; an absent journal or SQLite file raises ``StorageNotFound``.
  ``existing_storage`` is the commands' check: one line with the fix when a named storage is absent.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..config import ConfigError
from ..store import default_journal, mask_url, retried, sqlite_path
from .recovery import LostTrialHandler

STORAGE_ENV = "RNNBENCH_STORAGE"  # the Optuna storage URL, from the environment: not on argv, never printed
HEARTBEAT_SECONDS = 10  # RDB storages: a trial without a heartbeat for 2x this is stale
SQLITE_TIMEOUT_SECONDS = 60  # how long a writer waits for SQLite's lock before "database is locked"
CREATE_ATTEMPTS = 5
TABLE_RACE = ("already exists", "duplicate key value", "UniqueViolation", "DuplicateTable")


class StorageNotFound(ConfigError):
    """``open_storage(..., create=False)`` found no journal or SQLite file at the URL."""


def resolve_storage_url(storage: str | None = None, tracking_uri: str | None = None) -> str:
    """``--storage``, else ``$RNNBENCH_STORAGE``, else the journal file beside the tracking store."""
    return storage or os.environ.get(STORAGE_ENV) or str(default_journal(tracking_uri))


def existing_storage(storage: str | None = None, tracking_uri: str | None = None) -> str:
    """The resolved storage URL (a journal path made absolute), refused with the fix when nothing is there."""
    url = resolve_storage_url(storage, tracking_uri)
    try:
        open_storage(url, tracking_uri, create=False)
    except StorageNotFound:
        raise ConfigError(f"no Optuna storage at {mask_url(url)}; pass --storage an existing journal file or "
                          "URL, or create it with rnnbench tune") from None
    return str(Path(url).resolve()) if is_journal(url) else url


def is_journal(url: str) -> bool:
    return url.endswith(".journal") and "://" not in url


def open_storage(url: str, tracking_uri: str | None = None, *, create: bool = True):
    """An Optuna storage for a URL or a ``.journal`` path.

    ``create=True`` (writers) makes the journal's or SQLite file's folder and the storage's tables as
    needed. ``create=False`` (readers) never creates anything: a journal or SQLite file that does not exist
    raises ``StorageNotFound``, and an RDB storage's tables are not created. Either way an RDB storage has
    a heartbeat whose stale trials are handled by ``LostTrialHandler`` (their MLflow runs in
    ``tracking_uri`` end FAILED, their parameters are re-queued). Other problems raise ``ConfigError``
    with the URL's password masked.
    """
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if is_journal(url):
        path = Path(url).resolve()
        if not create and not path.is_file():
            raise StorageNotFound(f"no Optuna storage at {url}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return JournalStorage(JournalFileBackend(str(path)))
        except OSError as error:
            raise ConfigError(f"cannot write the Optuna journal {path} ({error.strerror or type(error).__name__}); "
                              "pass --storage a path you can write") from None
    if "://" not in url:
        raise ConfigError(f"storage {url!r} is neither a URL (sqlite:///..., postgresql+psycopg://...) "
                          "nor a path ending in .journal")
    database = sqlite_path(url)
    if database is not None and not create and not database.is_file():
        raise StorageNotFound(f"no Optuna storage at {url}")
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else None
    def connect() -> RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create,
                              heartbeat_interval=HEARTBEAT_SECONDS, grace_period=2 * HEARTBEAT_SECONDS,
                              heartbeat_stale_trial_callback=LostTrialHandler(tracking_uri))

    try:
        # Workers starting together on a new database race to create Optuna's tables (no lock of Optuna's own):
        # the losers see a duplicate type or table, and find the tables complete on the next try.
        return retried(connect, attempts=CREATE_ATTEMPTS, jitter=0.3,
                       when=lambda error: create and any(s in str(error) for s in TABLE_RACE))
    except ImportError as error:
        raise ConfigError(f"storage {mask_url(url)} needs a driver: {error}; "
                          "for PostgreSQL: pip install 'psycopg[binary]'") from None
    except Exception as error:  # connection refused, bad credentials, ...
        raise ConfigError(f"cannot open storage {mask_url(url)}: {str(error).splitlines()[0]}") from None


def has_heartbeat(storage) -> bool:
    """RDB storages notice lost trials of any machine by their heartbeat; journal files only by pid."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
