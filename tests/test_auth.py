"""rnnbench server --auth: every request needs a user name and password; the password never reaches argv."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_server import children_of, free_port, group_members

from benchmark import cli

PASSWORD = "s3cret-for-tests-only"


def request(url: str, auth: tuple[str, str] | None = None, data: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    body = json.dumps(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the server never answered"
        time.sleep(0.5)


@pytest.mark.integration
def test_auth_server_refuses_anonymous_requests_and_keeps_the_password_off_argv(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD}
    server = subprocess.Popen([sys.executable, "-m", "benchmark", "server", "--auth", "--port", str(port)],
                              cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, server)
        search = f"{url}/api/2.0/mlflow/experiments/search"
        assert request(search, data={"max_results": 10}) == 401
        assert request(search, ("admin", "wrong"), {"max_results": 10}) == 401
        assert request(search, ("admin", PASSWORD), {"max_results": 10}) == 200
        (leader,) = children_of(server.pid)  # mlflow, leading the group of uvicorn and its workers
        for pid in [server.pid, *group_members(leader)]:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                assert PASSWORD.encode() not in handle.read()
        assert PASSWORD not in (tmp_path / "mlruns" / "basic_auth.ini").read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert PASSWORD not in server.stderr.read()


@pytest.mark.parametrize("argv, env, message", [
    (["server", "--auth"], {}, "--auth needs the admin password in $MLFLOW_AUTH_ADMIN_PASSWORD"),
    (["server", "--host", "0.0.0.0"], {}, "--host 0.0.0.0 opens every run and artifact to the network; add --auth"),
    (["ui", "--host", "0.0.0.0"], {}, "rnnbench ui has no authentication"),
])
def test_an_open_server_without_authentication_is_refused(tmp_path, monkeypatch, capsys, argv, env, message):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()
