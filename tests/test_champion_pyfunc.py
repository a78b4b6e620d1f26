"""A registered champion is an MLflow pyfunc model linked to its run, and the alias moves only to a better run."""

import mlflow
import numpy as np
import pytest
import torch
from conftest import synthetic_mnist, tiny_config, tracked_train

from benchmark.champion import register_champion, resolve_model
from benchmark.checkpoint import load_run_checkpoint
from benchmark.schema import PYFUNC_CHECKPOINT, ModelTag, ModelVersionTag
from benchmark.store import client_for
from benchmark.tasks.mnist import MnistTask

README = __import__("pathlib").Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pyfunc")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mnist = tracked_train(tiny_config("mnist", "gru", epochs=1), uri, **synthetic_mnist(300, 60))
    addition = tracked_train(tiny_config("addition", "lstm", epochs=1, train_size=60), uri)
    return uri, mnist, addition


def load_pyfunc(uri, reference):
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.pyfunc.load_model(f"models:/{reference}")
    finally:
        mlflow.set_tracking_uri(None)


def test_mnist_champion_loads_with_pyfunc_and_predicts_at_any_batch_size(store):
    uri, mnist, _ = store
    info = register_champion(mnist, uri)
    model = load_pyfunc(uri, "mnist-gru@champion")
    assert model.metadata.run_id == mnist
    assert [(spec.shape, spec.type) for spec in model.metadata.get_input_schema().inputs] == [
        ((-1, -1, 28), np.dtype("float32"))]
    images = synthetic_mnist(5, 5, seed=1)["test_images"]
    network, config = load_run_checkpoint(mnist, uri)
    expected = network(MnistTask.as_input(images, config.input_scale)).softmax(-1).detach().numpy()
    for batch in (1, 5):  # raw 0..255 pixel rows in, class probabilities out
        probs = model.predict(images[:batch].numpy().astype(np.float32))
        assert probs.shape == (batch, 10) and np.allclose(probs, expected[:batch], atol=1e-5)
    client = client_for(uri)
    version = client.get_model_version("mnist-gru", str(info["version"]))
    assert version.run_id == mnist and version.run_link.endswith(f"/runs/{mnist}")
    assert version.tags[ModelVersionTag.CHECKPOINT] == PYFUNC_CHECKPOINT
    assert client.get_run(mnist).outputs.model_outputs  # the run's Models column: its logged model


def test_addition_champion_scores_any_length(store):
    uri, _, addition = store
    register_champion(addition, uri)
    model = load_pyfunc(uri, "addition-lstm@champion")
    network, _ = load_run_checkpoint(addition, uri)
    for batch, steps in ((1, 3), (4, 25)):
        pairs = np.random.default_rng(0).integers(0, 2, (batch, steps, 2)).astype(np.float32)
        bits = model.predict(pairs)
        with torch.no_grad():  # the run's own network: one logit per step, the probability of a 1 by hand
            logits = network(torch.from_numpy(pairs)).squeeze(-1).double().numpy()
        assert bits.shape == (batch, steps)
        np.testing.assert_allclose(bits, 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_registered_model_says_how_to_load_it_and_its_tag_reads_alone(store):
    uri, mnist, _ = store
    register_champion(mnist, uri)
    registered = client_for(uri).get_registered_model("mnist-gru")
    assert registered.tags == {ModelTag.TRAINED: "gru on mnist"}
    assert 'mlflow.pyfunc.load_model("models:/mnist-gru@champion")' in registered.description
    loader = "benchmark.checkpoint.load_checkpoint"
    assert loader in registered.description and loader in README.read_text()  # the README names the same one


def test_alias_moves_only_to_a_better_run(store, tmp_path):
    uri, _, _ = store
    client = client_for(uri)
    weak = tracked_train(tiny_config("addition", "gru", epochs=1, train_size=40, lr=1e-4), uri)
    strong = tracked_train(tiny_config("addition", "gru", epochs=2, train_size=200, lr=3e-2), uri)
    score = {r: client.get_run(r).data.metrics["best_val_acc"] for r in (weak, strong)}
    assert score[strong] > score[weak]
    assert register_champion(strong, uri, only_if_better=True)["moved"]  # no champion yet
    kept = register_champion(weak, uri, only_if_better=True)
    assert not kept["moved"] and kept["champion_run_id"] == strong and kept["created"]  # registered, not champion
    assert resolve_model("addition-gru@champion", uri)["run_id"] == strong
    assert register_champion(weak, uri)["moved"]  # `rnnbench register` is an explicit choice: it always moves
    assert resolve_model("addition-gru@champion", uri)["run_id"] == weak
    assert register_champion(strong, uri, only_if_better=True)["moved"]
    assert resolve_model("addition-gru@champion", uri)["run_id"] == strong


def test_pyfunc_rebuilds_the_network_without_running_code_from_the_file(store, monkeypatch):
    """load_context goes through load_checkpoint, which loads with weights_only=True."""
    uri, mnist, _ = store
    register_champion(mnist, uri)
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_pyfunc(uri, "mnist-gru@champion")
    assert seen == [True]
