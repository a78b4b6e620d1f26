"""Where an LSTM training step's time goes: fit's ``train_step`` profiled per op, against the sgemm ceiling.

Example: python benchmarks/lstm_step_profile.py --threads 2 --impl fused

``rnnbench perf`` gives one figure for the step: achieved matmul GFLOP/s as a share of a large square sgemm. This
script splits that step (MNIST rows: 28 steps of 28 features, hidden 128, batch 500 by default) into its ops with
``torch.profiler``, and for each matrix product also times the same product alone at the same shapes. So it shows
how much of the gap to the big sgemm is the GEMMs' own shapes (skinny products at batch 500 run below a
2048-square sgemm), how much is the gate arithmetic between them, and how much is the rest of the step (input
projection, head, loss, optimizer). Run it on an idle machine; it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def product_rate(shapes: list[list[int]], name: str) -> float:
    """GFLOP/s of one matrix product alone at the profiled input shapes."""
    import torch

    operation = {"aten::addmm": torch.addmm, "aten::bmm": torch.bmm}.get(name, torch.mm)
    inputs = [torch.rand(*s) for s in shapes[:3 if name == "aten::addmm" else 2]]
    return flops(name, shapes) / best_seconds(lambda: operation(*inputs), calls=20) / 1e9


def flops(name: str, shapes: list[list[int]]) -> float:
    if name == "aten::addmm":
        shapes = shapes[1:]
    if name == "aten::bmm":
        return 2 * shapes[0][0] * shapes[0][1] * shapes[0][2] * shapes[1][2]
    return 2 * shapes[0][0] * shapes[0][1] * shapes[1][1]


def best_seconds(run, rounds: int = 5, calls: int = 5) -> float:
    run()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def layer_split(cell: str, batch: int, hidden: int, steps: int) -> dict[str, float]:
    """Unprofiled: seconds of one fused layer's forward and backward (the C++ calls alone), and of the matrix
    products inside them timed alone at the same shapes; the difference is the gate arithmetic and its memory."""
    import torch

    from benchmark import fused

    gates = {"lstm": 4, "gru": 3}[cell] * hidden
    gates_x = torch.randn(steps, batch, gates) * 0.1
    w_hh = torch.randn(1, gates, hidden) * 0.1
    d_hs = torch.randn(steps, batch, hidden)
    library = fused.load()
    if cell == "lstm":
        forward = lambda: library.lstm_forward(gates_x, w_hh, None, steps)  # noqa: E731
        hs, cs, tanh_cs, *acts = forward()
        backward = lambda: library.lstm_backward(d_hs, acts, hs, cs, tanh_cs, w_hh, None, steps)  # noqa: E731
    else:
        b_hn = torch.zeros(1, hidden)
        forward = lambda: library.gru_forward(gates_x, w_hh, b_hn, None, steps)  # noqa: E731
        hs, hidden_n, *acts = forward()
        backward = lambda: library.gru_backward(d_hs, acts, hidden_n, hs, w_hh, None, steps)  # noqa: E731
    h, g, w = torch.rand(batch, hidden), torch.rand(batch, gates), torch.rand(gates, hidden)
    big_g, big_h = torch.rand(gates, (steps - 1) * batch), torch.rand((steps - 1) * batch, hidden)
    step_product = best_seconds(lambda: torch.mm(h, w.t()), calls=50)  # forward: h_{t-1} W_hh^T
    back_product = best_seconds(lambda: torch.mm(g, w), calls=50)  # backward: d_gates W_hh
    weight_product = best_seconds(lambda: torch.mm(big_g, big_h))  # backward: dW_hh over all steps at once
    return {"forward": best_seconds(forward), "backward": best_seconds(backward),
            "forward products": (steps - 1) * step_product,
            "backward products": (steps - 1) * back_product + weight_product}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", default="fused", choices=["native", "aten", "loop", "fused"])
    parser.add_argument("--arch", default="lstm")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20, help="profiled train steps (default: 20)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmark.catalog import ARCHITECTURES
    from benchmark.config import TrainConfig
    from benchmark.kernel_choice import prepare_kernels
    from benchmark.models import build_model
    from benchmark.perf.machine import measure_sgemm, train_flops_per_sample
    from benchmark.perf.rates import synthetic_mnist
    from benchmark.tasks import build_task
    from benchmark.train import make_optimizer, seed_everything, train_step

    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.threads} threads; torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()})")
    config = TrainConfig.for_task("mnist", args.arch, impl=args.impl, hidden_size=args.hidden_size,
                                  batch_size=args.batch_size, train_size=args.batch_size, lr=1e-3)
    seed_everything(0)
    task = build_task(config, torch.device("cpu"), **synthetic_mnist(n_train=args.batch_size * 2, n_test=100))
    model = build_model(config, task)
    batch = next(task.train_batches(config.batch_size, torch.Generator().manual_seed(0)))
    prepare_kernels(model, torch.device("cpu"), lambda: batch)
    optimizer = make_optimizer(config, model)
    for _ in range(3):
        train_step(model, task, config, optimizer, batch)

    started = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, task, config, optimizer, batch)
    step_s = (time.perf_counter() - started) / args.steps
    spec = ARCHITECTURES[args.arch]
    sample_flops = train_flops_per_sample(spec["cell"], 2 if spec["bidirectional"] else 1, 1, 28,
                                          args.hidden_size, 28)
    achieved = sample_flops * args.batch_size / step_s / 1e9
    sgemm = max(measure_sgemm(2048, 1.0) for _ in range(2))

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            train_step(model, task, config, optimizer, batch)
    events = prof.key_averages(group_by_input_shape=True)
    total_ms = sum(e.self_cpu_time_total for e in events) / 1000 / args.steps

    by_op: dict[str, float] = defaultdict(float)
    products = []
    for event in events:
        ms = event.self_cpu_time_total / 1000 / args.steps
        by_op[event.key] += ms
        shapes = [list(s) for s in (event.input_shapes or []) if s]
        if event.key in MATMULS and len(shapes) >= 2 and ms > 0:
            calls = event.count / args.steps
            gflops = flops(event.key, shapes) * calls / (ms / 1000) / 1e9
            products.append((event.key, shapes, calls, ms, gflops, product_rate(shapes, event.key)))

    print(f"\n{args.arch} {args.impl}, hidden {args.hidden_size}, batch {args.batch_size}, 28 steps: "
          f"{step_s * 1000:.1f} ms per train step unprofiled = {args.batch_size / step_s:,.0f} samples/s = "
          f"{achieved:.1f} GFLOP/s = {achieved / sgemm:.0%} of the measured 2048-square sgemm ({sgemm:.1f} GFLOP/s)")
    print(f"profiled: {total_ms:.1f} ms per step of self time over all ops\n")
    print("| op | ms per step | share |\n|---|---:|---:|")
    for name, ms in sorted(by_op.items(), key=lambda item: -item[1])[:14]:
        print(f"| {name} | {ms:.2f} | {ms / total_ms:.0%} |")
    matmul_ms = sum(ms for name, ms in by_op.items() if name in MATMULS)
    print(f"\nmatrix products: {matmul_ms:.1f} ms per step ({matmul_ms / total_ms:.0%}); the rest "
          f"{total_ms - matmul_ms:.1f} ms\n")
    print("| product | shapes | calls per step | ms per step | GFLOP/s in the step | same product alone |"
          "\n|---|---|---:|---:|---:|---:|")
    for name, shapes, calls, ms, gflops, alone in sorted(products, key=lambda p: -p[3]):
        print(f"| {name} | {' x '.join(map(str, shapes))} | {calls:.0f} | {ms:.2f} | {gflops:.1f} | {alone:.1f} |")
    if args.impl == "fused" and spec["cell"] in ("lstm", "gru") and not spec["bidirectional"]:
        split = layer_split(spec["cell"], args.batch_size, args.hidden_size, 28)
        print("\nUnprofiled, the fused layer alone (its C++ forward and backward calls) against its matrix products "
              "timed alone at the same shapes:\n")
        print("| part | ms | of which matrix products (alone) | the rest: gate arithmetic and its memory |"
              "\n|---|---:|---:|---:|")
        for part in ("forward", "backward"):
            total, products = split[part] * 1000, split[f"{part} products"] * 1000
            print(f"| {part} | {total:.2f} | {products:.2f} | {total - products:.2f} ({1 - products / total:.0%}) |")
        layer = (split["forward"] + split["backward"]) * 1000
        print(f"\nThe layer is {layer:.1f} ms of the {step_s * 1000:.1f} ms step; the other "
              f"{step_s * 1000 - layer:.1f} ms are the input projection and its gradients, the head, the loss and "
              "the optimizer.")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
