"""The performance harness: rnnbench against the course notebook, measured side by side in one process.

Example: rnnbench perf --threads 2 --out reports/performance.md

Sections (each printed as markdown as soon as it is measured, then written to
``--out`` atomically): environment and load; the processor's theoretical FP32
peak and a measured sgemm; the training step per architecture and recurrent
implementation (native nn module, the same with oneDNN off, explicit loop, the loop with fused C++ steps) with
achieved GFLOP/s; MNIST training throughput of rnnbench's ``fit`` against a
faithful copy of the notebook's loop; binary addition likewise, plus the wall
time of the notebook's addition experiment run through ``fit``; the batching
path alone; peak resident memory of one tracked trial (a subprocess); and
evaluation speed. ``--quick`` is a smoke run (synthetic MNIST when none is on
disk, a few iterations) that still prints every row; its numbers mean little.

Rates are the best of ``repeats`` interleaved rounds, so a burst of load from
another process hurts both sides of a ratio alike rather than one of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import fused
from .config import TrainConfig
from .files import write_atomic
from .models import ARCHITECTURES, CELLS, RecurrentModel, build_model
from .tasks import build_task
from .train import fit, make_optimizer, seed_everything, train_step

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
PERF_VAL_IMAGES = 2000  # validation cut for fit's timing runs: epoch times exclude evaluation anyway
ADDITION_EVAL_LENGTHS = tuple(range(25, 1001, 25))  # accuracy vs length: 1..20, then every 25 up to 1000


@dataclass(frozen=True)
class Sizes:
    hidden: int
    batch: int
    batches: int  # batches per timed MNIST epoch / step run
    repeats: int  # interleaved rounds; the best round counts
    notebook_strings: int  # addition strings timed in the notebook's per-string loop
    sgemm_size: int
    eval_lengths: tuple[int, ...]  # addition generalisation lengths for the accuracy-vs-length timing
    addition_train_size: int
    addition_epochs: int
    trial_train_size: int  # 0 = all 50k


FULL = Sizes(hidden=128, batch=500, batches=10, repeats=2, notebook_strings=250, sgemm_size=2048,
             eval_lengths=ADDITION_EVAL_LENGTHS, addition_train_size=10_000, addition_epochs=10,
             trial_train_size=10_000)
QUICK = Sizes(hidden=128, batch=500, batches=2, repeats=1, notebook_strings=20, sgemm_size=256,
              eval_lengths=(1000,), addition_train_size=400, addition_epochs=2, trial_train_size=1000)


# ---------------------------------------------------------------- processor
def cpu_info() -> dict:
    """Processor name, flags and clock from /proc/cpuinfo (Linux); empty values elsewhere."""
    info = {"name": platform.processor() or platform.machine(), "flags": set(), "mhz": 0.0, "family": ""}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                info["name"] = value
            elif key == "flags":
                info["flags"] = set(value.split())
            elif key == "cpu MHz":
                info["mhz"] = max(info["mhz"], float(value))
            elif key == "cpu family" and not info["family"]:
                info["family"] = value
    return info


def theoretical_peak(info: dict, cores: int) -> tuple[float, str]:
    """FP32 GFLOP/s = cores x FMA units x vector lanes x 2 (multiply + add) x GHz, and how it was derived."""
    flags = info["flags"]
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    # Two FMA pipes per core on every AVX2+FMA x86 core since Haswell / Zen 2 (Zen 1 split 256-bit ops:
    # a slight overestimate there); without FMA, one add and one multiply pipe give the same 2 x lanes.
    units = 2
    ghz = info["mhz"] / 1000
    peak = cores * units * lanes * 2 * ghz
    isa = "AVX-512" if lanes == 16 else "AVX2+FMA" if "fma" in flags else "AVX" if lanes == 8 else "SSE"
    how = (f"{cores} cores x {units} FMA units x {lanes} FP32 lanes ({isa}, from /proc/cpuinfo flags) x 2 "
           f"x {ghz:.3f} GHz (cpu MHz) = {peak:.1f} GFLOP/s")
    return peak, how


def measure_sgemm(size: int, seconds: float) -> float:
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


def train_flops_per_sample(cell: str, directions: int, num_layers: int, input_size: int, hidden: int,
                           steps: int) -> float:
    """Matmul FLOPs of one training sample: forward 2*G*H*(F+H) per step, layer and direction; x3 for backward."""
    gates = GATES[cell] * hidden
    total, features = 0, input_size
    for _ in range(num_layers):
        total += directions * steps * 2 * gates * (features + hidden)
        features = hidden * directions
    return 3 * total


# ---------------------------------------------------------------- the notebook, copied faithfully
class NotebookModel(nn.Module):
    """The notebook's models: seq-first nn.RNN/LSTM/GRU, X.permute(1, 0, 2), zero states built per call,
    readout h_n (RNN, BiRNN, BiLSTM) or out[-1] (LSTM, GRU). BiGRU is not in the notebook: BiLSTM's style."""

    def __init__(self, arch: str, hidden: int):
        super().__init__()
        spec = ARCHITECTURES[arch]
        self.cell, self.bidirectional, self.hidden = spec["cell"], spec["bidirectional"], hidden
        self.directions = 2 if self.bidirectional else 1
        self.rnn = CELLS[self.cell](28, hidden, 1, bidirectional=self.bidirectional)
        self.layer2 = nn.Linear(hidden * self.directions, 10)

    def forward(self, X):
        X = X.permute(1, 0, 2)
        state = torch.zeros(self.directions, X.size(1), self.hidden)
        if self.cell == "lstm":
            state = (state, torch.zeros(self.directions, X.size(1), self.hidden))
        out, state = self.rnn(X, state)
        if self.bidirectional:
            hidden = state[0] if self.cell == "lstm" else state
            return self.layer2(torch.cat((hidden[0], hidden[1]), dim=-1))
        if self.cell == "rnn":
            return self.layer2(state).reshape(X.size(1), 10)
        return self.layer2(out[-1]).reshape(X.size(1), 10)


def notebook_mnist_dataset(images: torch.Tensor, labels: torch.Tensor):
    """torchvision's MNIST dataset with ToTensor over these tensors (its own __getitem__: PIL image, ToTensor)."""
    from torchvision import transforms
    from torchvision.datasets import MNIST

    dataset = MNIST.__new__(MNIST)
    dataset.data, dataset.targets = images, labels
    dataset.transform, dataset.target_transform = transforms.ToTensor(), None
    return dataset


def notebook_mnist_rate(arch: str, loader, hidden: int, batches: int) -> float:
    """Images/s of the notebook's training loop over a DataLoader(batch_size=500), one warm-up batch untimed."""
    model = NotebookModel(arch, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    train_loss = []
    model.train()
    seen, started = 0, None
    for i, (images, labels) in enumerate(loader):
        if i == 1:
            seen, started = 0, time.perf_counter()
        images = images.reshape(-1, 28, 28)
        outputs = model(images)
        loss = criterion(outputs, labels)
        train_loss.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(labels)
        if i == batches:
            break
    return seen / (time.perf_counter() - started)


def bin_generator(L):
    """The notebook's string generator (operands below 2^(L-1), LSB first), verbatim."""
    N1 = np.random.randint(0, 2**(L - 1))
    N2 = np.random.randint(0, 2**(L - 1))
    S = N1 + N2
    binlen = L
    B1 = np.zeros((1, binlen))
    B2 = np.zeros((1, binlen))
    B3 = np.zeros((binlen))  # noqa: UP034 (verbatim)
    b = np.flip(np.array(list(np.binary_repr(N1)), dtype=int))
    B1[0][0:len(b)] = b[0:]
    b = np.flip(np.array(list(np.binary_repr(N2)), dtype=int))
    B2[0][0:len(b)] = b[0:]
    b = np.flip(np.array(list(np.binary_repr(S)), dtype=int))
    B3[0:len(b)] = b[0:]
    return np.concatenate((np.transpose(B1), np.transpose(B2)), axis=1), B3


class NotebookAdditionLSTM(nn.Module):
    def __init__(self, hidsize):
        super().__init__()
        self.hidsize = hidsize
        self.lstm = nn.LSTM(2, hidsize)
        self.layer2 = nn.Sequential(nn.Linear(hidsize, 1), nn.Sigmoid())

    def forward(self, X):
        X = X.permute(1, 0, 2)
        hiddenstate = torch.zeros(1, X.size(1), self.hidsize)
        cellstate = torch.zeros(1, X.size(1), self.hidsize)
        out, (hs, cs) = self.lstm(X, (hiddenstate, cellstate))
        out = self.layer2(out)
        return out.reshape(X.size(0))


def notebook_addition_rate(strings: int) -> float:
    """Strings/s of the notebook's one-string-at-a-time training loop (LSTM hidden 10, Adam 0.01, MSE)."""
    np.random.seed(0)
    train_X, train_Y = [], []
    for _ in range(strings):
        a, b = bin_generator(np.random.randint(1, 21))
        train_X.append(a)
        train_Y.append(b)
    model = NotebookAdditionLSTM(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.MSELoss()
    train_loss = []
    started = time.perf_counter()
    for i in range(int(len(train_X))):
        a = torch.zeros((1, train_X[i].shape[0], train_X[i].shape[1]))
        a[0] = torch.from_numpy(train_X[i])
        output = model(a.float())
        label = torch.tensor(np.transpose(train_Y[i]))
        loss = criterion(output, label.float())
        train_loss.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return strings / (time.perf_counter() - started)


# ---------------------------------------------------------------- rnnbench's side
def synthetic_mnist(n_train: int = 6000, n_test: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """uint8 digit-shaped noise for smoke runs without MNIST on disk (timings only; nothing to learn)."""
    generator = torch.Generator().manual_seed(seed)
    return {"train_images": torch.randint(0, 256, (n_train, 28, 28), generator=generator, dtype=torch.uint8),
            "train_labels": torch.randint(0, 10, (n_train,), generator=generator),
            "test_images": torch.randint(0, 256, (n_test, 28, 28), generator=generator, dtype=torch.uint8),
            "test_labels": torch.randint(0, 10, (n_test,), generator=generator)}


def step_rate(config: TrainConfig, task, batches: int) -> float:
    """Samples/s of fit's train_step alone on one fixed batch (2 warm-up steps untimed)."""
    seed_everything(config.seed)
    model = build_model(config, task)
    optimizer = make_optimizer(config, model)
    batch = next(task.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
    for _ in range(2):
        train_step(model, task, config, optimizer, batch)
    started = time.perf_counter()
    for _ in range(batches):
        loss = train_step(model, task, config, optimizer, batch)
    loss.item()  # wait for the device before stopping the clock
    return batches * len(batch.y) / (time.perf_counter() - started)


def fit_rate(config: TrainConfig, task) -> tuple[float, object]:
    """Samples/s of fit's training epochs (evaluation excluded: fit times epochs without it); best epoch."""
    result = fit(config, task, quiet=True)
    return task.train_size / min(result.epoch_seconds[1:] or result.epoch_seconds), result


def batching_rate(task, batch_size: int) -> float:
    """Images/s of MnistTask.train_batches alone over its whole training split (batch tensors materialised)."""
    generator = torch.Generator().manual_seed(0)
    for _ in task.train_batches(batch_size, generator):  # warm-up epoch
        pass
    started = time.perf_counter()
    seen = 0
    for batch in task.train_batches(batch_size, generator):
        seen += batch.x.size(0)
    batch.x.sum().item()
    return seen / (time.perf_counter() - started)


def eval_seconds(task, model, split: str, repeats: int = 2) -> tuple[float, dict]:
    """Best wall time of task.evaluate over ``repeats`` runs, and its metrics."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        metrics = task.evaluate(model, split, "ce")
        best = min(best, time.perf_counter() - started)
    return best, metrics


TRIAL_SCRIPT = """
import json, resource, sys
from benchmark.config import TrainConfig
from benchmark.perf import synthetic_mnist
from benchmark.tracking import tracked_run
from benchmark.train import fit
args = json.loads(sys.argv[1])
config = TrainConfig.for_task("mnist", args["arch"], epochs=1, hidden_size=args["hidden"], batch_size=args["batch"],
                              train_size=args["train_size"], threads=args["threads"])
data = synthetic_mnist() if args["synthetic"] else None
with tracked_run(config, tracking_uri=args["uri"]) as tracker:
    fit(config, tracker=tracker, quiet=True, task_data=data)
print(json.dumps({"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def trial_peak_rss(arch: str, sizes: Sizes, threads: int, synthetic: bool) -> float:
    """Peak resident MB of one tracked MNIST trial (1 epoch, MLflow SQLite store) in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        args = {"arch": arch, "hidden": sizes.hidden, "batch": sizes.batch, "train_size": sizes.trial_train_size,
                "threads": threads, "synthetic": synthetic, "uri": f"sqlite:///{tmp}/mlflow.db"}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                            os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", TRIAL_SCRIPT, json.dumps(args)], capture_output=True,
                              text=True, cwd=tmp, env=env, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"trial subprocess failed: {done.stderr.strip().splitlines()[-1:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["max_rss_mb"]


# ---------------------------------------------------------------- the report
class Report:
    """Markdown lines, echoed as they are added unless quiet."""

    def __init__(self, quiet: bool):
        self.lines: list[str] = []
        self.quiet = quiet

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            if not self.quiet:
                print(line, flush=True)

    def table(self, header: list[str], rows: list[list]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + " --- |" * len(header))
        for row in rows:
            self.add("| " + " | ".join(str(cell) for cell in row) + " |")
        self.add("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _span(lengths: tuple[int, ...]) -> str:
    if len(lengths) > 3:
        return f"{lengths[0]}, {lengths[1]}, ..., {lengths[-1]}"
    return ", ".join(map(str, lengths))


def _k(rate: float) -> str:
    return f"{rate:,.0f}"


def run(*, quick: bool = False, threads: int = 2, out: str | Path | None = "reports/performance.md",
        data_dir: str | None = None, hidden: int | None = None, batch: int | None = None,
        batches: int | None = None, repeats: int | None = None,
        archs: tuple[str, ...] = tuple(ARCHITECTURES), quiet: bool = False) -> str:
    """Measure everything, print it as markdown (unless quiet), write ``out``; returns the markdown."""
    sizes = QUICK if quick else FULL
    overrides = {"hidden": hidden, "batch": batch, "batches": batches, "repeats": repeats}
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v}})
    torch.set_num_threads(threads)
    report = Report(quiet)
    info = cpu_info()
    load_before = os.getloadavg()
    times_before = os.times()
    data, synthetic = _mnist_data(data_dir, quick)

    report.add("# rnnbench performance", "",
               f"`rnnbench perf{' --quick' if quick else ''} --threads {threads}`: torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, processor {info['name']} (family {info['family']}, "
               f"{os.cpu_count()} logical CPUs), Python {platform.python_version()}. MNIST: "
               f"{'synthetic (no MNIST on disk; timings only)' if synthetic else 'real'}. "
               f"Load average before: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} "
               f"(1 / 5 / 15 min).", "")

    # Peak and sgemm.
    peak, how = theoretical_peak(info, threads)
    sgemm = measure_sgemm(sizes.sgemm_size, 0.1 if quick else 2.0)
    report.add("## Processor peak", "", f"- theoretical FP32 peak at {threads} threads: {how}",
               f"- measured sgemm ({sizes.sgemm_size}^2, torch.mm): {sgemm:.1f} GFLOP/s "
               f"({100 * sgemm / peak:.0f} % of peak)", "")
    if sgemm > peak:
        # /proc/cpuinfo's "cpu MHz" is the nominal clock of a VM's vCPU; boost runs faster and is not exposed.
        report.add(f"- the measured sgemm is above that peak: these cores run faster than the clock "
                   "/proc/cpuinfo reports (boost clock, not exposed in this VM), so the true peak is at least "
                   f"{sgemm:.1f} GFLOP/s; read 'of sgemm' as the safer share.", "")

    # Training step per architecture and implementation.
    mnist_task_config = TrainConfig.for_task("mnist", "lstm", hidden_size=sizes.hidden, batch_size=sizes.batch,
                                             threads=threads)
    task = build_task(mnist_task_config, "cpu", **data)
    rates: dict[tuple[str, str], float] = {}
    impls = ["native", "aten", "loop", "fused"] if fused.available() else ["native", "aten", "loop"]
    for _ in range(sizes.repeats):
        for arch in archs:
            for impl in impls:
                rate = step_rate(mnist_task_config.replace(arch=arch, impl=impl), task, sizes.batches)
                rates[arch, impl] = max(rates.get((arch, impl), 0.0), rate)
    rows = []
    for arch in archs:
        spec = ARCHITECTURES[arch]
        auto = RecurrentModel(arch, 28, sizes.hidden, 10).resolved_impl(torch.device("cpu"), training=True)
        best = rates[arch, auto]
        flops = train_flops_per_sample(spec["cell"], 2 if spec["bidirectional"] else 1, 1, 28, sizes.hidden, 28)
        achieved = best * flops / 1e9
        rows.append([arch, _k(rates[arch, "native"]), _k(rates[arch, "aten"]), _k(rates[arch, "loop"]),
                     _k(rates[arch, "fused"]) if (arch, "fused") in rates else "n/a", auto,
                     f"{flops / 1e6:.2f}", f"{achieved:.1f}",
                     f"{100 * achieved / peak:.0f} %", f"{100 * achieved / sgemm:.0f} %"])
    report.add(f"## Training step (hidden {sizes.hidden}, batch {sizes.batch}, 28 steps; train_step alone, "
               f"samples/s)", "")
    report.table(["arch", "native (oneDNN)", "aten (oneDNN off)", "loop", "fused (C++ steps)", "auto runs",
                  "MFLOP/sample", "GFLOP/s (auto)", "of peak", "of sgemm"], rows)
    if "fused" not in impls:
        report.add(f"fused: n/a, {fused.unavailable_reason()}.", "")
    report.add("FLOPs count the matmuls only: forward 2·G·H·(F+H) per step and direction (G = 1, 3, 4 gates "
               "for rnn, gru, lstm), times 3 for forward + backward.", "")

    # MNIST: fit against the notebook's loop, interleaved per architecture.
    from torch.utils.data import DataLoader, random_split

    train_set = notebook_mnist_dataset(data["train_images"], data["train_labels"])
    n_train = len(train_set) * 5 // 6
    trainset, _ = random_split(train_set, (n_train, len(train_set) - n_train))
    trainloader = DataLoader(trainset, batch_size=sizes.batch)
    fit_task = build_task(mnist_task_config.replace(train_size=sizes.batches * sizes.batch), "cpu", **data)
    fit_task.splits["val"] = tuple(t[:PERF_VAL_IMAGES] for t in fit_task.splits["val"])
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    for _ in range(sizes.repeats):
        for arch in archs:
            config = mnist_task_config.replace(arch=arch, epochs=2, train_size=sizes.batches * sizes.batch)
            ours[arch] = max(ours.get(arch, 0.0), fit_rate(config, fit_task)[0])
            theirs[arch] = max(theirs.get(arch, 0.0),
                               notebook_mnist_rate(arch, trainloader, sizes.hidden, sizes.batches))
    report.add(f"## MNIST training, samples/s (hidden {sizes.hidden}, batch {sizes.batch}, "
               f"{sizes.batches} batches per timed epoch)", "",
               "rnnbench: `fit` (MnistTask batching + model + Adam step, the epoch clock); notebook: "
               f"torchvision MNIST + ToTensor + DataLoader(batch_size={sizes.batch}) + seq-first nn module + "
               "permute, `loss.item()` per batch.", "")
    report.table(["arch", "rnnbench", "notebook", "ratio"],
                 [[arch, _k(ours[arch]), _k(theirs[arch]), f"{ours[arch] / theirs[arch]:.2f}x"] for arch in archs])

    # Addition: the notebook's experiment through fit, then the notebook's per-string loop.
    addition = TrainConfig.for_task("addition", "lstm", epochs=sizes.addition_epochs,
                                    train_size=sizes.addition_train_size, threads=threads)
    started = time.perf_counter()
    add_result = fit(addition, quiet=True)
    experiment_seconds = time.perf_counter() - started
    ours_add = addition.train_size / min(add_result.epoch_seconds[1:] or add_result.epoch_seconds)
    theirs_add = notebook_addition_rate(sizes.notebook_strings)
    report.add(f"## Binary addition (LSTM hidden {addition.hidden_size}, lengths 1..{addition.max_train_length})",
               "")
    report.table(["measure", "value"], [
        [f"rnnbench, batched + masked (batch {addition.batch_size}), strings/s", _k(ours_add)],
        ["notebook, one string per step, strings/s", _k(theirs_add)],
        ["ratio", f"{ours_add / theirs_add:.0f}x"],
        [f"notebook's experiment via fit ({addition.epochs} epochs x {addition.train_size:,} strings, lr "
         f"{addition.lr}), wall s incl. data + evaluation", f"{experiment_seconds:.1f}"],
        ["its test bit accuracy (mean over lengths 1..20)", f"{100 * add_result.test['acc']:.2f} %"],
    ])

    # Data pipeline.
    images_per_s = batching_rate(task, sizes.batch)
    share = ", ".join(f"{arch} {100 * ours[arch] / images_per_s:.1f} %" for arch in archs)
    report.add("## Data pipeline", "", f"- MnistTask.train_batches alone (index uint8 images + float scaling, "
               f"batch {sizes.batch}): {_k(images_per_s)} images/s",
               f"- share of a training epoch: {share}", "")

    # Memory.
    rss = trial_peak_rss("lstm", sizes, threads, synthetic)
    trial_images = sizes.trial_train_size or 50_000
    report.add("## Memory", "", f"- peak resident memory of one tracked trial (lstm, 1 epoch on {trial_images:,} "
               f"images, MLflow SQLite store, fresh interpreter): {rss:,.0f} MB", "")

    # Evaluation.
    eval_rows = []
    for arch in archs:
        model = build_model(mnist_task_config.replace(arch=arch), task)
        seconds = eval_seconds(task, model, "test", sizes.repeats)[0]
        eval_rows.append([arch, _k(task.splits["test"][1].numel() / seconds)])
    report.add(f"## Evaluation (test set, {task.splits['test'][1].numel():,} images, auto impl)", "")
    report.table(["arch", "inference samples/s"], eval_rows)
    long_task = build_task(addition.replace(eval_lengths=sizes.eval_lengths), "cpu")
    seconds, long_eval = eval_seconds(long_task, add_result.model, "test", sizes.repeats)
    strings = len(long_task.splits["test"][2])
    longest = max(sizes.eval_lengths)
    report.add(f"- accuracy vs length up to {longest} (addition test split: 100 strings per length 1..20 and "
               f"{_span(sizes.eval_lengths)}; {strings:,} strings, batched across lengths): {seconds:.2f} s; "
               f"bit accuracy at length {longest}: {100 * long_eval['bit_acc_by_len'][longest]:.2f} %", "")

    load_after = os.getloadavg()
    times_after = os.times()
    cpu = sum(times_after[:4]) - sum(times_before[:4])
    wall = times_after.elapsed - times_before.elapsed
    report.add(f"Load average after: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}. This run used "
               f"{cpu:.0f} s of CPU in {wall:.0f} s of wall time ({cpu / wall:.2f} CPUs of the {threads} threads; "
               f"much less than {threads} means other processes shared the cores). Rates are the best of "
               f"{sizes.repeats} interleaved round(s).")
    text = report.text()
    if out:
        write_atomic(out, text)
    return text


def _mnist_data(data_dir: str | None, quick: bool) -> tuple[dict, bool]:
    """Real MNIST when it is on disk (never fetched here); in --quick mode synthetic data otherwise."""
    from .data import bad_files, default_data_dir, load_mnist

    folder = Path(data_dir) if data_dir else default_data_dir()
    if not bad_files(folder):
        return load_mnist(str(folder)), False
    if quick:
        return synthetic_mnist(), True
    return load_mnist(str(folder)), False  # fetches, or fails with DataError saying what to do
