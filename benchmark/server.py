"""``rnnbench server``: an MLflow tracking server that proxies artifacts, so workers need only HTTP.

Example: MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://mlflow:PW@db/mlflow rnnbench server --host 0.0.0.0

A thin wrapper over ``mlflow server``: the backend store (default: the embedded SQLite store,
``mlruns/mlflow.db``) holds runs, params and metrics; ``--serve-artifacts`` makes the server accept
and serve artifacts over HTTP, stored under ``--artifacts-destination`` (default ``mlruns/artifacts``),
so experiments it creates get ``mlflow-artifacts:/`` locations and no worker needs shared disks or
cloud credentials. Binds 127.0.0.1 unless ``--host`` says otherwise. The backend URI reaches MLflow
through ``MLFLOW_BACKEND_STORE_URI``, never argv, so its password is not in the process list; printed
URLs are masked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .schema import MLFLOW_DATABASE
from .store import default_store_dir, mask_url


def default_backend_store_uri() -> str:
    store = default_store_dir()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / MLFLOW_DATABASE}"


def server_command(backend_store_uri: str | None = None, artifacts_destination: str | None = None,
                   host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
                   allowed_hosts: str | None = None) -> tuple[list[str], dict[str, str], str]:
    """argv, environment and the masked backend URI for ``mlflow server``."""
    backend = backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI") or default_backend_store_uri()
    destination = artifacts_destination or str(default_store_dir() / "artifacts")
    if "://" not in destination:  # a local folder: absolute, created, as a file URI
        Path(destination).mkdir(parents=True, exist_ok=True)
        destination = Path(destination).resolve().as_uri()
    command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts", "--artifacts-destination", destination,
               "--host", host, "--port", str(port)]
    if workers:
        command += ["--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend}
    env.pop("MLFLOW_TRACKING_URI", None)  # the server is the store; a client setting must not leak into it
    return command, env, mask_url(backend)


def serve(**options) -> int:
    """Run the server in the foreground until Ctrl-C; returns its exit code."""
    command, env, shown = server_command(**options)
    host, port = options.get("host", "127.0.0.1"), options.get("port", 5000)
    print(f"MLflow tracking server on http://{host}:{port} over {shown}, artifacts proxied to "
          f"{command[command.index('--artifacts-destination') + 1]} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    process = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())  # a service manager's stop reaches mlflow too
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.wait()  # the terminal's SIGINT reached mlflow too; let it shut down cleanly
        return 130
