"""The fused C++ LSTM/GRU layers (csrc/cells.cpp), built on first use; the ``fused`` impl.

Example: rnnbench train --task mnist --arch gru --impl fused

The extension is compiled by ``torch.utils.cpp_extension`` the first time a process asks for it (about a
minute on 2 cores) and cached under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so
later processes load it in well under a second. Without a C++ compiler, or when the build fails,
``available()`` is False with the reason, ``--impl auto`` falls back to ATen, and an explicit
``--impl fused`` is refused with that reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).resolve().parent / "csrc" / "cells.cpp"

_lock = threading.Lock()
_state: dict = {}  # "module" once built, or "error" with why not


def _has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def load():
    """The built extension module; raises RuntimeError (once per process, then cached) when it cannot be built."""
    with _lock:
        if "module" in _state:
            return _state["module"]
        if "error" in _state:
            raise RuntimeError(_state["error"])
        compiler = os.environ.get("CXX", "c++")  # what cpp_extension invokes
        if shutil.which(compiler) is None:
            _state["error"] = f"the fused C++ cells need a C++ compiler and there is none ({compiler!r} not on PATH)"
            raise RuntimeError(_state["error"])
        try:
            import logging

            # Its import warns "No CUDA runtime is found" on every CPU-only machine; this build needs none.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils import cpp_extension

            # -fopenmp: at::parallel_for is inline OpenMP; without it each step's gate loop runs on one thread.
            flags = ["-O3", "-fopenmp", *(["-mavx2", "-mfma"] if _has_avx2() else [])]
            # The name carries the source, its path and the flags: an edited file or another CPU never loads a stale
            # build, and two checkouts do not rebuild each other's (ninja rebuilds when the source path changes).
            key = SOURCE.read_bytes() + str(SOURCE).encode() + " ".join(flags).encode()
            name = f"rnnbench_cells_{hashlib.sha1(key).hexdigest()[:10]}"
            _announce_build(cpp_extension, name)
            _state["module"] = cpp_extension.load(name=name, sources=[str(SOURCE)],
                                                  extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as error:  # no ninja, a failed build: say why in one line
            lines = str(error).strip().splitlines() or [type(error).__name__]
            # The compiler's own complaint, else ninja's, else the first line (a long command line).
            first = next((line for line in lines if "error:" in line),
                         next((line for line in lines if "not found" in line or "FAILED" in line), lines[0]))
            _state["error"] = f"the fused C++ cells could not be built ({type(error).__name__}: {first[:300]})"
            raise RuntimeError(_state["error"]) from None
        return _state["module"]


def _announce_build(cpp_extension, name: str) -> None:
    """A minute of silence inside the first trial deserves a line; a private torch helper tells whether it comes."""
    try:
        built = (Path(cpp_extension._get_build_directory(name, False)) / f"{name}.so").exists()
    except Exception:  # the helper moved in another torch: no notice, the build itself is unaffected
        return
    if not built:
        print("rnnbench: building the fused C++ LSTM/GRU cells (once per checkout and machine, about a minute)",
              file=sys.stderr, flush=True)


def available() -> bool:
    try:
        load()
    except RuntimeError:
        return False
    return True


def unavailable_reason() -> str | None:
    try:
        load()
    except RuntimeError as error:
        return str(error)
    return None


def supports(x: Tensor, weight: Tensor) -> bool:
    """The kernels take float32 CPU tensors; anything else runs another impl."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32


def _rows(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask[..., 0].contiguous()  # loop.py's [T, B, 1] -> [T, B]


class FusedLSTMLayer(torch.autograd.Function):
    """loop._LSTMLayer with each step's gate arithmetic in one C++ pass."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        rows = _rows(mask)
        hs, cs, tanh_cs, acts = load().lstm_forward(gates_x.contiguous(), w_hh, rows, first_partial)
        ctx.save_for_backward(acts, hs, cs, tanh_cs, w_hh, rows)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    @once_differentiable  # the C++ backward builds no graph: a double backward must fail, not return zeros
    def backward(ctx, d_hs: Tensor):
        acts, hs, cs, tanh_cs, w_hh, rows = ctx.saved_tensors
        d_gates, d_w = load().lstm_backward(d_hs, acts, hs, cs, tanh_cs, w_hh, rows, ctx.first_partial)
        return d_gates, d_w, None, None


class FusedGRULayer(torch.autograd.Function):
    """loop._GRULayer with each step's gate arithmetic in one C++ pass."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, b_hn: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        rows = _rows(mask)
        hs, acts, hidden_n = load().gru_forward(gates_x.contiguous(), w_hh, b_hn, rows, first_partial)
        ctx.save_for_backward(acts, hidden_n, hs, w_hh, rows)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs: Tensor):
        acts, hidden_n, hs, w_hh, rows = ctx.saved_tensors
        d_gates, d_w, d_b_hn = load().gru_backward(d_hs, acts, hidden_n, hs, w_hh, rows, ctx.first_partial)
        return d_gates, d_w, d_b_hn, None, None
