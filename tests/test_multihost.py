"""Three hosts as network namespaces: one holds PostgreSQL and the authenticated tracking server, two run workers
of one study; one worker host is killed mid-trial, and only the heartbeat can tell the other.

Each worker host also has a UTS and a pid namespace of its own, so no process of one host can see another's
pids, just as on separate machines. Addresses come from 198.18.0.0/24 (the benchmarking range, used by nothing
else here) and only the test's own namespaces hold them; every wait is bounded; the namespaces are removed at the
end, also after a failure. Needs root, iproute2 and PostgreSQL's server binaries (.ci/run installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_scaleout import _pg_bindir
from test_tuning import TINY

pytestmark = pytest.mark.multihost

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "198.18.0"
DB_ADDRESS = {"w1": f"{PREFIX}.1", "w2": f"{PREFIX}.5"}  # the db host's end of each link
BUDGET = 6


def sh(*command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60, **kwargs)


@contextlib.contextmanager
def three_hosts():
    """Namespaces db, w1, w2; a veth pair from db to each worker, each pair its own /30."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("network namespaces need root, iproute2 and util-linux's unshare")
    tag = f"{os.getpid() % 100000}"
    names = {host: f"rb{host}-{tag}" for host in ("db", "w1", "w2")}
    made = []
    try:
        for name in names.values():
            if sh("ip", "netns", "add", name, check=False).returncode:
                pytest.skip(f"cannot make network namespaces here (ip netns add {name} failed)")
            made.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        for index, worker in enumerate(("w1", "w2")):
            db_end, worker_end = f"rbd{index}-{tag}", f"rbw{index}-{tag}"
            sh("ip", "link", "add", db_end, "type", "veth", "peer", "name", worker_end)
            sh("ip", "link", "set", db_end, "netns", names["db"])
            sh("ip", "link", "set", worker_end, "netns", names[worker])
            sh("ip", "-n", names["db"], "addr", "add", f"{PREFIX}.{4 * index + 1}/30", "dev", db_end)
            sh("ip", "-n", names[worker], "addr", "add", f"{PREFIX}.{4 * index + 2}/30", "dev", worker_end)
            sh("ip", "-n", names["db"], "link", "set", db_end, "up")
            sh("ip", "-n", names[worker], "link", "set", worker_end, "up")
        yield names
    finally:
        for name in made:  # deleting a namespace deletes its end of each veth pair, and so the pair
            sh("ip", "netns", "del", name, check=False)


def in_host(namespace: str, code: str, env: dict | None = None, timeout: float = 60) -> str:
    """Run Python code inside a host; returns its stdout."""
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@contextlib.contextmanager
def postgres_in(namespace: str, bindir: Path, password: str):
    folder = Path(tempfile.mkdtemp(prefix="rnnbench-multihost-pg-"))
    (folder / "pw").write_text(password)
    for path in (folder, folder / "pw"):
        shutil.chown(path, "postgres")
    as_postgres = ["ip", "netns", "exec", namespace, "runuser", "-u", "postgres", "--"]
    data = folder / "data"
    try:
        sh(*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "rnnbench", "-A", "scram-sha-256",
           f"--pwfile={folder / 'pw'}", "-E", "UTF8")
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all rnnbench {PREFIX}.0/24 scram-sha-256\n")
        listen = ",".join(["127.0.0.1", *DB_ADDRESS.values()])
        sh(*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
           f"-h {listen} -p 5432 -k {folder}", "start")
        for database in ("optuna", "mlflow"):
            sh(*as_postgres, str(bindir / "psql"), "-h", "127.0.0.1", "-U", "rnnbench", "-d", "postgres", "-c",
               f"CREATE DATABASE {database}", env={**os.environ, "PGPASSWORD": password})
        yield
    finally:
        sh(*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM first, so that rnnbench stops the process group it started the server in; then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            return


def secrets_in_process_lists(*secret_values: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
                found += [f"pid {entry.name}: {command[:80]}" for value in secret_values if value in command]
    return found


CHECK = """
import json, os, optuna
from benchmark import tuning
from benchmark.schema import Tag
from benchmark.store import client_for, search_runs
storage = tuning.open_storage(os.environ["RNNBENCH_STORAGE"], create=False)
study = optuna.load_study(study_name="multihost", storage=storage)
client = client_for(os.environ["MLFLOW_TRACKING_URI"])
runs = [r for r in search_runs(client) if r.data.tags.get(Tag.STUDY) == "multihost"]
print(json.dumps({
    "counted": tuning.counted_trials(study),
    "trials": [{"number": t.number, "state": t.state.name, "host": t.user_attrs.get("host"),
                "run": t.user_attrs.get("mlflow_run_id"), "retry_of": t.system_attrs.get("failed_trial")}
               for t in study.get_trials(deepcopy=False)],
    "runs": [{"id": r.info.run_id, "status": r.info.status, "role": r.data.tags.get(Tag.ROLE),
              "trial": r.data.tags.get(Tag.TRIAL), "retried": r.data.tags.get(Tag.RETRIED_TRIAL),
              "error": r.data.tags.get(Tag.ERROR, "")} for r in runs],
}))
"""

ANONYMOUS = """
import urllib.error, urllib.request
try:
    urllib.request.urlopen("http://{address}:5000/api/2.0/mlflow/experiments/search?max_results=5", timeout=10)
    print(200)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:  # not listening yet
    print(0)
"""


def test_two_worker_hosts_and_a_database_host_survive_a_killed_host(tmp_path):
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg")
    pytest.importorskip("flask_wtf", reason="pip install 'mlflow[auth]' (rnnbench[auth])")
    started = time.monotonic()
    db_password, admin_password = secrets.token_hex(12), secrets.token_hex(12)
    study = tmp_path / "multihost.toml"
    text = TINY.format(pruner="none", epochs=3, train_size=1500)
    study.write_text(text.replace("trials = 3", f"trials = {BUDGET}", 1))
    with three_hosts() as hosts, postgres_in(hosts["db"], bindir, db_password):
        database = f"postgresql+psycopg://rnnbench:{db_password}@127.0.0.1:5432"
        server_log = tmp_path / "server.log"
        (tmp_path / "dbhost").mkdir()
        server = subprocess.Popen(
            ["ip", "netns", "exec", hosts["db"], sys.executable, "-m", "benchmark", "server", "--auth", "--host",
             "0.0.0.0", "--port", "5000", "--artifacts-destination", str(tmp_path / "dbhost" / "artifacts"),
             "--allowed-hosts", ",".join(f"{address}:5000" for address in ["127.0.0.1", *DB_ADDRESS.values()])],
            cwd=tmp_path / "dbhost", stdout=server_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_BACKEND_STORE_URI": f"{database}/mlflow",
                 "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password})
        workers: dict[str, tuple[subprocess.Popen, Path]] = {}
        try:
            deadline = time.monotonic() + 180
            while (answer := in_host(hosts["w1"], ANONYMOUS.format(address=DB_ADDRESS["w1"])).strip()) != "401":
                assert answer == "0", f"HTTP {answer}: {server_log.read_text()[-3000:]}"  # 0: not listening yet
                assert server.poll() is None and time.monotonic() < deadline, server_log.read_text()[-3000:]
                time.sleep(1)
            # Without credentials every API request is refused, from the other worker host too.
            assert in_host(hosts["w2"], ANONYMOUS.format(address=DB_ADDRESS["w2"])).strip() == "401"

            for host in ("w1", "w2"):  # each worker host reaches the db host at its own end of its link
                address = DB_ADDRESS[host]
                env = {**os.environ, "PYTHONPATH": str(ROOT),
                       "RNNBENCH_STORAGE": f"postgresql+psycopg://rnnbench:{db_password}@{address}:5432/optuna",
                       "MLFLOW_TRACKING_URI": f"http://{address}:5000", "MLFLOW_TRACKING_USERNAME": "admin",
                       "MLFLOW_TRACKING_PASSWORD": admin_password}
                log = tmp_path / f"{host}.log"
                command = (f"hostname {host} && exec {sys.executable} -m benchmark tune {study} --arch lstm "
                           "--study-name multihost")
                workers[host] = (subprocess.Popen(
                    ["ip", "netns", "exec", hosts[host], "unshare", "--uts", "--pid", "--fork", "--mount-proc",
                     "sh", "-c", command], cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                    start_new_session=True), log)

            check_env = {"RNNBENCH_STORAGE": f"{database}/optuna", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
                         "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin_password}
            victim, deadline = None, time.monotonic() + 240
            while victim is None:  # a trial that has started training, on whichever host runs one first
                assert time.monotonic() < deadline, "no host started a trial within 240 s"
                ended = {host: log.read_text()[-2000:] for host, (p, log) in workers.items() if p.poll() is not None}
                assert not ended, f"a worker ended before any trial: {ended}"
                with contextlib.suppress(AssertionError):
                    state = json.loads(in_host(hosts["db"], CHECK, check_env))
                    running = [t for t in state["trials"] if t["state"] == "RUNNING" and t["host"] in workers
                               and t["run"]]
                    if running:
                        victim = running[0]
                        break
                time.sleep(1)
            assert secrets_in_process_lists(db_password, admin_password) == []
            lost_host = victim["host"]
            survivor_host = "w2" if lost_host == "w1" else "w1"
            os.killpg(workers[lost_host][0].pid, signal.SIGKILL)  # the whole host's worker, mid-trial
            workers[lost_host][0].wait(timeout=30)

            survivor, log = workers[survivor_host]
            assert survivor.wait(timeout=360) == 0, log.read_text()[-3000:]
            state = json.loads(in_host(hosts["db"], CHECK, check_env))
            report = tmp_path / "report"
            in_host(hosts["db"], "from benchmark import cli; raise SystemExit(cli.main(['report', '--out', "
                    f"'{report}', '--no-timestamp', '--quiet']))", check_env, timeout=300)
        finally:
            for process, _ in workers.values():
                stop(process)
            stop(server)

    trials = {t["number"]: t for t in state["trials"]}
    assert state["counted"] == BUDGET  # the exact budget, though a host died
    lost = trials[victim["number"]]
    assert lost["state"] == "FAIL"
    (retry,) = [t for t in trials.values() if t["retry_of"] == victim["number"]]
    assert retry["state"] == "COMPLETE" and retry["host"] == survivor_host
    complete = [t for t in trials.values() if t["state"] == "COMPLETE"]
    assert len(complete) == BUDGET
    trial_runs = [r for r in state["runs"] if r["role"] == "trial"]
    assert [r for r in state["runs"] if r["status"] == "RUNNING"] == []
    for trial in complete:  # exactly one FINISHED run per finished trial
        assert [r["status"] for r in trial_runs if r["trial"] == str(trial["number"])] == ["FINISHED"]
    (lost_run,) = [r for r in trial_runs if r["id"] == victim["run"]]
    assert lost_run["status"] == "FAILED" and "worker lost" in lost_run["error"]
    (retry_run,) = [r for r in trial_runs if r["id"] == retry["run"]]
    assert retry_run["retried"] == str(victim["number"])
    texts = [path.read_text() for path in (tmp_path / "server.log", tmp_path / "w1.log", tmp_path / "w2.log",
                                           tmp_path / "report" / "report.md")]
    assert not [t for t in texts for value in (db_password, admin_password) if value in t]
    assert "| lstm |" in texts[-1]
    print(f"multi-host test: {time.monotonic() - started:.0f} s wall")
