"""``--impl auto``: the kernel is measured per machine and shape, cached, and never disturbs training."""

from __future__ import annotations

import json
import os

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
    """A fresh picks file, an empty in-process memo and a quiet machine."""
    path = tmp_path / "auto_impl.json"
    monkeypatch.setenv("RNNBENCH_KERNEL_CACHE", str(path))
    monkeypatch.setattr(kernel_choice, "_picked", {})
    monkeypatch.setattr(kernel_choice, "load_average", lambda: 0.0)
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


@pytest.mark.parametrize(("load", "threads", "cpus", "expected"), [
    (1.6, 1, 2, True), (1.4, 1, 2, False),  # one core is ours; more than the other one (and a half) is busy
    (0.6, 2, 2, True), (0.4, 2, 2, False),  # every core is ours: little else may run
    (3.0, 4, 16, False), (12.6, 4, 16, True),
])
def test_a_machine_is_busy_when_other_work_holds_the_cores_our_threads_need(load, threads, cpus, expected):
    assert kernel_choice.busy(load, threads, cpus) is expected


def test_a_pick_measured_on_a_busy_machine_is_measured_again_when_it_is_quiet(cache, monkeypatch):
    load = {"now": 100.0}
    monkeypatch.setattr(kernel_choice, "load_average", lambda: load["now"])
    calls: list[str] = []
    busy_timer = _fake_timer({"native": 2.0, "aten": 1.0}, calls)
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=busy_timer) == "aten"
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["provisional"] and entry["load_average"] == 100.0

    def no_timing(model, batch):
        raise AssertionError("timed again")

    load["now"] = 0.0  # quiet, but this process keeps the kernel it picked: one kernel per shape in a process
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=no_timing) == "aten"
    kernel_choice._picked.clear()  # a later process
    load["now"] = 100.0  # still busy: measuring now would not be better, the provisional pick is used
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=no_timing) == "aten"
    kernel_choice._picked.clear()
    load["now"] = 0.0  # quiet: measured again, and the quiet pick replaces the provisional one
    calls.clear()
    quiet_timer = _fake_timer({"native": 1.0, "aten": 2.0}, calls)
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=quiet_timer) == "native"
    (entry,) = json.loads(cache.read_text()).values()
    assert calls and entry["impl"] == "native" and not entry["provisional"]
    kernel_choice._picked.clear()
    load["now"] = 100.0  # a quiet pick stands whatever the load later
    assert kernel_choice.choose(Model("rnn", 3, 8, 2), _batch(), timer=no_timing) == "native"


# Each process times with its own fake timings (aten fastest in one, native in the other): picks made apart differ.
SHARED_PICK = """
import json, sys, time
from pathlib import Path
import torch
from benchmark import kernel_choice
from benchmark.models import Model
from benchmark.tasks.base import Batch

torch.manual_seed(0)
folder, me = Path(sys.argv[1]), sys.argv[2]
seconds = {"native": 2.0, "aten": 1.0} if me == "a" else {"native": 1.0, "aten": 2.0}
calls = []
kernel_choice.load_average = lambda: 0.0

def timer(model, batch):
    calls.append(model.impl)
    time.sleep(0.2)
    return seconds[model.impl]

(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
batch = Batch(torch.randn(6, 5, 3), torch.zeros(6, dtype=torch.int64), None)
choice = kernel_choice.choose(Model("rnn", 3, 8, 2), batch, timer=timer)
print(json.dumps({"choice": choice, "measured": bool(calls)}))
"""


def test_two_processes_share_one_pick_and_only_one_measures(cache, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    workers = [subprocess.Popen([sys.executable, "-c", SHARED_PICK, str(tmp_path), me], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for me in "ab"]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{me}").exists() for me in "ab"):  # both started: they ask at once
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), workers[0].communicate()
        time.sleep(0.05)
    (tmp_path / "go").touch()
    answers = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        answers.append(json.loads(out))
    assert sorted(answer["measured"] for answer in answers) == [False, True]
    assert answers[0]["choice"] == answers[1]["choice"]
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["impl"] == answers[0]["choice"]


def test_time_to_target_gives_each_rnnbench_run_picks_of_its_own(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_target.py"
    spec = importlib.util.spec_from_file_location("time_to_target", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, "time_to_target", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    seen = []

    class Started(Exception):
        pass

    def fake_popen(command, **options):
        seen.append(options["env"]["RNNBENCH_KERNEL_CACHE"])
        raise Started

    monkeypatch.setattr(module.subprocess, "Popen", fake_popen)
    studies = Path(__file__).resolve().parent.parent / "studies"
    for _ in range(2):  # two runs of the script, a study name each
        with pytest.raises(Started):
            module.run_rnnbench("addition", "gru", "quick", 0, 60, tmp_path / "addition-gru" / "rnnbench",
                                study_dir=studies)
    assert len(set(seen)) == 2 and os.environ["RNNBENCH_KERNEL_CACHE"] not in seen
    assert all(Path(path).is_relative_to(tmp_path / "addition-gru" / "rnnbench") for path in seen)


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
