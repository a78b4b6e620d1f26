"""The fused C++ LSTM/GRU layers (csrc/cells.cpp), built on first use; the ``fused`` impl.

Example: rnnbench train --task mnist --arch gru --impl fused

The extension is compiled by ``torch.utils.cpp_extension`` the first time it is needed (about a minute on 2
cores), and the built library is kept in ``$RNNBENCH_CACHE/fused`` (default ``~/.cache/rnnbench/fused``) under a
name made of the source's sha256, the compiler flags, the compiler, torch's version and Python's ABI. Later
processes import that file directly, without ninja: a checkout elsewhere, another ninja on PATH, or another
virtualenv with the same torch shares one build. ``train`` builds it before the first epoch's clock starts
(``kernel_choice.prepare_kernels``). Without a C++ compiler, or when the build fails, ``available()`` is False with the
reason, ``--impl auto`` falls back to ATen, and an explicit ``--impl fused`` is refused with that reason.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .files import cache_root

SOURCE = Path(__file__).resolve().parent / "csrc" / "cells.cpp"

_lock = threading.Lock()
_state: dict = {}  # "module" once built, or "error" with why not


def _has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _flags() -> list[str]:
    # -fopenmp: at::parallel_for is inline OpenMP; without it each step's gate loop runs on one thread.
    return ["-O3", "-fopenmp", *(["-mavx2", "-mfma"] if _has_avx2() else [])]


def _compiler() -> str:
    """The compiler and its version (a home folder shared by machines with different toolchains keeps apart)."""
    return _compiler_version(os.environ.get("CXX", "c++"))


@functools.cache  # build_key runs for every auto pick; the toolchain does not change under a running process
def _compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return compiler
    return f"{compiler} {(done.stdout.splitlines() or [''])[0]}"


def build_key(source: bytes | None = None, flags: list[str] | None = None) -> str:
    """What a build depends on: the source's bytes, the flags, torch's version and the Python ABI; not the
    checkout's path, the ninja that runs the build, or the virtualenv."""
    parts = [source if source is not None else SOURCE.read_bytes(),
             " ".join(_flags() if flags is None else flags).encode(),
             torch.__version__.encode(), sys.implementation.cache_tag.encode(), platform.machine().encode(),
             _compiler().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def cache_dir() -> Path:
    return cache_root() / "fused"


def cached_library(key: str | None = None) -> Path:
    """Where the built library for this source, flags and torch lives (it may not exist yet)."""
    key = key or build_key()
    return cache_dir() / f"rnnbench_cells_{key}.so"


def _import_library(path: Path):
    name = path.stem  # the module name the build gave PyInit_<name>
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _build(library: Path):
    """Compile into a private build folder, then publish the library with one atomic rename."""
    import logging

    # Its import warns "No CUDA runtime is found" on every CPU-only machine; this build needs none.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    library.parent.mkdir(parents=True, exist_ok=True)
    print("rnnbench: building the fused C++ LSTM/GRU cells (once per source and torch version, about a minute)",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as build_dir:
        module = cpp_extension.load(name=library.stem, sources=[str(SOURCE)], build_directory=build_dir,
                                    extra_cflags=_flags(), extra_ldflags=["-fopenmp"], verbose=False)
        # The rename keeps the loaded file's inode: this process goes on using it, later ones import it.
        os.replace(Path(build_dir) / f"{library.stem}.so", library)  # two builders both publish a whole file
    return module


def load():
    """The built extension module; raises RuntimeError (once per process, then cached) when it cannot be built."""
    with _lock:
        if "module" in _state:
            return _state["module"]
        if "error" in _state:
            raise RuntimeError(_state["error"])
        library = cached_library()
        try:
            if library.exists():
                _state["module"] = _import_library(library)
                return _state["module"]
        except ImportError:
            pass  # a damaged file: build it again
        compiler = os.environ.get("CXX", "c++")  # what cpp_extension invokes
        if shutil.which(compiler) is None:
            _state["error"] = f"the fused C++ cells need a C++ compiler and there is none ({compiler!r} not on PATH)"
            raise RuntimeError(_state["error"])
        try:
            _state["module"] = _build(library)
        except Exception as error:  # no ninja, a failed build: say why in one line
            lines = str(error).strip().splitlines() or [type(error).__name__]
            # The compiler's own complaint, else ninja's, else the first line (a long command line).
            first = next((line for line in lines if "error:" in line),
                         next((line for line in lines if "not found" in line or "FAILED" in line), lines[0]))
            _state["error"] = f"the fused C++ cells could not be built ({type(error).__name__}: {first[:300]})"
            raise RuntimeError(_state["error"]) from None
        return _state["module"]


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
    """loop._LSTMLayer with each step's gate arithmetic in one C++ pass, for one direction or both.

    gates_x [T, B, D*4H] and w_hh [D, 4H, H] -> hs [T, B, D*H]; direction 1 walks time backwards in place."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        rows = _rows(mask)
        hs, cs, tanh_cs, *acts = load().lstm_forward(gates_x.contiguous(), w_hh, rows, first_partial)
        ctx.save_for_backward(hs, cs, tanh_cs, w_hh, rows, *acts)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    @once_differentiable  # the C++ backward builds no graph: a double backward must fail, not return zeros
    def backward(ctx, d_hs: Tensor):
        hs, cs, tanh_cs, w_hh, rows, *acts = ctx.saved_tensors
        d_gates, d_w = load().lstm_backward(d_hs, acts, hs, cs, tanh_cs, w_hh, rows, ctx.first_partial)
        return d_gates, d_w, None, None


class FusedGRULayer(torch.autograd.Function):
    """loop._GRULayer with each step's gate arithmetic in one C++ pass, for one direction or both.

    gates_x [T, B, D*3H], w_hh [D, 3H, H] and b_hn [D, H] -> hs [T, B, D*H]."""

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, b_hn: Tensor, mask: Tensor | None, first_partial: int) -> Tensor:
        rows = _rows(mask)
        hs, hidden_n, *acts = load().gru_forward(gates_x.contiguous(), w_hh, b_hn.contiguous(), rows, first_partial)
        ctx.save_for_backward(hidden_n, hs, w_hh, rows, *acts)
        ctx.first_partial = first_partial
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs: Tensor):
        hidden_n, hs, w_hh, rows, *acts = ctx.saved_tensors
        d_gates, d_w, d_b_hn = load().gru_backward(d_hs, acts, hidden_n, hs, w_hh, rows, ctx.first_partial)
        return d_gates, d_w, d_b_hn, None, None
