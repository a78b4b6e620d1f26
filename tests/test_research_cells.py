"""LRU and S6: the scan and the sequential form agree, the papers' initialisations, two hand-worked steps each."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import synthetic_mnist, tiny_config

from benchmark import registry
from benchmark.cells.lru import LRU, MAX_PHASE, R_MAX, R_MIN, LRULayer, ring_init
from benchmark.cells.minrnn import sequential_scan
from benchmark.cells.s6 import DT_MAX, DT_MIN, S6, S6Layer, chunked_scan
from benchmark.models import build_model
from benchmark.tasks import build_task

VARIANTS = [(LRU, False), (LRU, True), (S6, False), (S6, True)]
IDS = ["lru", "bilru", "s6", "bis6"]
F_IN, H = 3, 6


def build(cls, bidirectional, num_layers=2, dtype=torch.float32, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(F_IN, H, num_layers=num_layers, bidirectional=bidirectional, **kwargs).to(dtype)


def test_the_cells_are_registered_by_name():
    wanted = dict(zip(IDS, VARIANTS, strict=True))
    assert {name: (registry.CELLS[name].cls, registry.CELLS[name].bidirectional) for name in wanted} == wanted


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cls, bidirectional", VARIANTS, ids=IDS)
def test_shapes_of_outputs_and_last(cls, bidirectional, num_layers):
    cell = build(cls, bidirectional, num_layers)
    width = H * (2 if bidirectional else 1)
    x = torch.randn(4, 9, F_IN)
    for mode in (cell.train, cell.eval):
        mode()
        for lengths in (None, torch.tensor([9, 1, 4, 7])):
            outputs, last = cell(x, lengths)
            assert outputs.shape == (4, 9, width) and last.shape == (4, width)


def outputs_and_gradients(cell, form, x, lengths):
    cell.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    outputs, last = getattr(cell, form)(x, lengths)
    weights = torch.linspace(-1, 1, outputs.numel(), dtype=x.dtype).reshape(outputs.shape)  # every output counts
    ((outputs * weights).sum() + last.pow(2).sum()).backward()
    grads = {name: p.grad.clone() for name, p in cell.named_parameters()}
    return outputs.detach(), last.detach(), grads, x.grad


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("cls, bidirectional", VARIANTS, ids=IDS)
def test_scan_and_sequential_form_agree_in_outputs_and_gradients(cls, bidirectional, dtype, tolerance):
    cell = build(cls, bidirectional, dtype=dtype)
    # 75 steps: S6's scan runs three chunks of 32, the last one padded; the shorter rows end inside chunks
    x = 2 * torch.randn(4, 75, F_IN, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for lengths in (None, torch.tensor([75, 1, 40, 33])):
        scan = outputs_and_gradients(cell, "forward_parallel", x, lengths)
        sequential = outputs_and_gradients(cell, "forward_sequential", x, lengths)
        torch.testing.assert_close(scan[:2], sequential[:2], rtol=tolerance, atol=tolerance)
        assert scan[2].keys() == sequential[2].keys() and all(g.abs().sum() > 0 for g in scan[2].values())
        for name in scan[2]:
            torch.testing.assert_close(scan[2][name], sequential[2][name], rtol=tolerance, atol=tolerance, msg=name)
        torch.testing.assert_close(scan[3], sequential[3], rtol=tolerance, atol=tolerance)


def test_chunked_scan_is_the_recurrence_for_any_chunk_size():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 70, 3, dtype=torch.float64, generator=generator)
    b = torch.randn(2, 70, 3, dtype=torch.float64, generator=generator)
    for chunk in (1, 4, 7, 32, 70, 128):
        torch.testing.assert_close(chunked_scan(a, b, chunk), sequential_scan(a, b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls, bidirectional", VARIANTS, ids=IDS)
def test_forward_trains_through_the_sequential_form(cls, bidirectional):
    """On a CPU the step loop trains faster than either scan (benchmarks/scan_vs_sequential.py)."""
    cell = build(cls, bidirectional).train()
    x, lengths = torch.randn(3, 10, F_IN), torch.tensor([10, 4, 7])
    assert torch.equal(cell(x, lengths)[0], cell.forward_sequential(x, lengths)[0])


def test_lru_eigenvalues_lie_on_the_papers_ring():
    lam, gamma = LRULayer(F_IN, 4096).eigenvalues()
    modulus, phase = lam.abs(), lam.angle() % (2 * math.pi)
    assert modulus.min() >= R_MIN - 1e-6 and modulus.max() <= R_MAX + 1e-6
    # uniform on the ring's area: |lambda|^2 uniform on [r_min^2, r_max^2], phase uniform on [0, max_phase]
    assert (modulus ** 2).mean().item() == pytest.approx((R_MIN ** 2 + R_MAX ** 2) / 2, abs=0.003)
    assert phase.mean().item() == pytest.approx(MAX_PHASE / 2, rel=0.05)
    torch.testing.assert_close(gamma, torch.sqrt(1 - modulus ** 2), rtol=1e-3, atol=0)
    nu_log, theta_log = ring_init(1000, r_min=0.5, r_max=0.6, max_phase=0.1)
    radii = torch.exp(-nu_log.exp())
    assert radii.min() >= 0.5 - 1e-6 and radii.max() <= 0.6 + 1e-6 and theta_log.exp().max() <= 0.1


def test_lru_normalisation_keeps_the_states_variance_for_white_noise():
    torch.manual_seed(0)
    layer = LRULayer(F_IN, 32, r_min=0.9, r_max=0.99).double()
    x = torch.randn(256, 1500, F_IN, dtype=torch.float64)  # 1500 steps: 0.99^3000 of the start is left
    lam, u = layer.driven(x)  # u = gamma B x
    h = sequential_scan(lam.expand_as(u), u)
    bx = torch.complex(F.linear(x, layer.B[0]), F.linear(x, layer.B[1]))
    ratio = h[:, -1].abs().pow(2).mean(0) / bx.abs().pow(2).mean((0, 1))  # per state: |h|^2 / |B x|^2
    assert 0.8 < ratio.mean().item() < 1.2  # without gamma: 1 / (1 - |lambda|^2), 5 to 50


def test_lru_two_steps_by_hand():
    layer = LRULayer(1, 1).double()
    gamma = math.sqrt(0.75)
    with torch.no_grad():  # lambda = 0.5 i: modulus 0.5, phase pi / 2
        layer.nu_log_init.fill_(math.log(math.log(2)))
        layer.theta_log_init.fill_(math.log(math.pi / 2))
        layer.B.copy_(torch.tensor([[[1.0]], [[0.0]]]))  # B = 1
        layer.C.copy_(torch.tensor([[[1.0]], [[1.0]]]))  # C = 1 + i
        layer.D.weight.fill_(0.5)
        layer.D.bias.zero_()
        layer.glu.weight.copy_(torch.tensor([[1.0], [0.0]]))  # value y, gate sigmoid(0) = 0.5
        layer.glu.bias.zero_()
    x = torch.tensor([[[2.0], [4.0]]], dtype=torch.float64)
    # h_1 = 2 gamma, h_2 = 0.5 i h_1 + 4 gamma = gamma (4 + i); Re((1 + i) h) = 2 gamma, 3 gamma; D x = 1, 2
    y = torch.tensor([2 * gamma + 1, 3 * gamma + 2], dtype=torch.float64)
    wanted = (0.5 * F.gelu(y)).reshape(1, 2, 1)
    for form in (layer.forward_sequential, layer.forward_parallel):
        torch.testing.assert_close(form(x), wanted, rtol=1e-12, atol=1e-12)


def test_s6_initialisation_is_mambas():
    layer = S6Layer(F_IN, 64)
    torch.testing.assert_close(layer.A(), -torch.arange(1, 17).float().expand(64, 16))  # S4D-real: A_n = -(n + 1)
    dt = F.softplus(layer.delta.bias)
    assert dt.min() >= DT_MIN * 0.999 and dt.max() <= DT_MAX * 1.001
    assert torch.equal(layer.D_init + layer.D_shift, torch.ones(64))
    assert layer.delta.in_features == math.ceil(64 / 16)


def test_s6_two_steps_by_hand():
    layer = S6Layer(1, 1, state_size=1, block=False).double()
    with torch.no_grad():
        layer.input.weight.fill_(1.0)  # u = x
        layer.input.bias.zero_()
        layer.select.weight.copy_(torch.tensor([[0.0], [1.0], [1.0]]))  # Delta's rank input 0, B_t = C_t = u_t
        layer.delta.bias.fill_(math.log(math.expm1(0.5)))  # Delta = softplus(bias) = 0.5
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    # A = -1: h_1 = 0.5 * 1 * 1 = 0.5, y_1 = 1 * 0.5 + 1 = 1.5; h_2 = exp(-0.5) 0.5 + 0.5 * 2 * 2, y_2 = 2 h_2 + 2
    wanted = torch.tensor([1.5, 6 + math.exp(-0.5)], dtype=torch.float64).reshape(1, 2, 1)
    for form in (layer.forward_sequential, layer.forward_parallel):
        torch.testing.assert_close(form(x), wanted, rtol=1e-12, atol=1e-12)


def test_weight_decay_pulls_the_recurrence_towards_its_initialisation():
    """The papers exempt lambda, A and D from weight decay; decaying their offsets leaves the initial values."""
    for layer, recurrence in ((LRULayer(F_IN, 8), lambda layer: layer.eigenvalues()[0]),
                              (S6Layer(F_IN, 8), lambda layer: (layer.A(), layer.D_init + layer.D_shift))):
        before = recurrence(layer)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=1.0)
        for _ in range(3):  # a zero loss: the decay alone moves the parameters
            optimizer.zero_grad()
            sum(p.sum() for p in layer.parameters()).mul(0).backward()
            optimizer.step()
        torch.testing.assert_close(recurrence(layer), before, rtol=0, atol=0)


@pytest.mark.parametrize("arch", IDS)
@pytest.mark.parametrize("task_name", ["mnist", "addition"])
def test_a_model_learns_a_tiny_batch(arch, task_name):
    torch.manual_seed(0)
    data = synthetic_mnist(n_train=200, n_test=40) if task_name == "mnist" else {}
    config = tiny_config(task_name, arch, num_layers=2, dropout=0.1)
    task = build_task(config, "cpu", **data)
    model = build_model(config, task)
    batch = next(task.train_batches(32, torch.Generator().manual_seed(0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        total, count = task.loss("ce", model(batch.x, batch.lengths), batch)
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
        losses.append((total / count).item())
    assert losses[-1] < 0.8 * losses[0], f"{losses[0]:.4f} -> {losses[-1]:.4f}"
