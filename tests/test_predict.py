"""predict: MNIST-style preprocessing, classification of image files, bad files, the contact sheet."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image, ImageDraw, ImageFont

from benchmark import cli
from benchmark.predict import ImageError, label_from_name, load_image, preprocess
from benchmark.report import Figures, Snapshot, load_snapshot
from benchmark.report.sections.digits import digits_markdown
from benchmark.tracking import tracked_run
from benchmark.train import fit

DIGITS = Path(__file__).parent / "data" / "digits"


def glyph(digit: int, size: int = 48, canvas=(80, 80), at=(15, 5)) -> np.ndarray:
    """A typeset digit, white on black."""
    image = Image.new("L", canvas, 0)
    ImageDraw.Draw(image).text(at, str(digit), fill=255, font=ImageFont.load_default(size=size))
    return np.asarray(image)


def mnist_style(digit: int) -> torch.Tensor:
    return preprocess(glyph(digit))


def black_on_white_large(original: torch.Tensor, size: int, canvas=(700, 900), at=(380, 40)) -> np.ndarray:
    """The 28x28 digit scaled up, inverted to dark ink on light paper, off-centre on a big canvas."""
    big = Image.fromarray(original.numpy()).resize((size, size), Image.Resampling.BICUBIC)
    page = np.full(canvas, 240.0)
    page[at[0]: at[0] + size, at[1]: at[1] + size] = 240.0 - np.asarray(big, dtype=np.float64) * 220 / 255
    return page


@pytest.mark.parametrize("digit", range(10))
def test_inverted_off_centre_larger_digit_becomes_the_original(digit):
    original = mnist_style(digit)
    assert original.shape == (28, 28) and original.dtype == torch.uint8
    # MNIST-style input is (nearly) a fixed point: ink box 20 px, centre of mass at the centre.
    assert (preprocess(original.numpy()).float() - original.float()).abs().mean() < 0.01 * 255
    rows, cols = torch.nonzero(original > 50, as_tuple=True)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (19, 20, 21)

    seen = preprocess(black_on_white_large(original, 280))
    difference = (seen.float() - original.float()).abs()
    assert difference.mean() < 0.04 * 255, f"mean difference {difference.mean() / 255:.3f}"
    # Sanity of the tolerance: the same digit moved by 2 px is farther away than the preprocessed copy.
    shifted = torch.roll(original, shifts=2, dims=1).float()
    assert difference.mean() < (shifted - original.float()).abs().mean()


def test_dark_background_is_not_inverted_and_centre_of_mass_is_central():
    page = np.zeros((300, 200))
    page[20:120, 130:160] = 255  # a white bar in the top-right corner
    seen = preprocess(page).float()
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    assert abs((seen * ys).sum() / seen.sum() - 14) <= 1 and abs((seen * xs).sum() / seen.sum() - 14) <= 1
    assert seen[0].sum() == 0 and seen.max() == 255  # black border, full-strength ink


def test_blank_and_transparent_images(tmp_path):
    with pytest.raises(ImageError, match="no digit found"):
        preprocess(np.full((50, 50), 200.0), "blank.png")
    # Black ink on a transparent background (alpha only) reads as ink on white paper.
    rgba = np.zeros((60, 60, 4), dtype=np.uint8)
    rgba[10:50, 28:33, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    seen = preprocess(load_image(tmp_path / "alpha.png"))
    assert seen.max() == 255 and seen[:, :3].sum() == 0


def font_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Typeset digits at random sizes and positions, through preprocess: a tiny learnable 'MNIST'."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(rng.integers(0, 10, n))
    images = [preprocess(glyph(int(d), size=int(rng.integers(24, 60)), canvas=(90, 90),
                               at=(int(rng.integers(0, 30)), int(rng.integers(0, 20))))) for d in labels]
    return torch.stack(images), labels


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    """A tiny LSTM trained on typeset digits, tracked in its own store: (run id, tracking URI)."""
    store = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    train_images, train_labels = font_digits(600)
    test_images, test_labels = font_digits(60, seed=1)
    data = {"train_images": train_images, "train_labels": train_labels,
            "test_images": test_images, "test_labels": test_labels}
    config = tiny_config("mnist", "lstm", hidden_size=32, epochs=8, batch_size=20, lr=1e-2)
    with tracked_run(config, tracking_uri=uri) as tracker:
        result = fit(config, tracker=tracker, quiet=True, task_data=data)
    assert result.test["acc"] >= 0.85
    return tracker.run_id, uri, data


def write_pages(folder: Path) -> list[Path]:
    """Each digit typeset black on white at a different size, off-centre, as PNG and JPEG."""
    paths = []
    for digit in range(10):
        size = 40 + 35 * digit
        page = Image.new("RGB", (2 * size + 60, 2 * size + 40), (250, 248, 240))
        ImageDraw.Draw(page).text((size + 40, 10), str(digit), fill=(20, 20, 40),
                                  font=ImageFont.load_default(size=size))
        path = folder / f"{digit}_page.{'png' if digit % 2 else 'jpg'}"
        page.save(path)
        paths.append(path)
    return paths


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_classifies_black_on_white_pages(digit_run, tmp_path, capsys):
    run_id, uri, _ = digit_run
    paths = write_pages(tmp_path)
    code, out, err = run_cli(capsys, "predict", "--run", run_id, "--tracking-uri", uri, "--json",
                             "--sheet", tmp_path / "sheet.png", *paths)
    assert code == 0 and "rnnbench predict" not in err
    results = json.loads(out)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    assert all(r["label"] == int(Path(r["file"]).name[0]) for r in results)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 and r["probability"] == max(r["probabilities"])
               for r in results)
    right = sum(r["digit"] == r["label"] for r in results)
    assert right >= 8, [(r["label"], r["digit"]) for r in results]
    assert Image.open(tmp_path / "sheet.png").size[0] > 100


def test_bad_files_get_one_line_each_and_the_rest_are_classified(digit_run, tmp_path, capsys):
    run_id, uri, _ = digit_run
    good = write_pages(tmp_path)[:2]
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    bad = [tmp_path / "notes.png", tmp_path / "missing.png", tmp_path / "empty.jpg", tmp_path / "blank.png"]
    code, out, err = run_cli(capsys, "predict", "--run", run_id, "--tracking-uri", uri,
                             good[0], *bad, good[1])
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == len(bad)
    for path, line in zip(bad, lines, strict=True):
        assert line.startswith(f"rnnbench predict: {path}")
    assert "no such file" in lines[1] and "no digit found" in lines[3]
    printed = out.strip().splitlines()
    assert [line.split()[0] for line in printed] == [str(good[0]), str(good[1])]


def test_predict_refuses_a_non_mnist_run_and_an_unknown_run(tmp_path, tracking_uri, capsys):
    config = tiny_config("addition", epochs=1, train_size=50)
    with tracked_run(config, tracking_uri=tracking_uri) as tracker:
        fit(config, tracker=tracker, quiet=True)
    Image.new("L", (40, 40), 0).save(tmp_path / "x.png")
    code, _, err = run_cli(capsys, "predict", "--run", tracker.run_id, "--tracking-uri", tracking_uri,
                           tmp_path / "x.png")
    assert code == 2 and "addition model; predict needs an MNIST model" in err
    code, _, err = run_cli(capsys, "predict", "--run", "0" * 32, "--tracking-uri", tracking_uri, tmp_path / "x.png")
    assert code == 2 and "cannot load a checkpoint" in err and len(err.strip().splitlines()) == 1


def test_committed_digit_files_run_through_the_pipeline(digit_run, capsys):
    """The real-MNIST test files (black on white, 40..400 px, off-centre) are small, labelled and readable."""
    run_id, uri, _ = digit_run
    files = sorted(DIGITS.glob("*.png"))
    assert len(files) >= 40 and sum(f.stat().st_size for f in files) < 1_000_000
    assert {label_from_name(f) for f in files} == set(range(10))
    for f in files:
        assert load_image(f).shape[0] >= 40 and np.median(load_image(f)) > 200  # dark ink on light paper
    code, out, _ = run_cli(capsys, "predict", "--run", run_id, "--tracking-uri", uri, "--json", *files)
    assert code == 0 and len(json.loads(out)) == len(files)


def test_digits_section_draws_grid_and_confusion(digit_run, tmp_path):
    run_id, uri, data = digit_run
    figures = Figures(tmp_path / "figures")
    markdown = digits_markdown(load_snapshot(uri, timestamp=False), figures, count=12, task_data=data)
    assert run_id in markdown and "test accuracy" in markdown
    assert "figures/digits_grid.png" in markdown and "figures/digits_confusion.png" in markdown
    for name in ("digits_grid.png", "digits_confusion.png"):
        assert Image.open(tmp_path / "figures" / name).size[0] > 100
    assert figures.written == ["digits_grid.png", "digits_confusion.png"]
    empty = Snapshot(f"sqlite:///{tmp_path / 'empty.db'}", [], [], {}, "")
    assert digits_markdown(empty, Figures(tmp_path / "f2")).endswith("yet.\n")


def test_python_dash_m_predict_help():
    import subprocess

    result = subprocess.run([sys.executable, "-m", "benchmark", "predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--sheet" in result.stdout


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    digit = glyph(3).astype(np.uint16) * 257  # 0..65535
    path = tmp_path / "three16.png"
    Image.fromarray(digit).save(path)  # uint16 -> a 16-bit grayscale PNG
    assert Image.open(path).mode == "I;16"
    loaded = load_image(path)
    assert loaded.max() == pytest.approx(255.0) and loaded.min() == 0.0
    assert np.abs(loaded - glyph(3)).max() < 1.0  # the same picture as its 8-bit original
    assert (preprocess(loaded).float() - preprocess(glyph(3)).float()).abs().mean() < 1.0


def test_a_huge_image_is_refused_in_one_line_without_decoding_it(tmp_path, monkeypatch):
    from PIL import ImageFile

    path, edge = tmp_path / "huge.png", tmp_path / "edge.png"
    Image.new("L", (14000, 14000), 0).save(path, optimize=False)
    Image.new("L", (4096, 2), 0).save(edge)  # exactly the limit: read
    decoded, real_load = [], ImageFile.ImageFile.load

    def counting_load(image):
        decoded.append(image.size)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    assert load_image(edge).shape == (2, 4096) and decoded  # reading pixels goes through load: the spy sees it
    decoded.clear()
    with pytest.raises(ImageError, match=r"huge.png: 14000x14000 pixels is larger than the 4096x4096"):
        load_image(path)
    assert decoded == []


def test_a_huge_image_does_not_stop_the_others(digit_run, tmp_path, capsys):
    huge, good = tmp_path / "huge.png", tmp_path / "7_good.png"
    Image.new("L", (14000, 14000), 0).save(huge)
    Image.fromarray(glyph(7)).save(good)
    run_id, uri, _ = digit_run
    code = cli.main(["predict", "--run", run_id, "--tracking-uri", uri, str(huge), str(good)])
    out, err = capsys.readouterr()
    assert code == 1 and "7_good.png" in out
    assert err.count("\n") == 1 and "huge.png: 14000x14000 pixels" in err
