"""The MLflow UI, the tracking server and the Optuna dashboard run in a process group of their own, and
SIGTERM stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

GRACE = 10  # seconds from SIGTERM until rnnbench and everything it started are gone

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for(url: str, service: subprocess.Popen, seconds: float = 120) -> bytes:
    """The body of ``url`` once ``service`` answers it with HTTP 200 (redirects followed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                assert answer.status == 200
                return answer.read()
        except OSError:
            assert service.poll() is None, service.stderr.read()
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.5)


def stop_and_check_group(service: subprocess.Popen, url: str) -> None:
    """SIGTERM to the ``rnnbench`` process: within ``GRACE`` seconds it exits 130 and no process of the server's own
    group is left."""
    (leader,) = children_of(service.pid)
    assert os.getpgid(leader) == leader  # its own group: a terminal's Ctrl-C goes to rnnbench alone
    assert len(group_members(leader)) >= 1
    service.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    assert service.wait(timeout=GRACE) == 130
    while group_members(leader) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_members(leader) == [], "a server process survived SIGTERM"
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def rnnbench(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "benchmark", *argv], env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.integration
def test_sigterm_to_ui_stops_its_whole_process_group(tmp_path):
    port = free_port()
    ui = rnnbench("ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        wait_for(f"http://127.0.0.1:{port}/health", ui)
        stop_and_check_group(ui, f"http://127.0.0.1:{port}/health")
    finally:
        if ui.poll() is None:
            ui.kill()


@pytest.mark.integration
def test_sigterm_to_server_stops_its_whole_process_group(tmp_path):
    port = free_port()
    server = rnnbench("server", "--port", str(port))  # its store: ./mlruns in the test's folder
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        stop_and_check_group(server, f"http://127.0.0.1:{port}/health")
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.integration
def test_dashboard_lists_the_studies_of_a_journal_and_stops_with_its_group(tmp_path):
    import json

    pytest.importorskip("optuna_dashboard")
    import optuna

    from benchmark.tuning import open_storage
    from benchmark.tuning.coordination import coordination_study_name

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="addition-lstm-quick", direction="maximize",
                                storage=open_storage(str(journal)))
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=2)
    # The companion study workers elect the parent run through: plumbing, not listed.
    optuna.create_study(study_name=coordination_study_name(study.study_name, study._study_id),
                        storage=open_storage(str(journal)))
    port = free_port()
    dashboard = rnnbench("dashboard", "--port", str(port), "--storage", str(journal))
    try:
        assert b"<html" in wait_for(f"http://127.0.0.1:{port}/", dashboard).lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as answer:
            listed = json.load(answer)["study_summaries"]
        assert [s["study_name"] for s in listed] == ["addition-lstm-quick"]
        stop_and_check_group(dashboard, f"http://127.0.0.1:{port}/api/studies")
    finally:
        if dashboard.poll() is None:
            dashboard.kill()


def test_a_server_that_ignores_sigterm_is_killed_within_the_grace(tmp_path):
    from benchmark.server import stop_group

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print(flush=True); time.sleep(60)"], start_new_session=True,
                                stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # SIGTERM is ignored from here on
    started = time.monotonic()
    stop_group(stubborn)
    assert time.monotonic() - started < GRACE and group_members(stubborn.pid) == []
