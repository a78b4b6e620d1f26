"""SIGTERM mid-training ends ``train``, ``confirm`` and ``bench`` as Ctrl-C does, within 10 s: exit code 130, no
process of their group left, no MLflow run or Optuna trial left RUNNING. (``tune``: tests/test_tuning.py; ``ui``,
``server``, ``dashboard``: tests/test_server.py and tests/test_auth.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_server import group_members
from test_tuning import load, runs, study_file

from benchmark import cli
from benchmark.schema import Tag
from benchmark.store import client_for

ROOT = Path(__file__).resolve().parent.parent
GRACE = 10  # seconds from SIGTERM to exit
LONG = ("--epochs", "200", "--train-size", "2000")  # minutes of training: only SIGTERM ends it in time


def start(tmp_path: Path, *argv: str) -> subprocess.Popen:
    """``rnnbench ARGV`` as the leader of a process group of its own, so that what it leaves behind is visible."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(tmp_path / "rnnbench.log", "w")  # noqa: SIM115  (the child holds it; a pipe could fill and block it)
    process = subprocess.Popen([sys.executable, "-m", "benchmark", *argv], env=env, stdout=log, stderr=log,
                               start_new_session=True)
    log.close()
    return process


def wait_until(process: subprocess.Popen, ready, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} never happened (exit {process.poll()})")
        time.sleep(0.5)


def running_run_with_metrics(uri: str):
    def ready() -> bool:
        client = client_for(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
        return any(run.data.metrics for run in found)  # an epoch is done: it is training, not starting

    return ready


def terminate_and_check(process: subprocess.Popen, tmp_path: Path, uri: str) -> None:
    group = process.pid
    process.send_signal(signal.SIGTERM)  # to rnnbench alone, as `kill PID` or a scheduler sends it
    started = time.monotonic()
    try:
        code = process.wait(timeout=GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
        pytest.fail(f"still running {GRACE} s after SIGTERM:\n{(tmp_path / 'rnnbench.log').read_text()[-2000:]}")
    assert code == 130, (tmp_path / "rnnbench.log").read_text()[-2000:]
    while group_members(group) and time.monotonic() < started + GRACE:
        time.sleep(0.2)
    survivors = group_members(group)
    if survivors:
        os.killpg(group, signal.SIGKILL)
    assert survivors == [], "a child process survived SIGTERM"
    client = client_for(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    everything = client.search_runs(experiments, max_results=1000)
    assert [r.info.status for r in everything if r.info.status == "RUNNING"] == []
    stopped = [r for r in everything if r.info.status in ("KILLED", "FAILED")]
    assert stopped and all("interrupted" in r.data.tags.get(Tag.ERROR, "") for r in stopped)


def test_sigterm_ends_train_like_ctrl_c(tmp_path, tracking_uri):
    client_for(tracking_uri)  # the store exists before the child starts: polling it never races its creation
    process = start(tmp_path, "train", "--task", "addition", "--arch", "gru", "--hidden-size", "8", *LONG,
                    "--threads", "1", "--quiet", "--tracking-uri", tracking_uri)
    wait_until(process, running_run_with_metrics(tracking_uri), "a training epoch")
    terminate_and_check(process, tmp_path, tracking_uri)


def test_sigterm_ends_confirm_like_ctrl_c(tmp_path, tracking_uri, capsys):
    assert cli.main(["tune", study_file(tmp_path), "--arch", "gru", "--trials", "1", "--quiet",
                     "--tracking-uri", tracking_uri]) == 0
    capsys.readouterr()
    process = start(tmp_path, "confirm", "--task", "addition", "--arch", "gru", "--seeds", "2", *LONG,
                    "--threads", "1", "--tracking-uri", tracking_uri)
    wait_until(process, running_run_with_metrics(tracking_uri), "a confirmation epoch")
    terminate_and_check(process, tmp_path, tracking_uri)


def test_sigterm_ends_bench_like_ctrl_c(tmp_path, tracking_uri):
    studies = tmp_path / "studies"
    studies.mkdir()
    Path(study_file(tmp_path, epochs=200, train_size=2000)).rename(studies / "addition.toml")
    client_for(tracking_uri)
    process = start(tmp_path, "bench", "--preset", "quick", "--archs", "gru", "--tasks", "addition",
                    "--studies-dir", str(studies), "--seeds", "0", "--out", str(tmp_path / "reports"),
                    "--tracking-uri", tracking_uri)
    wait_until(process, running_run_with_metrics(tracking_uri), "a trial's epoch")
    terminate_and_check(process, tmp_path, tracking_uri)
    assert all(trial.state.name != "RUNNING" for trial in load(tmp_path, "addition-gru-quick").trials)
    assert runs(tracking_uri, "study")[0].info.status != "RUNNING"


def test_an_interrupt_python_drops_inside_a_callback_is_delivered_again():
    """A signal handled while a weakref callback or ``__del__`` runs raises KeyboardInterrupt where Python prints
    and drops it ("Exception ignored in ..."): the command must still stop, not train on."""
    import weakref

    class Thing:
        pass

    def callback(ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs in here, and what it raises is dropped
            pass

    with pytest.raises(KeyboardInterrupt), cli._sigterm_as_interrupt():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs now
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass
    assert ref() is None


class SignalledStore:
    """A tracking client whose run-ending write is hit by ``signals`` SIGTERMs while it writes (``sent`` counts
    those the write outlived); with ``fail`` every write raises after them, as a store that is down."""

    def __init__(self, signals: int, fail: bool = False):
        self.signals, self.fail, self.ended, self.sent, self.attempts = signals, fail, [], 0, 0

    def set_tag(self, run_id, key, value):
        pass

    def set_terminated(self, run_id, status):
        self.attempts += 1
        for _ in range(self.signals if self.attempts == 1 else 0):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, mid-write
            self.sent += 1
        if self.fail:
            raise RuntimeError("store down")
        self.ended.append(status)


@pytest.fixture
def sigterm_raises():
    """SIGTERM handled as rnnbench's main handles it: a KeyboardInterrupt."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    yield interrupt
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_while_a_run_ends_waits_for_the_end_to_land_then_interrupts(sigterm_raises):
    from benchmark.store import end_run

    store = SignalledStore(signals=1)
    with pytest.raises(KeyboardInterrupt):
        end_run(store, "run", "KILLED", "interrupted")
    assert store.ended == ["KILLED"] and store.sent == 1
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises  # the command's own handler is back


def test_a_second_sigterm_while_a_run_ends_interrupts_at_once(sigterm_raises):
    from benchmark.store import end_run

    store = SignalledStore(signals=2)
    with pytest.raises(KeyboardInterrupt):
        end_run(store, "run", "KILLED", "interrupted")
    assert store.sent == 1  # the first was held, the second interrupted: a store that hangs can still be left
    assert store.ended == []
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


def test_a_sigterm_held_while_a_failing_store_ends_a_run_is_not_lost(sigterm_raises):
    from benchmark.store import END_RUN_ATTEMPTS, end_run

    store = SignalledStore(signals=1, fail=True)
    with pytest.raises(KeyboardInterrupt) as stopped:
        end_run(store, "run", "KILLED", "interrupted")
    assert store.attempts == END_RUN_ATTEMPTS and store.sent == 1
    assert isinstance(stopped.value.__context__, RuntimeError)  # the store's error is kept beside it
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


def test_an_interrupt_among_tracking_writes_never_leaves_the_sqlite_store_locked(tmp_path, sigterm_raises):
    """SIGTERM at random moments of a stream of ``log_batch`` calls on a real SQLite store: each run still ends
    KILLED at once, and the store takes the next run. Unheld, an interrupt inside SQLAlchemy's commit left the
    write lock taken, and the run's end waited out MLflow's 20 s busy timeout."""
    import _thread
    import itertools
    import random
    import threading

    from mlflow.entities import Metric

    from benchmark.store import end_run

    client = client_for(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("interrupted")
    rng = random.Random(0)
    for _ in range(60):
        run = client.create_run(experiment).info.run_id
        timer = threading.Timer(rng.random() * 0.05, _thread.interrupt_main, args=(signal.SIGTERM,))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            for step in itertools.count():
                client.log_batch(run, metrics=[Metric("loss", 0.5, 0, step * 50 + i) for i in range(50)])
        timer.join()
        started = time.monotonic()
        end_run(client, run, "KILLED", "interrupted")
        assert time.monotonic() - started < 5 and client.get_run(run).info.status == "KILLED"


def test_an_ignored_sigterm_stays_ignored_while_a_run_ends():
    from benchmark.store import end_run

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        store = SignalledStore(signals=2)
        end_run(store, "run", "KILLED", "interrupted")
        assert store.ended == ["KILLED"] and store.sent == 2
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_held_interrupts_nest_and_reach_the_outer_handler_once(sigterm_raises):
    from benchmark.store import interrupts_held

    seen = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("inner done")
        seen.append("outer done")
    assert seen == ["inner done", "outer done"]
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises
