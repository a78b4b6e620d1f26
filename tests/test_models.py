"""Every task x architecture x loss: shapes, gradients, and learning on a tiny batch."""

import pytest
import torch
from conftest import tiny_config

from benchmark.catalog import BUILTIN_ARCHITECTURES, BUILTIN_TASKS, LOSSES
from benchmark.models import Model, build_model
from benchmark.tasks import build_task


@pytest.fixture(scope="module")
def tasks(mnist_data):
    return {
        "mnist": build_task(tiny_config("mnist"), "cpu", **mnist_data),
        "addition": build_task(tiny_config("addition"), "cpu"),
    }


@pytest.mark.parametrize("task_name", list(BUILTIN_TASKS))
@pytest.mark.parametrize("arch", list(BUILTIN_ARCHITECTURES))
@pytest.mark.parametrize("loss", LOSSES)
def test_shapes_gradients_and_learning(tasks, task_name, arch, loss):
    torch.manual_seed(0)
    task = tasks[task_name]
    config = tiny_config(task_name, arch, loss=loss, num_layers=2, dropout=0.1)
    model = build_model(config, task)
    batch = next(task.train_batches(32, torch.Generator().manual_seed(0)))
    logits = model(batch.x, batch.lengths)
    expected = (32, 10) if task_name == "mnist" else (32, batch.x.size(1), 1)
    assert logits.shape == expected

    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(40):
        total, count = task.loss(loss, model(batch.x, batch.lengths), batch)
        loss_value = total / count
        optimizer.zero_grad()
        loss_value.backward()
        if not losses:
            for name, param in model.named_parameters():
                assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"
        optimizer.step()
        losses.append(loss_value.item())
    assert losses[-1] < 0.8 * losses[0], f"loss did not decrease: {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize("arch", list(BUILTIN_ARCHITECTURES))
def test_any_batch_size_and_length(arch):
    model = Model(arch, 28, 8, 10, num_layers=2).eval()
    for batch, steps in [(1, 1), (3, 28), (7, 100)]:
        assert model(torch.rand(batch, steps, 28)).shape == (batch, 10)


def test_bidirectional_readout_uses_both_final_states():
    """The backward direction's final state is its state after reading step 0, not output[:, -1]."""
    torch.manual_seed(0)
    model = Model("bigru", 3, 4, 2).eval()
    x = torch.rand(2, 5, 3)
    output, h_n = model.cell.rnn(x)
    expected_features = torch.cat([output[:, -1, :4], output[:, 0, 4:]], dim=-1)
    torch.testing.assert_close(model(x), model.head(expected_features))


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: rnn, lstm, gru, birnn, bilstm, bigru"):
        Model("transformer", 2, 4, 1)
