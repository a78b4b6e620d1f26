"""What a tune session leaves for the MLflow UI and optuna-dashboard: a named objective, no bookkeeping studies
listed, and a champion alias that only moves to a better study's best."""

import io
import json
import wsgiref.util

import optuna
import pytest

from benchmark import cli, tuning
from benchmark.champion import resolve_model
from benchmark.schema import COORDINATION_MARK, Metric
from benchmark.store import client_for

STUDY = """\
task = "addition"

[fixed]
max_train_length = 5
eval_lengths = [8]
batch_size = 50
threads = 1
hidden_size = 8

[space]
lr = {{ type = "float", low = {low}, high = {high}, log = true }}

[sampler]
type = "random"
seed = 0

[pruner]
type = "none"

[presets.quick.budget]
trials = 2
epochs = {epochs}
train_size = {train_size}

[presets.standard.budget]
trials = 2
epochs = 2

[presets.full.budget]
trials = 2
epochs = 2
"""


def study_file(tmp_path, name, low=1e-2, high=3e-2, epochs=2, train_size=300):
    path = tmp_path / f"{name}.toml"
    path.write_text(STUDY.format(low=low, high=high, epochs=epochs, train_size=train_size))
    return str(path)


def tune(path, uri, name, capsys):
    code = cli.main(["tune", path, "--arch", "gru", "--study-name", name, "--tracking-uri", uri])
    return code, capsys.readouterr().out


def storage(tmp_path):
    return tuning.open_storage(str(tmp_path / "mlruns" / "optuna.journal"))


def test_objective_is_named_and_companion_studies_are_hidden(tmp_path, tracking_uri, capsys):
    assert tune(study_file(tmp_path, "one", epochs=1, train_size=100), tracking_uri, "one", capsys)[0] == 0
    store = storage(tmp_path)
    assert optuna.load_study(study_name="one", storage=store).metric_names == [Metric.BEST_VAL_ACC]
    names = optuna.get_all_study_names(store)
    assert any(COORDINATION_MARK in n for n in names)  # the election and worker numbers still use one
    view = tuning.without_coordination(store)
    assert optuna.get_all_study_names(view) == ["one"]
    study = optuna.load_study(study_name="one", storage=view)  # reads through the view as through the storage
    assert len(study.trials) == 2 and study.best_trial.value == optuna.load_study(
        study_name="one", storage=store).best_trial.value

    dashboard = pytest.importorskip("optuna_dashboard")
    environ = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    status = []
    body = b"".join(dashboard.wsgi(view)(environ, lambda code, headers, exc_info=None: status.append(code)))
    assert status[0].startswith("200")
    listed = [s["study_name"] for s in json.loads(body)["study_summaries"]]
    assert listed == ["one"]


def test_alias_moves_only_when_a_session_beats_the_champion(tmp_path, tracking_uri, capsys):
    good = study_file(tmp_path, "good", low=2e-2, high=3e-2, epochs=2, train_size=300)
    poor = study_file(tmp_path, "poor", low=1e-5, high=2e-5, epochs=1, train_size=50)
    assert tune(good, tracking_uri, "good", capsys)[0] == 0
    champion = resolve_model("addition-gru@champion", tracking_uri)
    code, out = tune(poor, tracking_uri, "poor", capsys)
    assert code == 0
    store = storage(tmp_path)
    best = {name: optuna.load_study(study_name=name, storage=store).best_value for name in ("good", "poor")}
    assert best["poor"] < best["good"]  # the premise: the second session's best is worse
    assert resolve_model("addition-gru@champion", tracking_uri) == champion
    assert "does not beat addition-gru@champion" in out
    versions = client_for(tracking_uri).search_model_versions("name = 'addition-gru'")
    assert len(versions) == 2  # the poorer best is registered all the same, without the alias
