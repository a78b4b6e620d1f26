"""What ``--impl auto`` trains with on the CPU: the fastest kernel for this model and batch shape, measured.

Example: rnnbench train --task mnist --arch lstm   # times native, aten and fused on one batch, then trains

Which kernel is fastest depends on the processor and the shape: oneDNN's LSTM training path is a slow reference
kernel on AVX2 processors and fast with AVX-512, and a cell loop's per-step overhead dominates at small sizes.
No fixed table is right on every machine, so, like cuDNN's benchmark mode, ``auto`` times each candidate before
training starts: forward and backward of a copy of the model on a real batch, one warm-up and then interleaved
rounds, best time per candidate. The pick is kept in ``$RNNBENCH_CACHE/auto_impl.json`` (default
``~/.cache/rnnbench``; ``$RNNBENCH_KERNEL_CACHE`` names another file) under the processor, torch's version, the
fused cells' build, the thread count, the architecture, the dtype and the shape, so every later run of that shape
on this machine trains with the same kernel without timing again; delete the file to measure afresh. Processes
share the file: one measures a shape under a lock beside it while the others wait and then read its pick, so
parallel workers train a shape with one kernel. A pick measured on a busy machine (``busy``) is provisional: it
is used while the machine stays busy and measured again, and replaced, once it is quiet. A candidate
must beat ``native`` by ``MARGIN`` to replace it: a close call keeps the library's own kernel, and the choice
does not flip between runs on measurement noise. Measuring never touches the model, its gradients or the
random number streams that training draws from.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch

from . import fused
from .files import cache_root, write_atomic
from .registry import cell_spec

MARGIN = 0.05  # below this, timing noise could flip the pick between runs: a close call stays on native
ROUNDS = 5  # timed rounds after the warm-up; the best of them counts (3 flipped a 6 % call between runs)
MAX_SECONDS = 20.0  # stop timing after this long (at least one timed round each), for very large shapes

_picked: dict[str, str] = {}  # this process's picks: one kernel per shape even where the file cannot be written


def cache_path() -> Path:
    return Path(os.environ.get("RNNBENCH_KERNEL_CACHE") or cache_root() / "auto_impl.json")


@functools.cache
def processor() -> str:
    """The processor's model name and the vector ISA torch dispatches to: what decides which kernel wins."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
                break
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def busy(load: float, threads: int, cpus: int | None = None) -> bool:
    """Whether timings taken now are suspect: other work holds cores our ``threads`` need. The load counts runnable
    threads, so a machine is busy when it exceeds the cores left over after ours, plus half a core of slack for
    background noise and the load this process has just added."""
    cpus = cpus or os.cpu_count() or 1
    return load > max(cpus - threads, 0) + 0.5


def candidates(cell: str) -> list[str]:
    """The kernels worth timing for a cell: ``loop`` is never faster than ``fused``, so it is left out."""
    found = ["native", "aten"]
    if cell in ("lstm", "gru") and fused.available():
        found.append("fused")
    return found


def shape_key(model, batch) -> str:
    """What the pick depends on, as one string: machine, torch, threads, architecture and batch shape."""
    rnn = model.cell.rnn
    return json.dumps({
        "processor": processor(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "fused_build": fused.build_key() if fused.available() else None, "dtype": str(rnn.weight_hh_l0.dtype),
        "cell": model.cell.kind, "bidirectional": model.bidirectional, "layers": rnn.num_layers,
        "input": rnn.input_size, "hidden": rnn.hidden_size, "readout": model.readout,
        "batch": int(batch.x.size(0)), "steps": int(batch.x.size(1)), "padded": batch.lengths is not None,
    }, sort_keys=True)


def time_step(model, batch) -> float:
    """Seconds for one forward and backward of ``model`` on ``batch``."""
    started = time.perf_counter()
    model(batch.x, batch.lengths).float().sum().backward()
    return time.perf_counter() - started


def measure(model, batch, impls: list[str], timer=time_step) -> dict[str, float]:
    """Best seconds per step of each impl on a copy of ``model``; impls that fail to run are left out."""
    best: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):  # dropout inside the copy must not move training's random streams
        trial = copy.deepcopy(model).train()

        def seconds(impl: str) -> float:
            trial.impl = impl
            try:
                return timer(trial, batch)
            finally:
                for parameter in trial.parameters():  # each call starts from no gradients, as a train step does
                    parameter.grad = None

        for impl in impls:  # warm-up: first-call allocations, and drops an impl that cannot run this model
            try:
                seconds(impl)
                best[impl] = float("inf")
            except (RuntimeError, ValueError):
                continue
        started = time.perf_counter()
        for round_ in range(ROUNDS):
            order = list(best) if round_ % 2 == 0 else list(reversed(best))  # neither side always goes first
            for impl in order:
                best[impl] = min(best[impl], seconds(impl))
            if time.perf_counter() - started > MAX_SECONDS:
                break
    return best


def pick(seconds: dict[str, float]) -> str:
    """The fastest impl, unless it beats native by less than MARGIN (then native)."""
    fastest = min(seconds, key=seconds.get)
    if "native" in seconds and seconds[fastest] > (1 - MARGIN) * seconds["native"]:
        return "native"
    return fastest


def choose(model, batch, *, timer=time_step) -> str:
    """The impl ``auto`` trains ``model`` with on the CPU for batches shaped like ``batch``: cached, else measured."""
    key = shape_key(model, batch)
    if key in _picked:
        return _picked[key]
    path, valid = cache_path(), candidates(model.cell.kind)
    seen = _entry(_read(path), key, valid)
    if seen is not None and not _stale(seen):
        _picked[key] = seen["impl"]
        return seen["impl"]
    with _locked(path):
        store = _read(path)  # another process may have measured while this one waited: its entries are kept
        entry = _entry(store, key, valid)
        if entry is not None and (entry != seen or not _stale(entry)):
            _picked[key] = entry["impl"]
            return entry["impl"]
        load = load_average()
        seconds = measure(model, batch, valid, timer=timer)
        choice = pick(seconds) if seconds else "native"
        _picked[key] = choice
        store[key] = {"impl": choice, "ms_per_step": {k: round(1000 * v, 3) for k, v in seconds.items()},
                      "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": round(load, 2),
                      "provisional": busy(load, torch.get_num_threads())}
        with contextlib.suppress(OSError):  # a read-only home still trains; it just measures again next time
            write_atomic(path, json.dumps(store, indent=1, sort_keys=True))
    return choice


def _entry(store: dict, key: str, valid: list[str]) -> dict | None:
    entry = store.get(key)
    return entry if isinstance(entry, dict) and entry.get("impl") in valid else None


def _stale(entry: dict) -> bool:
    """A provisional pick is measured again once the machine is quiet; while it is busy, measuring would not do
    better."""
    return bool(entry.get("provisional")) and not busy(load_average(), torch.get_num_threads())


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock beside the picks file, so that one process measures a shape while the others wait; none
    where the folder cannot be written (each process then measures for itself)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115  (held until the pick is written)
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_kernels(model, device: torch.device, sample_batch=None) -> str | None:
    """Before the first epoch's clock starts: for ``--impl auto`` on the CPU, measure which kernel trains batches
    like ``sample_batch()`` fastest (``choose``; cached per machine and shape), building the fused C++ cells
    if they are a candidate (an explicit ``--impl fused`` built them in the constructor). ``sample_batch`` is a
    function, called only when auto measures, and inside ``fork_rng``: a task that batches from the global random
    stream trains as if it had never been called. Returns the impl training will run (None for a cell with no
    choice of kernel, which runs its own forward)."""
    if not cell_spec(model.arch).impls:
        return None
    if model.impl == "auto" and device.type == "cpu" and sample_batch is not None:
        with torch.random.fork_rng(devices=[]):
            batch = sample_batch()
        model.cell.auto_choice = choose(model, batch)
    return model.resolved_impl(device, training=True)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
