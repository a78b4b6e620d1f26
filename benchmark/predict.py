"""Classify your own digit images with a trained MNIST model, preprocessed the way MNIST was made.

Example: rnnbench predict --model mnist-lstm@champion --sheet sheet.png photos/*.png

MNIST digits are white on black, size-normalised so the ink fits a 20x20 box
(aspect ratio kept, antialiased) and placed in a 28x28 field with the ink's
centre of mass at the centre. ``preprocess`` does the same to any picture:
grayscale (transparency composited onto white), invert when the background is
light (decided from the border pixels), stretch the ink to the full 0..255
range, crop to the ink's bounding box, scale the longer side to 20 px, and
paste centred on the centre of mass. The result is uint8 [28, 28], the dtype
``MnistTask`` stores, so the model sees exactly what ``MnistTask.as_input``
makes of the training images. The notebook skipped all of this (it fed raw
black-on-white photos to a model trained on white-on-black digits) and read
every image as "4".
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .champion import resolve_model
from .checkpoint import load_run_checkpoint
from .config import ConfigError
from .registry import task_record
from .tasks.mnist import MnistTask

BOX = 20  # MNIST's size-normalisation box
FIELD = 28
INK_THRESHOLD = 0.2  # fraction of the ink's contrast above which a pixel counts for the bounding box


class ImageError(ValueError):
    """An input that cannot be classified; the message names the file and the problem."""


@dataclass
class Prediction:
    file: str
    digit: int
    probability: float
    probabilities: list[float]
    label: int | None  # the true digit when the file name starts with one

    @property
    def correct(self) -> bool | None:
        return None if self.label is None else self.label == self.digit


MAX_SIDE = 4096  # larger pictures are refused before they are decoded: a digit needs 28x28, memory stays bounded


@contextlib.contextmanager
def _header_only(Image):
    """Opening reads only the header, so PIL's decompression-bomb guard can wait for MAX_SIDE's own check."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def load_image(path) -> np.ndarray:
    """Grayscale float array in [0, 255]; transparent pixels count as white paper; 16-bit grays are scaled."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _header_only(Image), Image.open(path) as image:
            if max(image.size) > MAX_SIDE:  # the header alone gives the size: nothing is decoded yet
                width, height = image.size
                raise ImageError(f"{path}: {width}x{height} pixels is larger than the {MAX_SIDE}x{MAX_SIDE} predict "
                                 "reads; scale it down first (a digit needs only 28x28)")
            image.load()
            if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                # PIL's convert("L") clips 16-bit values at 255, so a real digit would become a white page.
                return np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, rgba)
            gray = image.convert("L")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    return np.asarray(gray, dtype=np.float64)


def preprocess(image, source: str = "image") -> torch.Tensor:
    """Any grayscale picture of one digit (array or PIL image) -> uint8 [28, 28], white ink on black."""
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ImageError(f"{source}: expected a 2-D grayscale image, got shape {pixels.shape}")
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if np.median(border) > 127:  # light paper, dark ink: MNIST is the other way round
        pixels = 255.0 - pixels
        border = 255.0 - border
    background, peak = np.median(border), pixels.max()
    if peak - background < 10:
        raise ImageError(f"{source}: no digit found (the image is almost uniform)")
    ink = np.clip((pixels - background) / (peak - background), 0.0, 1.0)  # paper 0, strongest ink 1
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(np.round(ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(resized, dtype=np.float64)
    # Centre of mass in pixel-centre coordinates, moved to the field's centre (14, 14) like MNIST.
    total = digit.sum()
    ys, xs = np.indices(digit.shape)
    com_y = (ys * digit).sum() / total if total else digit.shape[0] / 2
    com_x = (xs * digit).sum() / total if total else digit.shape[1] / 2
    top, left = int(round(FIELD / 2 - com_y)), int(round(FIELD / 2 - com_x))
    # Keep the whole digit inside the field even when its mass is far off its box's centre.
    top = min(max(top, 0), FIELD - digit.shape[0])
    left = min(max(left, 0), FIELD - digit.shape[1])
    field = np.zeros((FIELD, FIELD))
    field[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return torch.from_numpy(np.clip(np.round(field), 0, 255).astype(np.uint8))


def label_from_name(path) -> int | None:
    name = Path(path).name
    return int(name[0]) if name[:1].isdigit() else None


def load_model(*, run_id: str | None = None, model: str | None = None, tracking_uri: str | None = None):
    """The MNIST model of a run, or of a registered model ``name[@alias|/version]``; returns (model, config)."""
    if model:
        run_id = resolve_model(model, tracking_uri)["run_id"]
    try:
        network, config = load_run_checkpoint(run_id, tracking_uri)
    except ConfigError:
        raise
    except Exception as error:  # MLflow raises several types for a missing run or artifact
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ConfigError(f"cannot load a checkpoint from run {run_id!r} ({type(error).__name__}: {first_line}); "
                          "check --run / --tracking-uri") from None
    if not task_record(config.task).pixel_rows:
        raise ConfigError(f"run {run_id} is a {config.task} model; predict needs an MNIST model")
    return network, config


@torch.no_grad()
def classify(network, images: torch.Tensor, input_scale: str = "standard") -> torch.Tensor:
    """uint8 [N, 28, 28] -> class probabilities [N, 10], through the same scaling as training."""
    network.eval()
    device = next(network.parameters()).device
    inputs = MnistTask.as_input(images.to(device), input_scale)
    return network(inputs).softmax(-1).cpu()


def predict_files(network, paths, input_scale: str = "standard"
                  ) -> tuple[list[Prediction], list[torch.Tensor], list[str]]:
    """Predictions for the readable files, their 28x28 inputs, and one error line per unreadable one."""
    predictions, inputs, errors, kept = [], [], [], []
    for path in paths:
        try:
            inputs.append(preprocess(load_image(path), str(path)))
            kept.append(path)
        except ImageError as error:
            errors.append(str(error))
    if inputs:
        probs = classify(network, torch.stack(inputs), input_scale)
        for path, row in zip(kept, probs, strict=True):
            digit = int(row.argmax())
            rounded = [round(float(p), 6) for p in row]
            predictions.append(Prediction(str(path), digit, rounded[digit], rounded, label_from_name(path)))
    return predictions, inputs, errors


def contact_sheet_figure(predictions: list[Prediction], inputs: list[torch.Tensor], columns: int = 10,
                         title: str | None = None):
    """Each input as the model sees it, titled with the prediction (and the true label, red when wrong)."""
    from .plots import figure  # matplotlib: only a contact sheet draws

    n = max(len(inputs), 1)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = figure(rows, columns, figsize=(max(1.3 * columns, 4.5), 1.6 * rows + (0.5 if title else 0)),
                       squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, prediction, image in zip(axes.flat, predictions, inputs, strict=False):
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=255)
        caption = f"{prediction.digit} ({prediction.probability:.2f})"
        if prediction.label is not None:
            caption += f"\ntrue {prediction.label}"
        ax.set_title(caption, fontsize=8, color="tab:red" if prediction.correct is False else "black")
    if title:
        from .plots import suptitle

        suptitle(fig, title, size=10)
    return fig


def contact_sheet(predictions: list[Prediction], inputs: list[torch.Tensor], path, columns: int = 10,
                  title: str | None = None) -> None:
    """``contact_sheet_figure`` saved as a PNG at ``path``."""
    from .plots import save_figure  # matplotlib, likewise

    save_figure(contact_sheet_figure(predictions, inputs, columns, title), path)


def run(paths, *, run_id=None, model=None, tracking_uri=None, as_json=False, sheet=None, out=None, err=None) -> int:
    """The ``rnnbench predict`` command: 0 when every file was classified, 1 when any could not be."""
    out, err = out or sys.stdout, err or sys.stderr
    network, config = load_model(run_id=run_id, model=model, tracking_uri=tracking_uri)
    predictions, inputs, errors = predict_files(network, paths, config.input_scale)
    for line in errors:
        print(f"rnnbench predict: {line}", file=err)
    if as_json:
        print(json.dumps([asdict(p) for p in predictions], indent=1), file=out)
    else:
        width = max((len(p.file) for p in predictions), default=0)
        for p in predictions:
            extra = "" if p.label is None else f"  (true {p.label}{'' if p.correct else ', WRONG'})"
            print(f"{p.file:<{width}}  {p.digit}  {p.probability:.4f}{extra}", file=out)
    if sheet and predictions:
        source = f"run {run_id[:8]}" if run_id else f"model {model}" if model else "the best MNIST run"
        contact_sheet(predictions, inputs, sheet, title=f"{config.arch} trained on MNIST ({source}): predicted "
                      "digit (probability)")
    return 1 if errors else 0
