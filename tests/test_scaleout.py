"""Scale-out: simultaneous workers elect one parent run and share the budget exactly; the real thing on
PostgreSQL + an MLflow tracking server with a worker SIGKILLed mid-trial (marked ``postgres``).

The PostgreSQL test uses $RNNBENCH_PG_URL (a role that may CREATE DATABASE; .ci/run starts a throwaway
server and sets it), else starts its own throwaway server when PostgreSQL's binaries are installed.
"""

from __future__ import annotations

import contextlib
import glob
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from test_tuning import TINY, runs, subprocess_env

from benchmark import cli, tuning
from benchmark.schema import StudyAttr
from benchmark.server import server_command
from benchmark.store import client_for, mask_url

SCALE_STUDY = TINY.replace("trials = 3\nepochs = {epochs}", "trials = {trials}\nepochs = {epochs}", 1)


def write_study(folder: Path, trials: int, epochs: int = 2, train_size: int = 200) -> str:
    path = folder / "scale.toml"
    path.write_text(SCALE_STUDY.format(pruner="none", trials=trials, epochs=epochs, train_size=train_size))
    return str(path)


# --- no server needed: the election and the shared budget under simultaneous starts -----------------------


def test_mask_url_hides_every_password_shape():
    mask = mask_url
    assert mask("postgresql+psycopg://bench:s3cret@db:5432/optuna") == "postgresql+psycopg://bench:***@db:5432/optuna"
    assert mask("postgresql+psycopg://u:p/a@ss:w@db/optuna") == "postgresql+psycopg://u:***@db/optuna"
    assert mask("postgresql://u:pw@db/x?sslmode=require&password=two") == \
        "postgresql://u:***@db/x?sslmode=require&password=***"
    assert mask("http://alice:tok@mlflow:5000") == "http://alice:***@mlflow:5000"
    for clean in ("sqlite:////tmp/x.db", "http://127.0.0.1:5000", "http://user@host:5000/a", "mlruns/optuna.journal",
                  "postgresql+psycopg://db/optuna"):
        assert mask(clean) == clean


def test_password_on_the_command_line_is_warned_about_and_masked_in_errors(tmp_path, capsys):
    from benchmark import cli

    pytest.importorskip("psycopg")
    code = cli.main(["tune", write_study(tmp_path, 1), "--arch", "gru", "--storage",
                     "postgresql+psycopg://bench:hunter2@127.0.0.1:1/optuna"])
    err = capsys.readouterr().err
    assert code == 2 and "hunter2" not in err
    assert "set RNNBENCH_STORAGE instead" in err and "cannot open storage postgresql+psycopg://bench:***@" in err


def _fake_fit(config, *args, **kwargs):
    return SimpleNamespace(val={"acc": 0.5 + config.hidden_size / 100}, test={"acc": 0.5}, best_epoch=1)


def _session(path, storage, uri, name, trials, barrier, fake):
    """One worker session, as on its own machine: starts when every other one is ready to."""
    from benchmark import train
    from benchmark import tuning as child_tuning

    if fake:
        train.fit = _fake_fit  # instant trials: every trial start races the other workers
    spec = child_tuning.load_study(path, "gru", "quick").with_budget(trials)
    barrier.wait(timeout=120)
    return child_tuning.run_study(spec, study_name=name, storage=storage, tracking_uri=uri, quiet=True).parent_run_id


def _simultaneous_sessions(tmp_path, tracking_uri, n, trials, fake=True):
    path = write_study(tmp_path, trials)
    storage = str(tmp_path / "optuna.journal")
    client_for(tracking_uri).search_experiments()  # MLflow's SQLite schema set-up itself is not concurrent-safe
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(n)
        with context.Pool(n) as pool:
            pending = [pool.apply_async(_session, (path, storage, tracking_uri, "raced", trials, barrier, fake))
                       for _ in range(n)]
            parents = [p.get(timeout=300) for p in pending]
    return parents, optuna.load_study(study_name="raced", storage=tuning.open_storage(storage))


def test_simultaneous_workers_elect_one_parent_and_share_the_budget_exactly(tmp_path, tracking_uri):
    parents, study = _simultaneous_sessions(tmp_path, tracking_uri, n=4, trials=9)
    assert len(set(parents)) == 1
    (parent,) = runs(tracking_uri, "study")  # losing candidates (if any) were deleted
    assert parent.info.run_id == parents[0] == study.user_attrs[StudyAttr.PARENT_RUN]
    assert parent.info.status == "FINISHED"
    storage = tuning.open_storage(str(tmp_path / "optuna.journal"), create=False)
    companion = optuna.load_study(study_name=tuning.coordination_study_name("raced", storage.get_study_id_from_name(
        "raced")), storage=storage)
    candidates = [t for t in companion.trials if "run_id" in t.user_attrs]
    assert candidates[0].user_attrs["run_id"] == parent.info.run_id
    workers = [t for t in companion.trials if t.user_attrs.get("role") == "worker"]
    # One companion-study number (sampler seed offset) per worker that ran trials. A session that starts after the
    # instant trials have used up the budget runs none and registers nothing (run_study skips run_worker).
    registered = {t.user_attrs["pid"] for t in workers}
    assert len(registered) == len(workers) <= 4
    assert {t.user_attrs["pid"] for t in study.trials if "pid" in t.user_attrs} <= registered

    states = [t.state.name for t in study.trials]
    surplus = [t for t in study.trials if t.user_attrs.get("ended_by") == "surplus"]
    assert states.count("COMPLETE") == 9 and len(states) == 9 + len(surplus)  # never one trial more
    assert all(t.state.name == "FAIL" and "mlflow_run_id" not in t.user_attrs for t in surplus)
    assert tuning.counted_trials(study) == 9
    children = runs(tracking_uri, "trial")
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == \
        sorted(t.number for t in study.trials if t.state.name == "COMPLETE")
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.data.metrics["n_complete"] == 9 and parent.data.metrics["n_fail"] == 0


def test_holds_slot_counts_waiting_retries_and_ignores_lost_interrupted_surplus():
    def trial(number, state, **attrs):
        system = {"retry_history": attrs.pop("retry_of")} if "retry_of" in attrs else {}
        return SimpleNamespace(number=number, state=optuna.trial.TrialState[state], user_attrs=attrs,
                               system_attrs=system)

    trials = [trial(0, "COMPLETE"), trial(1, "FAIL"), trial(2, "FAIL", ended_by="interrupt"),
              trial(3, "FAIL", ended_by="surplus"), trial(4, "RUNNING"), trial(5, "WAITING", retry_of=[1])]
    # Holding slots below 6: 0, 4 and the retry 5 (1 was lost and re-queued by 5; 2 and 3 never count).
    assert tuning.holds_slot(trials, 6, budget=4) and not tuning.holds_slot(trials, 6, budget=3)
    assert tuning.holds_slot(trials, 5, budget=3)  # the retry itself still fits
    assert tuning.next_step(trials, 3, heartbeat=False, space="x") == "run"  # the waiting retry
    done = trials[:5]
    assert tuning.next_step(done, 2, heartbeat=True, space="x") == "wait"  # trial 4 may still be lost
    assert tuning.next_step(done, 2, heartbeat=False, space="x") == "done"  # ... but nobody here could tell


def test_server_command_proxies_artifacts_binds_loopback_and_keeps_the_password_off_argv(tmp_path):
    command, env, shown = server_command("postgresql+psycopg://mlflow:hunter2@db/mlflow", str(tmp_path / "art"))
    assert "hunter2" not in " ".join(command) and env["MLFLOW_BACKEND_STORE_URI"].endswith(":hunter2@db/mlflow")
    assert shown == "postgresql+psycopg://mlflow:***@db/mlflow"
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1] == (tmp_path / "art").resolve().as_uri()
    command, env, _ = server_command()  # defaults: the embedded store
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"
    assert command[command.index("--artifacts-destination") + 1].endswith("/mlruns/artifacts")


# --- the real thing: PostgreSQL, an MLflow server, 3 workers, one SIGKILLed mid-trial -----------------------


def _pg_bindir() -> Path | None:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl")).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _throwaway_postgres(bindir: Path):
    """initdb + pg_ctl on 127.0.0.1, a free port, a temporary data directory (as user postgres when root)."""
    folder = Path(tempfile.mkdtemp(prefix="rnnbench-pg-"))
    password = secrets.token_hex(12)
    (folder / "pw").write_text(password)
    run_as = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), folder / "data"
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "rnnbench", "-A", "scram-sha-256",
                        f"--pwfile={folder / 'pw'}", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                        f"-h 127.0.0.1 -p {port} -k {folder}", "start"], check=True, capture_output=True)
        yield f"postgresql+psycopg://rnnbench:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_url():
    if os.environ.get("RNNBENCH_PG_URL"):
        yield os.environ["RNNBENCH_PG_URL"]
        return
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL: set RNNBENCH_PG_URL=postgresql+psycopg://USER:PW@HOST:PORT/DB (a role that may "
                    "CREATE DATABASE) or install the server (apt-get install postgresql); .ci/run does the latter")
    with _throwaway_postgres(bindir) as url:
        yield url


@pytest.fixture
def databases(pg_url):
    """Two fresh databases (Optuna, MLflow) on the server; dropped afterwards."""
    psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (rnnbench[postgres])")
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    suffix = secrets.token_hex(4)
    names = {"optuna": f"rnnbench_optuna_{suffix}", "mlflow": f"rnnbench_mlflow_{suffix}"}
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names.values():
            connection.execute(f'CREATE DATABASE "{name}"')
    base = pg_url.rsplit("/", 1)[0]
    yield {key: f"{base}/{name}" for key, name in names.items()}
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names.values():
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_for_server(url: str, process, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"MLflow server not up after {seconds:.0f}s: {log.read_text()[-3000:]}")


@pytest.mark.postgres
def test_three_workers_on_postgres_and_a_server_survive_a_sigkill(tmp_path, databases):
    password = databases["optuna"].split("@")[0].rsplit(":", 1)[1]
    port = _free_port()
    tracking = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    server_env = {**subprocess_env(), "MLFLOW_BACKEND_STORE_URI": databases["mlflow"]}
    server = subprocess.Popen([sys.executable, "-m", "benchmark", "server", "--port", str(port), "--workers", "2",
                               "--artifacts-destination", str(tmp_path / "artifacts")],
                              env=server_env, stdout=server_log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    workers: dict[int, tuple[subprocess.Popen, Path]] = {}
    try:
        _wait_for_server(tracking, server, server_log)
        study_path = write_study(tmp_path, trials=12, epochs=3, train_size=400)
        env = {**subprocess_env(), tuning.STORAGE_ENV: databases["optuna"], "MLFLOW_TRACKING_URI": tracking}
        command = [sys.executable, "-m", "benchmark", "tune", study_path, "--arch", "gru", "--study-name", "scaleout"]

        def start(index):
            log = tmp_path / f"worker{index}.log"
            process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
            workers[process.pid] = (process, log)
            return process

        for index in range(3):  # at the same moment: no launcher coordinates them
            start(index)
        for pid in workers:  # nothing secret in any process list
            assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert password not in Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()

        storage = tuning.open_storage(databases["optuna"])
        victim, deadline = None, time.time() + 240
        while victim is None and time.time() < deadline:  # a trial that has just started training
            with contextlib.suppress(KeyError):
                for trial in optuna.load_study(study_name="scaleout", storage=storage).get_trials(deepcopy=False):
                    pid = trial.user_attrs.get("pid")
                    if (trial.state.name == "RUNNING" and pid in workers and "mlflow_run_id" in trial.user_attrs
                            and trial.number >= 2):
                        os.kill(pid, signal.SIGKILL)
                        victim = trial
                        break
            time.sleep(0.05)
        assert victim is not None, "no trial started within 240 s"
        workers[victim.user_attrs["pid"]][0].wait(timeout=30)
        start(3)  # a replacement joins mid-study (the others would pick up the lost trial too)

        for pid, (process, log) in workers.items():
            if pid != victim.user_attrs["pid"]:
                assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
        for _, log in workers.values():
            assert password not in log.read_text()

        study = optuna.load_study(study_name="scaleout", storage=storage)
        trials = study.get_trials(deepcopy=False)
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        states = [(t.number, t.state.name, t.system_attrs.get("failed_trial"), t.user_attrs.get(StudyAttr.ERROR))
                  for t in trials]  # shown when the count is off: which trial went where
        assert len(complete) == 12 and tuning.counted_trials(study) == 12, states
        lost = study.trials[victim.number]
        assert lost.state.name == "FAIL" and lost.user_attrs["mlflow_run_id"] == victim.user_attrs["mlflow_run_id"]
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
        assert retry.state.name == "COMPLETE" and retry.params == lost.params
        first = [tuple(sorted(t.params.items())) for t in trials if t.number < 3]
        assert len(set(first)) == 3  # simultaneous sessions draw different parameters (own sampler seeds)

        client = client_for(tracking)
        (parent,) = runs(tracking, "study")
        assert parent.info.status == "FINISHED" and parent.info.run_id == study.user_attrs[StudyAttr.PARENT_RUN]
        assert parent.data.metrics["n_complete"] == 12
        trial_runs = runs(tracking, "trial")
        assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
        assert not [r for r in trial_runs if r.info.status == "RUNNING"]
        finished = [int(r.data.tags["trial_number"]) for r in trial_runs if r.info.status == "FINISHED"]
        assert sorted(finished) == sorted(t.number for t in complete)  # exactly one run per finished trial
        for trial in complete:
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            assert run.info.status == "FINISHED" and run.data.tags["trial_number"] == str(trial.number)
        lost_run = client.get_run(victim.user_attrs["mlflow_run_id"])
        assert lost_run.info.status in ("FAILED", "KILLED") and "worker lost" in lost_run.data.tags["error"]
        assert retry.user_attrs["mlflow_run_id"] != lost_run.info.run_id
        best = client.get_run(parent.data.tags["best_run_id"])  # artifacts went through the server
        assert "model.pt" in [a.path.split("/")[-1] for a in client.list_artifacts(best.info.run_id, "checkpoint")]
        # The report reads the server and the PostgreSQL study storage, and leaks no password.
        assert cli.main(["report", "--tracking-uri", tracking, "--storage", databases["optuna"],
                         "--out", str(tmp_path / "report"), "--no-timestamp"]) == 0
        report = (tmp_path / "report" / "report.md").read_text()
        assert "| gru |" in report and password not in report and "#registry#" not in report
    finally:
        for process, _ in workers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


OPEN_TOGETHER = """
import os, sys, time
from benchmark.tuning import open_storage
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
open_storage(os.environ["RNNBENCH_STORAGE"])
"""


@pytest.mark.postgres
def test_workers_opening_a_new_postgres_storage_together_all_succeed(databases):
    """Optuna creates its tables without a lock: processes starting together race on a new database."""
    start = time.time() + 5
    env = {**subprocess_env(), tuning.STORAGE_ENV: databases["optuna"]}  # the URL in the environment, not argv
    children = [subprocess.Popen([sys.executable, "-c", OPEN_TOGETHER, str(start)], env=env, stderr=subprocess.PIPE,
                                 text=True) for _ in range(4)]
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, "\n".join(errors)
