"""The explicit cell loop and the oneDNN-off path compute what nn.RNN / nn.LSTM / nn.GRU compute, same parameters."""

import pytest
import torch

from benchmark.catalog import BUILTIN_ARCHITECTURES
from benchmark.config import ConfigError, TrainConfig
from benchmark.models import READOUTS, Model

LENGTHS = torch.tensor([7, 3, 1, 5, 7, 2])  # right padding; unsorted, as packing allows


def _pair(arch, num_layers, readout, input_size=3, hidden=5, output=4, impl="loop"):
    torch.manual_seed(0)
    native = Model(arch, input_size, hidden, output, num_layers=num_layers, readout=readout, impl="native")
    loop = Model(arch, input_size, hidden, output, num_layers=num_layers, readout=readout, impl=impl)
    loop.load_state_dict(native.state_dict())  # same names and shapes: checkpoints move between impls
    return native, loop


def _outputs_and_grads(model, x, lengths, readout):
    x = x.clone().requires_grad_()
    out = model(x, lengths)
    if readout == "per_step" and lengths is not None:
        out = out * (torch.arange(x.size(1))[None, :] < lengths[:, None]).unsqueeze(-1)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)  # not symmetric: every output matters
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.detach(), grads, x.grad


@pytest.mark.parametrize("arch", list(BUILTIN_ARCHITECTURES))
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("impl", ["loop", "aten", "fused"])
def test_impl_matches_native_outputs_and_gradients(arch, num_layers, padded, readout, impl):
    # hidden 11: the fused kernels' 8-wide vector path and their scalar tail both run
    native, loop = _pair(arch, num_layers, readout, hidden=11, impl=impl)
    x = torch.randn(len(LENGTHS), int(LENGTHS.max()), 3)
    lengths = LENGTHS if padded else None
    out_native, grads_native, x_grad_native = _outputs_and_grads(native, x, lengths, readout)
    out_loop, grads_loop, x_grad_loop = _outputs_and_grads(loop, x, lengths, readout)
    torch.testing.assert_close(out_loop, out_native, rtol=1e-5, atol=1e-5)
    assert grads_loop.keys() == grads_native.keys()
    for name in grads_native:
        torch.testing.assert_close(grads_loop[name], grads_native[name], rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(x_grad_loop, x_grad_native, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["loop", "fused"])
@pytest.mark.parametrize("arch", ["lstm", "bigru"])
def test_padding_never_changes_real_steps(arch, impl):
    """A padded sequence gives the same result as the same sequence alone at its true length."""
    _, loop = _pair(arch, 2, "last", impl=impl)
    loop.eval()
    x = torch.randn(2, 6, 3)
    x[1, 4:] = 100.0  # garbage in the padding must not leak
    padded = loop(x, torch.tensor([6, 4]))
    alone = loop(x[1:, :4])
    torch.testing.assert_close(padded[1:], alone, rtol=1e-5, atol=1e-6)


def test_inter_layer_dropout_only_in_training():
    _, loop = _pair("gru", 2, "last")
    loop.cell.rnn.dropout = 0.5
    x = torch.randn(8, 5, 3)
    loop.train()
    assert not torch.allclose(loop(x), loop(x))  # a fresh dropout mask each call
    loop.eval()
    torch.testing.assert_close(loop(x), loop(x))


def test_aten_switches_onednn_off_for_its_call_only(monkeypatch):
    model = Model("lstm", 3, 5, 2, impl="aten")
    seen = []
    real = model.cell.rnn.forward
    monkeypatch.setattr(model.cell.rnn, "forward", lambda x: seen.append(torch.backends.mkldnn.enabled) or real(x))
    model(torch.randn(2, 4, 3)).sum().backward()
    assert seen == [False] and torch.backends.mkldnn.enabled
    monkeypatch.setattr(model.cell.rnn, "forward", lambda x: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        model(torch.randn(2, 4, 3))
    assert torch.backends.mkldnn.enabled  # restored on errors too


def test_unknown_impl_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown impl 'fast'; valid: auto, native, aten, loop, fused"):
        TrainConfig.for_task("mnist", "lstm", impl="fast")


def test_explicit_fused_is_refused_when_unavailable(monkeypatch):
    from benchmark import fused

    monkeypatch.setattr(fused, "_state", {"error": "the fused C++ cells could not be built (no compiler)"})
    with pytest.raises(ValueError, match=r"impl 'fused' is unavailable: .*no compiler.*; use --impl aten or loop"):
        Model("gru", 3, 5, 2, impl="fused")


def test_fused_runs_on_cpu_only():
    model = Model("gru", 3, 5, 2, impl="fused")
    with pytest.raises(ValueError, match="impl 'fused' runs on the CPU only, not cuda"):
        model.resolved_impl(torch.device("cuda"), training=True)


@pytest.mark.parametrize("arch", ["lstm", "gru", "bilstm", "bigru"])
def test_fused_matches_native_with_many_rows_per_thread(arch):
    """Batch 37 > the kernels' grain of 8 rows: the OpenMP split runs (with 2 threads), ragged lengths included."""
    from benchmark import fused

    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert fused.load().avx2  # the vector path is what the other tests exercise here
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        native, fused_model = _pair(arch, 2, "last", hidden=16, impl="fused")
        lengths = torch.randint(1, 10, (37,), generator=torch.Generator().manual_seed(1))
        lengths[0] = 9
        x = torch.randn(37, 9, 3)
        out_native, grads_native, x_grad_native = _outputs_and_grads(native, x, lengths, "last")
        out_fused, grads_fused, x_grad_fused = _outputs_and_grads(fused_model, x, lengths, "last")
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out_fused, out_native, rtol=1e-5, atol=1e-5)
    for name in grads_native:
        torch.testing.assert_close(grads_fused[name], grads_native[name], rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(x_grad_fused, x_grad_native, rtol=1e-4, atol=1e-5)


def test_fused_takes_float32_only_and_auto_falls_back():
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    auto = Model("gru", 3, 8, 2, impl="auto").double()
    auto.cell.auto_choice = "fused"  # as if measured on a float32 twin
    assert auto.resolved_impl(torch.device("cpu"), training=True) == "fused"
    auto(x).sum().backward()  # runs aten, in float64
    assert auto.cell.rnn.weight_hh_l0.grad.dtype == torch.float64
    explicit = Model("gru", 3, 5, 2, impl="fused").double()
    with pytest.raises(ValueError, match="impl 'fused' takes float32 CPU tensors, not torch.float64"):
        explicit(x)


def test_fused_without_a_compiler_says_so(monkeypatch, tmp_path):
    from benchmark import fused

    monkeypatch.setattr(fused, "_state", {})
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path))  # no cached build to fall back on
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(RuntimeError, match=r"need a C\+\+ compiler and there is none \('/nonexistent/c\+\+' not on"):
        fused.load()
    assert not fused.available() and "not on PATH" in fused.unavailable_reason()


def test_the_build_key_follows_source_flags_and_torch_but_not_the_checkout(monkeypatch):
    from benchmark import fused

    key = fused.build_key(b"source", ["-O3"])
    assert fused.build_key(b"source", ["-O3"]) == key  # nothing of the path or the process goes in
    assert fused.build_key(b"source!", ["-O3"]) != key
    assert fused.build_key(b"source", ["-O2"]) != key
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert fused.build_key(b"source", ["-O3"]) != key


def test_another_ninja_loads_the_one_cached_build_without_running(tmp_path):
    """Two environments with different ninja versions share one build: the second never runs ninja."""
    import os
    import subprocess
    import sys

    from benchmark import fused

    fused.load()  # built (or found) under this session's cache
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "ninja-calls"
    (fake_bin / "ninja").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho 1.11.1\n")
    (fake_bin / "ninja").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}",
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}
    probe = "from benchmark import fused; fused.load(); print(fused.cached_library())"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(fused.cached_library())
    assert "building" not in done.stderr and not calls.exists()
