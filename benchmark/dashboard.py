"""``rnnbench dashboard``: optuna-dashboard over the studies' Optuna storage, on this machine only.

Example: rnnbench dashboard --port 8080   (then open http://127.0.0.1:8080)

The storage is the one ``tune`` writes: ``--storage``, else ``$RNNBENCH_STORAGE``, else the journal file beside
the tracking store, opened by ``benchmark.tuning.open_storage`` without creating anything. optuna-dashboard is an
optional extra (``pip install -e ".[dashboard]"``). It runs as a child process in a group of its own, as the
MLflow UI does, and the whole group is stopped on Ctrl-C or SIGTERM. The storage URL reaches the child through
``$RNNBENCH_STORAGE``, never argv, so a database password stays off the process list.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from .config import ConfigError
from .server import is_loopback, run_service
from .store import mask_url
from .tuning.coordination import without_coordination
from .tuning.storage import STORAGE_ENV, existing_storage, open_storage

INSTALL_HINT = "optuna-dashboard is not installed; pip install -e \".[dashboard]\" (or pip install optuna-dashboard)"
DEFAULT_PORT = 8080


def installed() -> bool:
    try:
        return importlib.util.find_spec("optuna_dashboard") is not None
    except ValueError:  # present in sys.modules as None: imports of it are blocked
        return False


def dashboard(storage: str | None = None, tracking_uri: str | None = None, host: str = "127.0.0.1",
              port: int = DEFAULT_PORT) -> int:
    """optuna-dashboard in the foreground until Ctrl-C or SIGTERM; returns its exit code."""
    if not installed():
        raise ConfigError(INSTALL_HINT)
    if not is_loopback(host):
        raise ConfigError(f"the dashboard has no authentication, so it serves this machine only, not --host {host}; "
                          f"from another machine use an SSH tunnel: ssh -L {port}:127.0.0.1:{port} THIS_HOST")
    url = existing_storage(storage, tracking_uri)
    print(f"Optuna dashboard on http://{host}:{port} over {mask_url(url)} (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    command = [sys.executable, "-m", "benchmark.dashboard", "--host", host, "--port", str(port)]
    return run_service(command, {**os.environ, STORAGE_ENV: url})


def main(argv: list[str] | None = None) -> None:
    """The child process: serve the storage named by ``$RNNBENCH_STORAGE``."""
    import optuna
    import optuna_dashboard

    parser = argparse.ArgumentParser(prog="python -m benchmark.dashboard", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"no authentication: serves 127.0.0.1 only, not {args.host}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The per-study companions that elect a parent run among workers are plumbing: not listed.
    storage = without_coordination(open_storage(os.environ[STORAGE_ENV], create=False))
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
