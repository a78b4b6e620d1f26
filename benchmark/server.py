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

import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from .config import ConfigError
from .files import write_atomic
from .schema import MLFLOW_DATABASE
from .store import default_store_dir, mask_url, resolve_tracking_uri


def default_backend_store_uri() -> str:
    store = default_store_dir()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / MLFLOW_DATABASE}"


ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own names, read by its basic-auth app
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
AUTH_DATABASE_ENV = "RNNBENCH_AUTH_DATABASE_URI"  # users and permissions; default: basic_auth.db beside the store
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def auth_settings(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment that turns on MLflow's basic-auth app, with its config file written into ``folder``.

    The admin password comes from the environment only (MLflow creates the admin user from it on first start);
    the config file holds no secret. Without a password the server is refused: an open port with no users.
    """
    folder.mkdir(parents=True, exist_ok=True)
    database = env.get(AUTH_DATABASE_ENV) or f"sqlite:///{(folder / 'basic_auth.db').resolve()}"
    config = folder / "basic_auth.ini"
    write_atomic(config, "[mlflow]\ndefault_permission = READ\n"
                         f"database_uri = {database}\n"
                         f"admin_username = {env.get(ADMIN_USERNAME_ENV) or 'admin'}\n"
                         "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    # CSRF tokens of the UI's forms; a fresh key per start unless one is given (several servers must share one).
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), SECRET_KEY_ENV: env.get(SECRET_KEY_ENV) or secrets.token_hex(32)}


def server_command(backend_store_uri: str | None = None, artifacts_destination: str | None = None,
                   host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
                   allowed_hosts: str | None = None, auth: bool = False) -> tuple[list[str], dict[str, str], str]:
    """argv, environment and the masked backend URI for ``mlflow server``."""
    if not auth and not is_loopback(host):
        raise ConfigError(f"--host {host} opens every run and artifact to the network; add --auth (a user name and "
                          "password for every request), or keep the default 127.0.0.1")
    if auth and not os.environ.get(ADMIN_PASSWORD_ENV):
        raise ConfigError(f"--auth needs the admin password in ${ADMIN_PASSWORD_ENV} (the environment, never the "
                          f"command line), e.g. read -s {ADMIN_PASSWORD_ENV} && export {ADMIN_PASSWORD_ENV}")
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
    if auth:
        command += ["--app-name", "basic-auth"]
        env.update(auth_settings(default_store_dir(), env))
    return command, env, mask_url(backend)


# A stopped command exits within 10 s: the group's SIGTERM grace plus the SIGKILL's wait stay under it.
STOP_GRACE = 6.0


def serve(**options) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM; returns its exit code."""
    command, env, shown = server_command(**options)
    host, port = options.get("host", "127.0.0.1"), options.get("port", 5000)
    guard = "basic authentication" if options.get("auth") else "no authentication: keep it on a trusted network"
    print(f"MLflow tracking server on http://{host}:{port} over {shown}, artifacts proxied to "
          f"{command[command.index('--artifacts-destination') + 1]}, {guard} (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    return run_service(command, env)


def ui(tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000) -> int:
    """The MLflow UI over a tracking store, in the foreground until Ctrl-C or SIGTERM."""
    if not is_loopback(host):
        raise ConfigError(f"rnnbench ui has no authentication, so it serves this machine only, not --host {host}; "
                          "for other machines use rnnbench server --auth")
    tracking_uri = resolve_tracking_uri(tracking_uri)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host,
               "--port", str(port)]
    print(f"MLflow UI on http://{host}:{port} over {mask_url(tracking_uri)} (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    # MLflow 3's UI starts a new browser in its GenAI view whatever the experiments' kind; the switch is remembered.
    print("In a new browser, click 'Model training' at the top of the sidebar once for runs and Models.",
          file=sys.stderr, flush=True)
    return run_service(command)


def run_service(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server in a process group of its own and stop the whole group when this process is stopped.

    MLflow starts uvicorn (and its workers) as children: stopping only the direct child leaves them serving,
    re-parented to init. ``rnnbench``'s main turns SIGTERM into KeyboardInterrupt, as Ctrl-C is.
    """
    # MLflow's job runner (GenAI evaluation jobs, seven queue consumers) has no work here and costs a core's worth.
    env = {**(os.environ if env is None else env)}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_group(process)
        return 130


def stop_group(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM to the process's whole group, then SIGKILL to whatever is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return  # the leader and every child are gone
            time.sleep(0.1)
