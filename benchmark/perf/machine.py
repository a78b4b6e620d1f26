"""The processor: its name and family, its theoretical FP32 peak, a measured sgemm, and FLOPs per sample.

Example: python -c "from benchmark.perf.machine import cpu_info; print(cpu_info())"
"""

from __future__ import annotations

import contextlib
import platform
import time
from pathlib import Path

import torch

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


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
