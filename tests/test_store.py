"""The store layer: URIs and paths, paged search, ending runs, and a new store opened by many processes at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import cli, store
from benchmark.schema import RunStatus, Tag

# Each child waits for the same wall-clock instant, so that all of them open the new store together.
CHILD = """
import sys, time
from benchmark.store import client_for, get_or_create_experiment
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
client = client_for(sys.argv[1])
run = client.create_run(get_or_create_experiment(client, "addition"))
client.set_terminated(run.info.run_id)
"""


def test_processes_starting_together_on_a_new_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    start = time.time() + 4  # past every child's imports
    children = [subprocess.Popen([sys.executable, "-c", CHILD, uri, str(start)], stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, "\n".join(errors)
    assert not any("Creating initial MLflow database tables" in e for e in errors)  # no migration chatter
    client = store.client_for(uri)
    assert len(list(store.search_runs(client))) == 4
    # The store is whole afterwards: a later single process works on it too.
    assert store.client_for(uri).search_experiments()


def test_search_runs_pages_through_every_run(tmp_path, monkeypatch):
    client = store.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = store.get_or_create_experiment(client, "mnist")
    made = {client.create_run(experiment, tags={Tag.ROLE: "trial" if i % 2 else "run"}).info.run_id
            for i in range(7)}
    monkeypatch.setattr(store, "PAGE_SIZE", 3)
    assert {r.info.run_id for r in store.search_runs(client)} == made
    trials = list(store.search_runs(client, f"tags.{Tag.ROLE} = 'trial'", [experiment]))
    assert len(trials) == 3


def test_end_run_keeps_the_reason(tmp_path):
    client = store.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(store.get_or_create_experiment(client, "mnist")).info.run_id
    store.end_run(client, run_id, RunStatus.FAILED, "ValueError: " + "x" * 6000)
    run = client.get_run(run_id)
    assert run.info.status == RunStatus.FAILED
    assert run.data.tags[Tag.ERROR].startswith("ValueError: ") and len(run.data.tags[Tag.ERROR]) == 5000


def test_paths_follow_the_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.plain_tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert not (tmp_path / "mlruns").exists()  # reading the default creates nothing
    assert store.default_journal(f"sqlite:///{tmp_path}/x/mlflow.db") == tmp_path / "x" / "optuna.journal"
    assert store.default_journal("http://127.0.0.1:5000") == tmp_path / "mlruns" / "optuna.journal"
    assert store.mask_url("postgresql+psycopg://u:p@ss@h/db") == "postgresql+psycopg://u:***@h/db"


def test_a_store_that_cannot_be_written_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "mlruns").write_text("a file where the store's folder should be")
    code = cli.main(["train", "--task", "addition", "--arch", "lstm", "--epochs", "1", "--train-size", "50",
                     "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "cannot write the tracking store" in err and "--tracking-uri" in err


READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && cd "$0" && exec "$@"'


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a read-only bind mount needs root")
@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "addition", "--arch", "lstm", "--epochs", "1"], "cannot write the tracking store"),
    (["tune", str(Path(__file__).resolve().parent.parent / "studies" / "addition.toml"), "--arch", "lstm"],
     "cannot write the tracking store"),
    (["report"], "cannot write the report to reports"),
])
def test_a_read_only_folder_is_one_line_exit_2(tmp_path, argv, message):
    """A read-only mount refuses root too, so this runs as CI runs: as root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", READ_ONLY, str(folder), sys.executable, "-m", "benchmark",
                           *argv], capture_output=True, text=True, env=env, timeout=120)
    if "mount" in done.stderr and done.returncode != 2:
        pytest.skip(f"no read-only bind mount here: {done.stderr.strip()[:200]}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_end_run_retries_a_write_that_fails_once(tmp_path, monkeypatch):
    """A write broken by an interrupt does not leave the run RUNNING: the next attempt ends it."""
    client = store.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    real, calls = client.set_terminated, []

    def flaky(run, status=None):
        calls.append(status)
        if len(calls) == 1:
            raise RuntimeError("(sqlalchemy.exc.PendingRollbackError) ... (Background on this error at: e3q8)")
        return real(run, status=status)

    monkeypatch.setattr(client, "set_terminated", flaky)
    monkeypatch.setattr(store.time, "sleep", lambda seconds: None)
    store.end_run(client, run_id, RunStatus.KILLED, "interrupted (KeyboardInterrupt)")
    assert calls == [RunStatus.KILLED, RunStatus.KILLED]
    assert client.get_run(run_id).info.status == RunStatus.KILLED


def test_retried_tries_again_only_what_it_is_told_and_gives_up_with_the_last_error(monkeypatch):
    from benchmark import store

    pauses = []
    monkeypatch.setattr(store.time, "sleep", pauses.append)

    def failing(errors):
        calls = []

        def call():
            calls.append(len(calls))
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return "done"
        return call, calls

    call, calls = failing([KeyError("a"), KeyError("b")])
    assert store.retried(call, attempts=3, pause=0.5) == "done" and len(calls) == 3
    assert pauses == [0.5, 1.0]

    call, calls = failing([KeyError("a"), KeyError("b"), KeyError("c")])
    with pytest.raises(KeyError, match="c"):  # the last error, after the last attempt
        store.retried(call, attempts=3)
    assert len(calls) == 3

    call, calls = failing([ValueError("not retried")])
    with pytest.raises(ValueError):  # not one of ``errors``
        store.retried(call, attempts=3, errors=KeyError)
    assert len(calls) == 1

    call, calls = failing([KeyError("other"), KeyError("race")])
    with pytest.raises(KeyError, match="other"):  # ``when`` refuses it
        store.retried(call, attempts=3, when=lambda error: "race" in str(error))
    assert len(calls) == 1
