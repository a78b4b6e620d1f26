"""The plugin cells (IndRNN, minGRU, minLSTM) and the pixel MNIST tasks, on tiny synthetic inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_mnist, tiny_config
from torch import nn

from benchmark import registry
from benchmark.cells.indrnn import RECURRENT_LIMIT, IndRNN
from benchmark.cells.minrnn import MinGRU, MinLSTM
from benchmark.cells.stack import reversal_index
from benchmark.tasks.mnist import MnistTask
from benchmark.tasks.pixel_mnist import PermutedPixelMnistTask, PixelMnistTask

VARIANTS = [(IndRNN, False), (IndRNN, True), (MinGRU, False), (MinGRU, True), (MinLSTM, False), (MinLSTM, True)]
VARIANT_IDS = ["indrnn", "biindrnn", "mingru", "bimingru", "minlstm", "biminlstm"]
SCAN_VARIANTS = [variant for variant in VARIANTS if variant[0] is not IndRNN]
B, T, F, H = 3, 7, 4, 5
LENGTHS = torch.tensor([7, 3, 5])


def build(cls, bidirectional, num_layers=2, input_size=F, hidden_size=H, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional, **kwargs)


def inputs(seed=1, steps=T, batch=B):
    return torch.randn(batch, steps, F, generator=torch.Generator().manual_seed(seed))


def test_importing_the_package_registers_every_cell_by_name():
    wanted = dict(zip(VARIANT_IDS, VARIANTS, strict=True))
    assert {name: (registry.CELLS[name].cls, registry.CELLS[name].bidirectional) for name in wanted} == wanted
    assert registry.TASKS["pixel_mnist"].cls is PixelMnistTask
    assert registry.TASKS["permuted_pixel_mnist"].cls is PermutedPixelMnistTask


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cls, bidirectional", VARIANTS, ids=VARIANT_IDS)
def test_shapes_of_outputs_and_last(cls, bidirectional, num_layers):
    cell = build(cls, bidirectional, num_layers)
    width = H * (2 if bidirectional else 1)
    for mode in (cell.train, cell.eval):
        mode()
        for lengths in (None, LENGTHS):
            outputs, last = cell(inputs(), lengths)
            assert outputs.shape == (B, T, width) and last.shape == (B, width)
    outputs, last = cell(inputs(), None)
    if bidirectional:  # forward half after the last step, backward half after step 0
        assert torch.equal(last, torch.cat([outputs[:, -1, :H], outputs[:, 0, H:]], -1))
    else:
        assert torch.equal(last, outputs[:, -1])


@pytest.mark.parametrize("cls, bidirectional", VARIANTS, ids=VARIANT_IDS)
def test_gradient_reaches_every_parameter(cls, bidirectional):
    cell = build(cls, bidirectional, num_layers=2, dropout=0.1).train()
    outputs, last = cell(inputs(), LENGTHS)
    (outputs.pow(2).sum() + last.sum()).backward()
    names = [name for name, _ in cell.named_parameters()]
    assert len(names) == 2 * (2 if bidirectional else 1) * (3 if cls is IndRNN else 2)
    missing = [name for name, p in cell.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("cls, bidirectional", VARIANTS, ids=VARIANT_IDS)
def test_padding_changes_neither_last_nor_the_real_steps(cls, bidirectional):
    cell = build(cls, bidirectional, num_layers=2)
    x = inputs()
    real = torch.arange(T)[None, :] < LENGTHS[:, None]
    garbage = torch.where(real[:, :, None], x, 100 * torch.randn(B, T, F))
    for mode in (cell.train, cell.eval):  # the scan cells: the parallel and the sequential form
        mode()
        outputs, last = cell(x, LENGTHS)
        outputs_garbage, last_garbage = cell(garbage, LENGTHS)
        torch.testing.assert_close(last_garbage, last, rtol=0, atol=1e-6)
        torch.testing.assert_close(outputs_garbage, outputs, rtol=0, atol=1e-6)
        assert not outputs[~real].any()  # padded steps are zeros
        for row, length in enumerate(LENGTHS.tolist()):
            alone, alone_last = cell(x[row:row + 1, :length])
            torch.testing.assert_close(alone_last[0], last[row], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(alone[0], outputs[row, :length], rtol=1e-5, atol=1e-5)


def test_reversal_reverses_each_row_within_its_length_and_undoes_itself():
    index = reversal_index(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert torch.equal(index.gather(1, index), torch.arange(4).expand(3, 4))


@pytest.mark.parametrize("cls, bidirectional", SCAN_VARIANTS, ids=VARIANT_IDS[2:])
def test_parallel_scan_and_sequential_form_agree(cls, bidirectional):
    cell = build(cls, bidirectional, num_layers=2, hidden_size=16)
    x = 3 * inputs(steps=24, batch=4)  # large enough to use both branches of g
    lengths = torch.tensor([24, 1, 17, 9])
    for given in (None, lengths):
        parallel, parallel_last = cell.forward_parallel(x, given)
        sequential, sequential_last = cell.forward_sequential(x, given)
        torch.testing.assert_close(parallel, sequential, rtol=0, atol=1e-5)
        torch.testing.assert_close(parallel_last, sequential_last, rtol=0, atol=1e-5)
    # On a CPU every mode runs the step loop, which trains faster there than the scan.
    cell.train()
    assert torch.equal(cell(x, lengths)[1], cell.forward_sequential(x, lengths)[1])
    cell.eval()
    assert torch.equal(cell(x, lengths)[1], cell.forward_sequential(x, lengths)[1])


def test_indrnn_recurrent_weight_stays_in_range():
    cell = build(IndRNN, False, num_layers=1, input_size=1, hidden_size=3)
    layer = cell.stack.layers[0][0]
    assert (layer.recurrent.abs() <= RECURRENT_LIMIT).all()  # initialised inside the bound
    with torch.no_grad():
        layer.recurrent.copy_(torch.tensor([3.0, -5.0, 0.5]))
        layer.input.weight.zero_()
        layer.input.bias.fill_(1.0)
    assert torch.equal(layer.recurrent_weight(), torch.tensor([1.0, -1.0, 0.5]))
    # h_t = relu(1 + u h_{t-1}): with u held to 1 the state grows linearly, not as 3^t; -1 alternates 1, 0
    outputs, last = cell(torch.zeros(1, 50, 1))
    torch.testing.assert_close(last[0], torch.tensor([50.0, 0.0, 2.0]))
    last.sum().backward()
    assert layer.recurrent.grad[0] > 0  # straight through: a weight past the bound keeps its gradient
    optimizer = torch.optim.Adam(cell.parameters(), lr=10.0)
    optimizer.step()
    assert (layer.recurrent_weight().abs() <= RECURRENT_LIMIT).all()


class PixelClassifier(nn.Module):
    """The readout the suite adds: a linear head on the cell's ``last``."""

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.cell = IndRNN(input_size, 8)
        self.head = nn.Linear(8, output_size)

    def forward(self, x, lengths=None):
        return self.head(self.cell(x, lengths)[1])


class AlwaysAnswers(nn.Module):
    """The same class for every input, whatever the input."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, x, lengths=None):
        return nn.functional.one_hot(torch.full((len(x),), self.label), 10).float()


@pytest.fixture(scope="module")
def pixel_data():
    return synthetic_mnist(n_train=120, n_test=24)


def test_pixel_tasks_read_one_pixel_per_step_in_a_fixed_permutation(pixel_data):
    config = tiny_config("mnist", train_size=40)
    rows, pixels = MnistTask(config, "cpu", **pixel_data), PixelMnistTask(config, "cpu", **pixel_data)
    permuted = PermutedPixelMnistTask(config, "cpu", **pixel_data)
    assert (pixels.input_size, pixels.readout, pixels.train_size) == (1, "last", 40)
    for task in (rows, pixels, permuted):  # the same seeded split as MNIST rows
        assert torch.equal(task.splits["val"][1], rows.splits["val"][1])
    generator = torch.Generator().manual_seed(0)
    raster = next(pixels.train_batches(16, generator))
    assert raster.x.shape == (16, 784, 1) and raster.y.shape == (16,)
    images = rows.splits["train"][0][:5]
    torch.testing.assert_close(pixels.as_input(images), rows.as_input(images).reshape(5, 784, 1))
    order = permuted.permutation
    assert torch.equal(order.sort().values, torch.arange(784)) and not torch.equal(order, torch.arange(784))
    again = PermutedPixelMnistTask(tiny_config("mnist", seed=3), "cpu", **pixel_data)
    assert torch.equal(again.permutation, order)  # one permutation for every run
    assert torch.equal(permuted.as_input(images), pixels.as_input(images)[:, order])
    assert permuted.run_params() == {"permutation_seed": "0"} and pixels.run_params() == {}


@pytest.mark.parametrize("task_class", [PixelMnistTask, PermutedPixelMnistTask])
def test_one_training_step_through_a_pixel_task(task_class, pixel_data):
    task = task_class(tiny_config("mnist", train_size=32), "cpu", **pixel_data)
    torch.manual_seed(0)
    model = PixelClassifier(task.input_size, task.output_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    batch = next(task.train_batches(16, torch.Generator().manual_seed(0)))
    model.train()
    total, count = task.loss("ce", model(batch.x, batch.lengths), batch)
    (total / count).backward()
    optimizer.step()
    assert torch.isfinite(total) and count == 16
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    task.eval_batch = 10  # the 24 test images in chunks of 10, 10 and 4
    metrics = task.evaluate(model, "test", "ce")
    images, labels = pixel_data["test_images"], pixel_data["test_labels"]
    with torch.no_grad():  # all 24 at once, mean cross-entropy and argmax accuracy written out here
        logits = model(task.as_input(images))
    assert metrics["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert metrics["acc"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    common = int(labels.mode().values)  # a model that always answers the commonest label scores its share
    always = task.evaluate(AlwaysAnswers(common), "test", "ce")
    assert always["acc"] == pytest.approx(int((labels == common).sum()) / 24) and always["acc"] > 0


def test_a_permuted_pixel_run_records_its_permutation_seed(pixel_data, tracking_uri):
    from benchmark.config import TrainConfig
    from benchmark.tracking import tracked_run
    from benchmark.train import fit

    config = TrainConfig.for_task("permuted_pixel_mnist", "mingru", hidden_size=4, epochs=1, batch_size=50,
                                  train_size=100)
    with tracked_run(config, tracking_uri=tracking_uri) as tracker:
        fit(config, tracker=tracker, quiet=True, task_data=pixel_data)
    run = tracker.client.get_run(tracker.run_id)
    assert run.data.params["permutation_seed"] == "0" and run.data.params["task"] == "permuted_pixel_mnist"
    assert run.info.status == "FINISHED"


def test_train_hands_data_dir_to_every_task_that_reads_one(tmp_path, monkeypatch, capsys):
    """`--data-dir` reaches a pixel task's loader as it reaches MNIST rows' (it was once dropped for any other task)."""
    from conftest import synthetic_mnist

    from benchmark import cli, data

    asked = []
    monkeypatch.setattr(data, "load_mnist", lambda folder=None: asked.append(folder) or synthetic_mnist(200, 40))
    folder = tmp_path / "digits"
    assert cli.main(["train", "--task", "pixel_mnist", "--arch", "indrnn", "--hidden-size", "4", "--epochs", "1",
                     "--train-size", "20", "--batch-size", "20", "--data-dir", str(folder), "--quiet",
                     "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"]) == 0, capsys.readouterr().err
    assert asked == [str(folder)]


def test_a_pixel_checkpoint_records_the_normalisation_its_task_applied():
    """The checkpoint's input record is what ``as_input`` did: (x / 255 - mean) / std, for pixel MNIST as for rows."""
    from benchmark.checkpoint import input_normalisation
    from benchmark.config import TrainConfig

    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for task in ("pixel_mnist", "permuted_pixel_mnist", "mnist"):
        record = input_normalisation(TrainConfig.for_task(task, "indrnn"))
        assert record["applied"] and record["input_scale"] == "standard"
        by_hand = ((images.double() / 255 - record["mean"]) / record["std"]).float()
        assert torch.allclose(PixelMnistTask.as_input(None, images).reshape(3, 28, 28), by_hand, atol=1e-5)
    unit = input_normalisation(TrainConfig.for_task("pixel_mnist", "indrnn", input_scale="unit"))
    assert (unit["mean"], unit["std"], unit["applied"]) == (0.0, 1.0, False)
    assert not input_normalisation(TrainConfig.for_task("addition", "indrnn"))["applied"]


def autograd_node_names(tensor: torch.Tensor) -> list[str]:
    """The name of every node in ``tensor``'s backward graph."""
    names, seen, stack = [], set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name", sorted(name for name, spec in registry.CELLS.items() if spec.source.builtin))
def test_no_step_loop_indexes_one_step_out_of_the_whole_sequence(name):
    # x[:, t] in a step loop has a backward that writes a zero tensor of the whole sequence for every step: T^2
    # work, which made IndRNN 3.7x slower than LSTM on pixel MNIST. unbind reads all steps through one node.
    steps = 64
    cell = registry.CELLS[name].cls(F, H, num_layers=1, bidirectional=registry.CELLS[name].bidirectional).train()
    outputs, _ = cell(inputs(steps=steps))
    selects = autograd_node_names(outputs.sum()).count("SelectBackward0")
    assert selects < steps // 2, f"{name}: {selects} SelectBackward0 nodes over {steps} steps"
