"""``--impl auto``: the kernel is measured per machine and shape, cached, and never disturbs training."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from conftest import tiny_config, tracked_train

from benchmark import fused, kernel_choice
from benchmark.kernel_choice import prepare_kernels
from benchmark.models import Model
from benchmark.schema import Tag
from benchmark.tasks.base import Batch

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh picks file and an empty in-process memo."""
    path = tmp_path / "auto_impl.json"
    monkeypatch.setenv("RNNBENCH_KERNEL_CACHE", str(path))
    monkeypatch.setattr(kernel_choice, "_picked", {})
    return path


def _batch(batch=6, steps=5, features=3, padded=False):
    lengths = None
    if padded:
        lengths = torch.randint(1, steps + 1, (batch,), generator=torch.Generator().manual_seed(0))
        lengths[0] = steps
    return Batch(torch.randn(batch, steps, features), torch.zeros(batch, dtype=torch.int64), lengths)


def _fake_timer(seconds: dict[str, float], calls: list[str]):
    def timer(model, batch):
        calls.append(model.impl)
        return seconds[model.impl]
    return timer


@pytest.mark.parametrize(("seconds", "expected"), [
    ({"native": 1.0, "aten": 0.97, "fused": 0.5}, "fused"),
    ({"native": 1.0, "aten": 0.8, "fused": 0.9}, "aten"),
    ({"native": 1.0, "fused": 0.96}, "native"),  # 4 % faster: inside the margin, native stays
    ({"native": 1.0, "fused": 0.94}, "fused"),
    ({"native": 0.7, "aten": 1.0, "fused": 0.8}, "native"),
])
def test_pick_takes_the_fastest_unless_native_is_within_the_margin(seconds, expected):
    assert kernel_choice.pick(seconds) == expected


def test_choose_measures_each_candidate_once_per_shape_then_reads_the_cache(cache):
    model = Model("gru", 3, 8, 2)
    calls: list[str] = []
    timer = _fake_timer({"native": 3.0, "aten": 1.0, "fused": 2.0}, calls)
    assert kernel_choice.choose(model, _batch(), timer=timer) == "aten"
    expected = kernel_choice.candidates("gru")
    assert sorted(set(calls)) == sorted(expected)
    assert len(calls) == len(expected) * (1 + kernel_choice.ROUNDS)  # a warm-up, then the timed rounds
    stored = json.loads(cache.read_text())
    (entry,) = stored.values()
    assert entry["impl"] == "aten" and entry["ms_per_step"]["aten"] == 1000.0

    def no_timing(model, batch):
        raise AssertionError("a cached shape was timed again")

    assert kernel_choice.choose(Model("gru", 3, 8, 2), _batch(), timer=no_timing) == "aten"
    calls.clear()
    assert kernel_choice.choose(model, _batch(batch=7), timer=timer) == "aten"  # another batch size: measured
    assert calls and len(json.loads(cache.read_text())) == 2


def test_a_malformed_entry_is_measured_again(cache):
    model = Model("rnn", 3, 8, 2)
    cache.write_text(json.dumps({kernel_choice.shape_key(model, _batch()): "aten"}))  # not a dict
    calls: list[str] = []
    assert kernel_choice.choose(model, _batch(), timer=_fake_timer({"native": 1.0, "aten": 2.0}, calls)) == "native"
    assert calls


def test_an_unwritable_cache_still_gives_one_pick_per_shape_in_a_process(cache, monkeypatch):
    def refuse(path, payload):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(kernel_choice, "write_atomic", refuse)
    calls: list[str] = []
    timer = _fake_timer({"native": 2.0, "aten": 1.0}, calls)
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=timer) == "aten"
    assert not cache.exists()
    calls.clear()
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=timer) == "aten" and not calls


def test_a_corrupt_cache_is_measured_again_and_rewritten(cache):
    cache.write_text("{not json")
    calls: list[str] = []
    choice = kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(),
                                  timer=_fake_timer({"native": 2.0, "aten": 1.0}, calls))
    assert choice == "aten" and calls
    assert [entry["impl"] for entry in json.loads(cache.read_text()).values()] == ["aten"]


def test_the_shape_key_separates_what_changes_the_winner(monkeypatch):
    model = Model("lstm", 3, 8, 2)
    key = kernel_choice.shape_key(model, _batch())
    assert kernel_choice.shape_key(Model("lstm", 3, 8, 2), _batch()) == key
    others = [kernel_choice.shape_key(Model("gru", 3, 8, 2), _batch()),
              kernel_choice.shape_key(Model("bilstm", 3, 8, 2), _batch()),
              kernel_choice.shape_key(Model("lstm", 3, 16, 2), _batch()),
              kernel_choice.shape_key(Model("lstm", 3, 8, 2, num_layers=2), _batch()),
              kernel_choice.shape_key(model, _batch(steps=9)),
              kernel_choice.shape_key(model, _batch(padded=True)),
              kernel_choice.shape_key(Model("lstm", 3, 8, 2).double(), _batch())]
    assert len({key, *others}) == 1 + len(others)
    fields = json.loads(key)
    assert torch.backends.cpu.get_cpu_capability() in fields["processor"]

    def key_with(build: str | None) -> dict:  # a rebuilt fused kernel (new source, flags, torch) re-measures
        monkeypatch.setattr(fused, "available", lambda: build is not None)
        monkeypatch.setattr(fused, "build_key", lambda *args, **kwargs: build or "no build")
        return json.loads(kernel_choice.shape_key(model, _batch()))

    first, rebuilt, none = key_with("build-1"), key_with("build-2"), key_with(None)
    assert (first["fused_build"], rebuilt["fused_build"], none["fused_build"]) == ("build-1", "build-2", None)
    assert first != rebuilt and key_with("build-1") == first


def test_measuring_leaves_the_model_its_gradients_and_the_random_streams_alone(cache):
    torch.manual_seed(0)
    model = Model("lstm", 3, 8, 2, num_layers=2, dropout=0.5)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    batch = _batch(padded=True)
    torch.manual_seed(123)
    expected_next_draw = torch.rand(3)
    torch.manual_seed(123)
    choice = prepare_kernels(model, CPU, lambda: batch)
    assert torch.equal(torch.rand(3), expected_next_draw)
    assert choice == model.cell.auto_choice and choice in kernel_choice.candidates("lstm")
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_auto_runs_the_measured_kernel_only_when_training_on_the_cpu():
    model = Model("lstm", 3, 8, 2)
    assert model.resolved_impl(CPU, training=True) == "native"  # never prepared: PyTorch's own kernel
    model.cell.auto_choice = "aten"
    assert model.resolved_impl(CPU, training=True) == "aten"
    assert model.resolved_impl(CPU, training=False) == "native"  # inference
    assert model.resolved_impl(torch.device("cuda"), training=True) == "native"
    explicit = Model("lstm", 3, 4, 2, impl="loop")

    def no_batch():
        raise AssertionError("a batch was drawn for a model that measures nothing")

    assert prepare_kernels(explicit, CPU, no_batch) == "loop" and explicit.cell.auto_choice is None
    assert prepare_kernels(Model("lstm", 3, 4, 2), torch.device("cuda"), no_batch) == "native"


def test_without_the_fused_cells_auto_chooses_among_the_others(cache, monkeypatch):
    monkeypatch.setattr(fused, "_state", {"error": "the fused C++ cells could not be built (no compiler)"})
    assert kernel_choice.candidates("lstm") == ["native", "aten"]
    calls: list[str] = []
    timer = _fake_timer({"native": 2.0, "aten": 1.5, "fused": 0.1}, calls)
    assert kernel_choice.choose(Model("lstm", 3, 8, 2), _batch(), timer=timer) == "aten"
    assert "fused" not in calls


def test_a_kernel_that_cannot_run_the_model_is_left_out(cache):
    if not fused.available():
        pytest.skip(f"fused cells unavailable: {fused.unavailable_reason()}")
    model = Model("gru", 3, 8, 2).double()  # fused takes float32 only: it raises, and is dropped
    batch = Batch(torch.randn(4, 5, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.int64))
    seconds = kernel_choice.measure(model, batch, ["native", "aten", "fused"])
    assert set(seconds) == {"native", "aten"} and all(0 < s < 60 for s in seconds.values())


def test_a_tracked_run_records_the_kernel_it_trained_with(tracking_uri, mnist_data):
    config = tiny_config("mnist", "gru", epochs=1)
    run = mlflow.MlflowClient(tracking_uri).get_run(tracked_train(config, tracking_uri, **mnist_data))
    assert run.data.params["impl"] == "auto"
    assert run.data.tags[Tag.KERNEL] in kernel_choice.candidates("gru")
