"""`rnnbench perf`: every measurement in turn, printed as markdown as it is measured, then written atomically.

Example: rnnbench perf --threads 2 --out reports/performance.md
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, random_split

from .. import fused
from ..catalog import ARCHITECTURES
from ..config import TrainConfig
from ..data import bad_files, default_data_dir, load_mnist
from ..files import write_atomic
from ..models import build_model
from ..registry import cell_spec
from ..tasks import build_task
from ..tasks.addition import TEST_PER_LENGTH
from ..train import fit, resolve_device
from .machine import cpu_info, measure_sgemm, theoretical_peak, train_flops_per_sample
from .notebook_loops import notebook_addition_rate, notebook_mnist_dataset, notebook_mnist_rate
from .rates import (
    ADDITION,
    FULL,
    PERF_VAL_IMAGES,
    QUICK,
    ROWS,
    Sizes,
    auto_pick,
    batching_rate,
    eval_seconds,
    fit_rate,
    step_rate,
    synthetic_mnist,
    trial_peak_rss,
)


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
    return "n/a" if math.isnan(rate) else f"{rate:,.0f}"


def _share(value: float, of: float) -> str:
    return "n/a" if math.isnan(of) else f"{100 * value / of:.0f} %"


def run(*, quick: bool = False, threads: int = 2, out: str | Path | None = "reports/performance.md",
        data_dir: str | None = None, hidden: int | None = None, batch: int | None = None,
        batches: int | None = None, repeats: int | None = None,
        archs: tuple[str, ...] = tuple(ARCHITECTURES), quiet: bool = False, device: str = "cpu") -> str:
    """Measure everything, print it as markdown (unless quiet), write ``out``; returns the markdown.

    On CUDA (``device``) it measures the training step, MNIST training against the notebook's loop and addition
    there; the processor, small-shape, data-pipeline, memory and evaluation sections are the CPU's and are left
    out."""
    sizes = QUICK if quick else FULL
    overrides = {"hidden": hidden, "batch": batch, "batches": batches, "repeats": repeats}
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v}})
    torch.set_num_threads(threads)
    report = Report(quiet)
    info = cpu_info()
    load_before = os.getloadavg()
    times_before = os.times()
    target = resolve_device(device)
    data, synthetic = _mnist_data(data_dir, quick)
    _header(report, quick, threads, info, synthetic, load_before)
    on_cpu = target.type == "cpu"
    if not on_cpu:
        report.add(f"Device: {target.type} ({torch.cuda.get_device_name(target)}); the CPU-only sections are "
                   "left out.", "")
    peak, sgemm = _processor(report, info, threads, sizes, quick) if on_cpu else (math.nan, math.nan)
    config = TrainConfig.for_task(ROWS, "lstm", hidden_size=sizes.hidden, batch_size=sizes.batch, threads=threads,
                                  device=target.type)
    task = build_task(config, target, **data)
    _training_step(report, config, task, sizes, archs, peak, sgemm)
    if on_cpu:
        _small_shapes(report, config, task, sizes, threads)
    ours = _mnist_training(report, config, data, sizes, archs)
    addition, add_result = _addition(report, sizes, threads, target.type)
    if on_cpu:
        _data_pipeline(report, task, sizes, ours, archs)
        _memory(report, sizes, threads, synthetic)
        _evaluation(report, config, task, addition, add_result, sizes, archs)
    _footer(report, load_before, times_before, threads, sizes)
    text = report.text()
    if out:
        write_atomic(out, text)
    return text


def _header(report: Report, quick: bool, threads: int, info: dict, synthetic: bool, load_before) -> None:
    report.add("# rnnbench performance", "",
               f"`rnnbench perf{' --quick' if quick else ''} --threads {threads}`: torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, processor {info['name']} (family {info['family']}, "
               f"{os.cpu_count()} logical CPUs), Python {platform.python_version()}. MNIST: "
               f"{'synthetic (no MNIST on disk; timings only)' if synthetic else 'real'}. "
               f"Load average before: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} "
               f"(1 / 5 / 15 min).", "")


def _processor(report: Report, info: dict, threads: int, sizes: Sizes, quick: bool) -> tuple[float, float]:
    """The theoretical FP32 peak and a measured sgemm, in GFLOP/s."""
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

    return peak, sgemm


def _training_step(report: Report, mnist_task_config: TrainConfig, task, sizes: Sizes, archs, peak: float,
                   sgemm: float) -> None:
    """train_step alone per architecture and implementation, with the GFLOP/s it achieves."""
    rates: dict[tuple[str, str], float] = {}
    if task.device.type != "cpu":
        impls = ["native", "loop"]  # aten (oneDNN off) and the C++ steps are CPU kernels
    else:
        impls = ["native", "aten", "loop", "fused"] if fused.available() else ["native", "aten", "loop"]
    for _ in range(sizes.repeats):
        for arch in archs:
            for impl in impls if cell_spec(arch).impls else ["auto"]:
                rate = step_rate(mnist_task_config.replace(arch=arch, impl=impl), task, sizes.batches)
                rates[arch, impl] = max(rates.get((arch, impl), 0.0), rate)
    rows = []
    for arch in archs:
        if not cell_spec(arch).impls:  # its own forward: one rate, and no gate count to turn into FLOPs
            rows.append([arch, "n/a", "n/a", "n/a", "n/a", f"its own ({_k(rates[arch, 'auto'])})", "n/a", "n/a",
                         "n/a", "n/a"])
            continue
        spec = ARCHITECTURES[arch]
        auto = auto_pick(mnist_task_config.replace(arch=arch), task)
        best = rates[arch, auto]
        flops = train_flops_per_sample(spec["cell"], 2 if spec["bidirectional"] else 1, 1, 28, sizes.hidden, 28)
        achieved = best * flops / 1e9
        rows.append([arch, _k(rates[arch, "native"]), _k(rates.get((arch, "aten"), math.nan)), _k(rates[arch, "loop"]),
                     _k(rates[arch, "fused"]) if (arch, "fused") in rates else "n/a", auto,
                     f"{flops / 1e6:.2f}", f"{achieved:.1f}",
                     _share(achieved, peak), _share(achieved, sgemm)])
    report.add(f"## Training step (hidden {sizes.hidden}, batch {sizes.batch}, 28 steps; train_step alone, "
               f"samples/s)", "")
    report.table(["arch", "native (oneDNN)", "aten (oneDNN off)", "loop", "fused (C++ steps)", "auto runs",
                  "MFLOP/sample", "GFLOP/s (auto)", "of peak", "of sgemm"], rows)
    if "fused" not in impls and task.device.type == "cpu":
        report.add(f"fused: n/a, {fused.unavailable_reason()}.", "")
    report.add("FLOPs count the matmuls only: forward 2·G·H·(F+H) per step and direction (G = 1, 3, 4 gates "
               "for rnn, gru, lstm), times 3 for forward + backward.", "")


SMALL_SHAPES = ((32, 32), (32, 64), (64, 32), (64, 64))  # (hidden, batch): addition's and pytorch/examples' sizes


def _small_shapes(report: Report, mnist_task_config: TrainConfig, mnist_task, sizes: Sizes, threads: int) -> None:
    """train_step per impl at small hidden sizes and batches, on both tasks: does ``auto`` pick the fastest?"""
    impls = ["native", "aten", "loop", "fused"] if fused.available() else ["native", "aten", "loop"]
    addition_config = TrainConfig.for_task(ADDITION, "lstm", train_size=2000, threads=threads)
    tasks = {ROWS: (mnist_task_config, mnist_task), ADDITION: (addition_config, build_task(addition_config, "cpu"))}
    batches = max(3 * sizes.batches, 6)  # small steps: more of them for a stable figure
    rates: dict[tuple, float] = {}
    for _ in range(sizes.repeats):
        for task_name, (base, task) in tasks.items():
            for arch in ("lstm", "gru"):
                for hidden, batch in SMALL_SHAPES:
                    for impl in impls:
                        config = base.replace(arch=arch, impl=impl, hidden_size=hidden, batch_size=batch)
                        key = (task_name, arch, hidden, batch, impl)
                        rates[key] = max(rates.get(key, 0.0), step_rate(config, task, batches))
    rows = []
    for task_name in tasks:
        for arch in ("lstm", "gru"):
            for hidden, batch in SMALL_SHAPES:
                measured = {impl: rates[task_name, arch, hidden, batch, impl] for impl in impls}
                base, task = tasks[task_name]
                auto = auto_pick(base.replace(arch=arch, hidden_size=hidden, batch_size=batch), task)
                fastest = max(measured, key=measured.get)
                rows.append([task_name, arch, hidden, batch, *(_k(measured[impl]) for impl in impls), auto,
                             f"{measured[auto] / measured[fastest]:.2f} ({fastest})"])
    report.add("## Small shapes (train_step alone, samples/s; hidden and batch of addition and pytorch/examples' "
               "mnist_rnn)", "")
    report.table(["task", "arch", "hidden", "batch", *impls, "auto runs", "auto / fastest"], rows)


def _mnist_training(report: Report, mnist_task_config: TrainConfig, data: dict, sizes: Sizes, archs) -> dict:
    """fit against the notebook's loop, interleaved per architecture; returns rnnbench's samples/s."""
    train_set = notebook_mnist_dataset(data["train_images"], data["train_labels"])
    n_train = len(train_set) * 5 // 6
    trainset, _ = random_split(train_set, (n_train, len(train_set) - n_train))
    trainloader = DataLoader(trainset, batch_size=sizes.batch)
    device = mnist_task_config.device
    fit_task = build_task(mnist_task_config.replace(train_size=sizes.batches * sizes.batch), device, **data)
    fit_task.splits["val"] = tuple(t[:PERF_VAL_IMAGES] for t in fit_task.splits["val"])
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    for _ in range(sizes.repeats):
        for arch in archs:
            config = mnist_task_config.replace(arch=arch, epochs=2, train_size=sizes.batches * sizes.batch)
            ours[arch] = max(ours.get(arch, 0.0), fit_rate(config, fit_task)[0])
            if cell_spec(arch).impls:  # the notebook has no loop for a registered cell
                theirs[arch] = max(theirs.get(arch, 0.0),
                                   notebook_mnist_rate(arch, trainloader, sizes.hidden, sizes.batches, device))
    report.add(f"## MNIST training, samples/s (hidden {sizes.hidden}, batch {sizes.batch}, "
               f"{sizes.batches} batches per timed epoch)", "",
               "rnnbench: `fit` (MnistTask batching + model + Adam step, the epoch clock); notebook: "
               f"torchvision MNIST + ToTensor + DataLoader(batch_size={sizes.batch}) + seq-first nn module + "
               "permute, `loss.item()` per batch.", "")
    report.table(["arch", "rnnbench", "notebook", "ratio"],
                 [[arch, _k(ours[arch]), _k(theirs[arch]), f"{ours[arch] / theirs[arch]:.2f}x"] if arch in theirs
                  else [arch, _k(ours[arch]), "n/a", "n/a"] for arch in archs])
    return ours


def _addition(report: Report, sizes: Sizes, threads: int, device: str = "cpu"):
    """The notebook's addition experiment through fit, then the notebook's per-string loop (on the CPU)."""
    addition = TrainConfig.for_task(ADDITION, "lstm", epochs=sizes.addition_epochs,
                                    train_size=sizes.addition_train_size, threads=threads, device=device)
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
        ["ratio" if device == "cpu" else f"ratio (rnnbench on {device}, the notebook's loop on the CPU)",
         f"{ours_add / theirs_add:.0f}x"],
        [f"notebook's experiment via fit ({addition.epochs} epochs x {addition.train_size:,} strings, lr "
         f"{addition.lr}), wall s incl. data + evaluation", f"{experiment_seconds:.1f}"],
        ["its test bit accuracy (mean over lengths 1..20)", f"{100 * add_result.test['acc']:.2f} %"],
    ])
    return addition, add_result


def _data_pipeline(report: Report, task, sizes: Sizes, ours: dict, archs) -> None:
    images_per_s = batching_rate(task, sizes.batch)
    share = ", ".join(f"{arch} {100 * ours[arch] / images_per_s:.1f} %" for arch in archs)
    report.add("## Data pipeline", "", f"- MnistTask.train_batches alone (index uint8 images + float scaling, "
               f"batch {sizes.batch}): {_k(images_per_s)} images/s",
               f"- share of a training epoch: {share}", "")


def _memory(report: Report, sizes: Sizes, threads: int, synthetic: bool) -> None:
    rss = trial_peak_rss("lstm", sizes, threads, synthetic)
    trial_images = sizes.trial_train_size or 50_000
    report.add("## Memory", "", f"- peak resident memory of one tracked trial (lstm, 1 epoch on {trial_images:,} "
               f"images, MLflow SQLite store, fresh interpreter): {rss:,.0f} MB", "")


def _evaluation(report: Report, mnist_task_config: TrainConfig, task, addition: TrainConfig, add_result,
                sizes: Sizes, archs) -> None:
    eval_rows = []
    for arch in archs:
        model = build_model(mnist_task_config.replace(arch=arch), task)
        seconds = eval_seconds(task, model, "test", sizes.repeats)[0]
        eval_rows.append([arch, _k(task.splits["test"][1].numel() / seconds)])
    report.add(f"## Evaluation (test set, {task.splits['test'][1].numel():,} images, auto impl)", "")
    report.table(["arch", "inference samples/s"], eval_rows)
    long_task = build_task(addition.replace(eval_lengths=sizes.eval_lengths), "cpu")
    seconds, long_eval = eval_seconds(long_task, add_result.model, "test", sizes.repeats)
    strings = len(long_task.split("test")[2])
    longest = max(sizes.eval_lengths)
    report.add(f"- accuracy vs length up to {longest} (addition test split: {TEST_PER_LENGTH:,} strings per length "
               f"1..20 and {_span(sizes.eval_lengths)}; {strings:,} strings, batched across lengths): {seconds:.2f} s; "
               f"bit accuracy at length {longest}: {100 * long_eval['bit_acc_by_len'][longest]:.2f} %", "")


def _footer(report: Report, load_before, times_before, threads: int, sizes: Sizes) -> None:
    load_after = os.getloadavg()
    times_after = os.times()
    cpu = sum(times_after[:4]) - sum(times_before[:4])
    wall = times_after.elapsed - times_before.elapsed
    report.add(f"Load average after: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}. This run used "
               f"{cpu:.0f} s of CPU in {wall:.0f} s of wall time ({cpu / wall:.2f} CPUs of the {threads} threads; "
               f"much less than {threads} means other processes shared the cores). Rates are the best of "
               f"{sizes.repeats} interleaved round(s).")


def _mnist_data(data_dir: str | None, quick: bool) -> tuple[dict, bool]:
    """Real MNIST when it is on disk (never fetched here); in --quick mode synthetic data otherwise."""
    folder = Path(data_dir) if data_dir else default_data_dir()
    if not bad_files(folder):
        return load_mnist(str(folder)), False
    if quick:
        return synthetic_mnist(), True
    return load_mnist(str(folder)), False  # fetches, or fails with DataError saying what to do
