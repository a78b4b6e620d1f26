"""sLSTM: the stabilised recurrence is the paper's formula, survives gates whose exp overflows, and two hand steps."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark import registry
from benchmark.cells.slstm import FORGET_BIAS, SLSTM, SLSTMLayer


def papers_formula(layer: SLSTMLayer, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations without the stabiliser, from zero states: exact wherever exp does not overflow."""
    hidden = layer.hidden_size
    h = c = n = x.new_zeros(x.size(0), hidden)
    outputs = []
    for t in range(x.size(1)):
        z, i, f, o = (layer.input(x[:, t]) + layer.recurrent(h)).split(hidden, dim=-1)
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        h = torch.sigmoid(o) * c / n
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def layer(input_size=3, hidden=5, seed=0, dtype=torch.float64) -> SLSTMLayer:
    torch.manual_seed(seed)
    return SLSTMLayer(input_size, hidden).to(dtype)


def test_the_cells_are_registered_by_name():
    assert (registry.CELLS["slstm"].cls, registry.CELLS["slstm"].bidirectional) == (SLSTM, False)
    assert (registry.CELLS["bislstm"].cls, registry.CELLS["bislstm"].bidirectional) == (SLSTM, True)


def test_the_stabilised_layer_is_the_papers_formula_in_outputs_and_gradients():
    cell = layer()
    with torch.no_grad():  # input gates from -3 to +3: the stabiliser's max picks either side along the way
        cell.input.weight.mul_(3.0)
        cell.recurrent.weight.mul_(2.0)
    x = torch.randn(4, 12, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.linspace(-1, 1, 4 * 12 * 5, dtype=torch.float64).reshape(4, 12, 5)
    results = []
    for form in (cell.forward, lambda inputs: papers_formula(cell, inputs)):
        cell.zero_grad(set_to_none=True)
        x.grad = None
        outputs = form(x)
        (outputs * weights).sum().backward()
        results.append((outputs.detach(), x.grad.clone(), {k: p.grad.clone() for k, p in cell.named_parameters()}))
    (ours, our_dx, our_grads), (paper, paper_dx, paper_grads) = results
    torch.testing.assert_close(ours, paper, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(our_dx, paper_dx, rtol=1e-9, atol=1e-12)
    for name in paper_grads:
        torch.testing.assert_close(our_grads[name], paper_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_input_gates_whose_exp_overflows_give_finite_outputs_and_gradients():
    cell = layer(dtype=torch.float32)
    with torch.no_grad():
        cell.input.bias[5:10] = 200.0  # exp(200) is inf in float32 (and exp(-200) is 0)
    x = torch.randn(2, 30, 3)
    assert not torch.isfinite(papers_formula(cell, x)).all()  # the unstabilised formula breaks here
    outputs = cell(x)
    outputs.square().sum().backward()
    assert torch.isfinite(outputs).all()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())
    assert outputs.abs().max() <= 1.0  # o_t times a weighted mean of tanh values


def test_two_steps_worked_by_hand():
    cell = layer(input_size=1, hidden=1)
    with torch.no_grad():  # z~ = 0.5 x, i~ = x, f~ = 0, o~ = 0; no recurrence
        cell.input.weight.copy_(torch.tensor([[0.5], [1.0], [0.0], [0.0]]))
        cell.input.bias.zero_()
        cell.recurrent.weight.zero_()
    h = cell(torch.tensor([[[1.0], [2.0]]], dtype=torch.float64))[0, :, 0]
    # step 1: h = o z = 0.5 tanh(0.5), whatever i is.
    # step 2: c = f e^1 tanh(0.5) + e^2 tanh(1), n = f e^1 + e^2 with f = 0.5; divide through by e.
    first = 0.5 * math.tanh(0.5)
    second = 0.5 * (0.5 * math.tanh(0.5) + math.e * math.tanh(1.0)) / (0.5 + math.e)
    assert h.tolist() == pytest.approx([first, second], rel=1e-12)


def test_forget_gate_biases_start_by_remembering():
    cell = layer(hidden=4)
    hidden = cell.hidden_size
    assert cell.input.bias[2 * hidden:3 * hidden].tolist() == pytest.approx([3.0, 4.0, 5.0, 6.0])
    assert FORGET_BIAS == (3.0, 6.0)
    others = torch.cat([cell.input.bias[:2 * hidden], cell.input.bias[3 * hidden:]])
    assert others.abs().max() < 1.0  # nn.Linear's uniform initialisation, 1/sqrt(fan_in) wide


def test_a_stack_runs_both_directions_over_padded_rows():
    torch.manual_seed(0)
    cell = SLSTM(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(3, 7, 3)
    lengths = torch.tensor([7, 2, 5])
    outputs, last = cell(x, lengths)
    assert outputs.shape == (3, 7, 8) and last.shape == (3, 8)
    # row 1 alone, cut to its 2 real steps, gives the same outputs: padding reaches nothing
    alone, alone_last = cell(x[1:2, :2], torch.tensor([2]))
    torch.testing.assert_close(outputs[1:2, :2], alone)
    torch.testing.assert_close(last[1:2], alone_last)
    assert (outputs[1, 2:] == 0).all()
