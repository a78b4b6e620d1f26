"""The MNIST task: split, subset, input scaling and batching, on synthetic images."""

import pytest
import torch
from conftest import synthetic_mnist, tiny_config

from benchmark.tasks.mnist import MnistTask


def test_split_is_seeded_disjoint_and_five_to_one():
    data = synthetic_mnist(n_train=600, n_test=60)
    data["train_labels"] = torch.arange(600)  # label = original index, to trace the split
    task = MnistTask(tiny_config("mnist", seed=1), "cpu", **data)
    train, val = set(task.splits["train"][1].tolist()), set(task.splits["val"][1].tolist())
    assert len(train) == 500 and len(val) == 100 and not train & val
    again = MnistTask(tiny_config("mnist", seed=1), "cpu", **data)
    other = MnistTask(tiny_config("mnist", seed=2), "cpu", **data)
    assert torch.equal(again.splits["val"][1], task.splits["val"][1])
    assert not torch.equal(other.splits["val"][1], task.splits["val"][1])
    assert len(MnistTask(tiny_config("mnist", train_size=120), "cpu", **data).splits["train"][1]) == 120


def test_inputs_are_rows_scaled_then_standardised():
    images = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images[0, 3, :] = 255  # row 3 is bright: step 3 of the sequence
    x = MnistTask.as_input(images)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert x[0, 3, 0].item() == pytest.approx((1 - 0.1307) / 0.3081)
    assert x[0, 0, 0].item() == pytest.approx((0 - 0.1307) / 0.3081)
    unit = MnistTask.as_input(images, "unit")  # the notebook's ToTensor scaling
    assert unit[0, 3, 0].item() == 1.0 and unit[0, 0, 0].item() == 0.0


class Recorder(torch.nn.Module):
    """Keeps what evaluation and prediction feed the network; answers zeros."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, lengths=None):
        self.seen.append(x)
        return torch.zeros(len(x), 10)


def test_task_applies_the_configured_input_scale():
    data = synthetic_mnist(n_train=60, n_test=12)
    unit = MnistTask(tiny_config("mnist", input_scale="unit"), "cpu", **data)
    batch = next(unit.train_batches(60, torch.Generator().manual_seed(0)))  # the whole training split
    assert batch.x.min() >= 0 and batch.x.max() <= 1
    assert batch.x.sum().item() == pytest.approx(unit.splits["train"][0].double().sum().item() / 255, rel=1e-6)
    recorder = Recorder()
    unit.evaluate(recorder, "test", "ce")
    unit.predict(recorder, "test")
    pixels = data["test_images"].float() / 255  # [0, 1], as ToTensor gives them
    assert len(recorder.seen) == 2
    for inputs in recorder.seen:
        torch.testing.assert_close(inputs, pixels)


def test_batches_cover_the_training_set_once_per_epoch():
    data = synthetic_mnist(n_train=600, n_test=60)
    task = MnistTask(tiny_config("mnist"), "cpu", **data)
    batches = list(task.train_batches(64, torch.Generator().manual_seed(0)))
    assert [len(b.y) for b in batches] == [64] * 7 + [52]
    seen = torch.cat([b.x for b in batches])
    assert seen.shape == (500, 28, 28)
    expected = MnistTask.as_input(task.splits["train"][0]).sum()
    assert seen.sum().item() == pytest.approx(expected.item(), rel=1e-5)


def test_val_size_keeps_the_first_part_of_the_same_validation_split():
    """A search validating on part of the split scores a prefix of the images a full run validates on."""
    data = synthetic_mnist(n_train=600, n_test=60)
    full = MnistTask(tiny_config("mnist", seed=3), "cpu", **data)
    part = MnistTask(tiny_config("mnist", seed=3, val_size=40), "cpu", **data)
    assert len(full.splits["val"][1]) == 100 and len(part.splits["val"][1]) == 40
    assert torch.equal(part.splits["val"][0], full.splits["val"][0][:40])
    assert torch.equal(part.splits["train"][0], full.splits["train"][0])  # training is untouched
    assert part.dataset()["profile"]["val"] == 40
