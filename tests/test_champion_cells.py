"""A champion trained on any shipped cell beyond torch's own loads in a fresh interpreter, without the CLI."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import tiny_config, tracked_train

from benchmark.cells import BUILTIN_CELLS
from benchmark.champion import register_champion

# Every shipped cell class that is not nn.RNN/LSTM/GRU, one direction each, and one bidirectional form.
CELLS = (*(name for name, target, bidirectional, *_ in BUILTIN_CELLS
           if not bidirectional and not target.startswith("native:")), "bislstm")
BITS = [[[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], [[0, 1], [1, 1], [0, 0], [1, 0], [0, 1]]]
ROOT = Path(__file__).resolve().parent.parent


def fresh_command(reference: str) -> str:
    """The ``python -c`` program a user would run: load the champion, predict fixed bit pairs, print JSON."""
    return ("import json, mlflow, numpy as np; "
            f"m = mlflow.pyfunc.load_model('models:/{reference}'); "
            f"print(json.dumps(m.predict(np.array({BITS}, dtype=np.float32)).tolist()))")


def run_fresh(program: str, uri: str) -> subprocess.CompletedProcess:
    # The tree under test first on the path, also where rnnbench is installed from another checkout.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": path})


@pytest.fixture(scope="module")
def champions(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('cells') / 'mlflow.db'}"
    runs = {arch: tracked_train(tiny_config("addition", arch, epochs=1, train_size=60), uri) for arch in CELLS}
    for run in runs.values():
        register_champion(run, uri)
    return uri, runs


def test_champions_of_the_shipped_cells_load_in_a_fresh_interpreter(champions):
    uri, _ = champions
    references = [f"addition-{arch}@champion" for arch in CELLS]
    mlflow.set_tracking_uri(uri)
    try:
        expected = [mlflow.pyfunc.load_model(f"models:/{reference}").predict(np.array(BITS, dtype=np.float32))
                    for reference in references]
    finally:
        mlflow.set_tracking_uri(None)
    # One interpreter for all of them keeps the test fast; the first load is the one that needs the cells registered.
    done = run_fresh("; ".join(fresh_command(reference) for reference in references), uri)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    printed = [np.array(json.loads(line)) for line in done.stdout.strip().splitlines()[-len(CELLS):]]
    for arch, got, want in zip(CELLS, printed, expected, strict=True):
        assert got.shape == (2, 5) and np.allclose(got, want, atol=1e-6), arch


def test_checkpoint_of_a_shipped_cell_loads_in_a_fresh_interpreter(champions):
    uri, runs = champions
    program = ("from benchmark.checkpoint import load_run_checkpoint; "
               f"print(*(load_run_checkpoint(run)[1].arch for run in {list(runs.values())}))")
    done = run_fresh(program, uri)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    assert done.stdout.split() == list(CELLS)


def test_served_model_requires_rnnbench_at_its_installed_version(champions):
    uri, _ = champions
    mlflow.set_tracking_uri(uri)
    try:
        requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/addition-indrnn@champion")).read_text()
    finally:
        mlflow.set_tracking_uri(None)
    assert f"rnnbench=={importlib.metadata.version('rnnbench')}" in requirements.split()
