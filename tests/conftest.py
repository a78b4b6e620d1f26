"""Shared fixtures: tiny synthetic data through the real code paths, temporary tracking stores."""

from __future__ import annotations

import pytest
import torch

from benchmark.config import TrainConfig


def synthetic_mnist(n_train: int = 600, n_test: int = 120, seed: int = 0) -> dict[str, torch.Tensor]:
    """uint8 28x28 'digits' whose class c lights up rows 2c..2c+2 (learnable in a few steps), plus noise."""
    generator = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=generator)
        images = torch.randint(0, 60, (n, 28, 28), generator=generator, dtype=torch.uint8)
        for row in range(3):
            images[torch.arange(n), 2 * labels + row] = 255
        return images, labels

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return {"train_images": train_images, "train_labels": train_labels,
            "test_images": test_images, "test_labels": test_labels}


@pytest.fixture(scope="session")
def mnist_data():
    return synthetic_mnist()


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def _kernel_picks(tmp_path_factory):
    return tmp_path_factory.mktemp("kernel") / "auto_impl.json"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, _kernel_picks):
    """No test may touch ./mlruns, ./data, a real tracking server or the user's kernel picks by accident. The
    picks file is shared by the session's tests and their subprocesses, so they all train with the same kernels."""
    monkeypatch.setenv("RNNBENCH_KERNEL_CACHE", str(_kernel_picks))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RNNBENCH_DATA", str(tmp_path / "data"))
    torch.set_num_threads(1)


def tiny_config(task: str, arch: str = "lstm", **overrides) -> TrainConfig:
    base = {"mnist": dict(hidden_size=16, batch_size=100, epochs=2, lr=1e-2),
            "addition": dict(hidden_size=8, batch_size=50, epochs=2, lr=1e-2, train_size=200,
                             max_train_length=6, eval_lengths=(9,))}[task]
    return TrainConfig.for_task(task, arch, **{**base, **overrides})


def tracked_train(config: TrainConfig, uri: str, **data) -> str:
    """One tracked ``fit`` of ``config`` into the store at ``uri`` (synthetic MNIST tensors as ``data``); its run id."""
    from benchmark.tracking import tracked_run
    from benchmark.train import fit

    with tracked_run(config, tracking_uri=uri) as tracker:
        fit(config, tracker=tracker, quiet=True, task_data=data or None)
    return tracker.run_id
