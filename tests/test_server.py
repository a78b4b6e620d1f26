"""The UI and the tracking server run in a process group of their own, and SIGTERM stops all of it."""

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


@pytest.mark.integration
def test_sigterm_to_ui_stops_its_whole_process_group(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    ui = subprocess.Popen([sys.executable, "-m", "benchmark", "ui", "--port", str(port), "--tracking-uri",
                           f"sqlite:///{tmp_path / 'mlflow.db'}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert ui.poll() is None, ui.stderr.read()
                assert time.monotonic() < deadline, "the UI never answered"
                time.sleep(0.5)
        (leader,) = children_of(ui.pid)
        assert os.getpgid(leader) == leader  # its own group: a terminal's Ctrl-C goes to rnnbench alone
        assert len(group_members(leader)) >= 1
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 130
        deadline = time.monotonic() + 15
        while group_members(leader) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert group_members(leader) == [], "a server process survived SIGTERM"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if ui.poll() is None:
            ui.kill()
