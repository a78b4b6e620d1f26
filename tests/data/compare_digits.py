"""Accuracy of a model on tests/data/digits/ (black on white, 40..400 px, off-centre) vs the same MNIST digits.

Example: RNNBENCH_DATA=data python tests/data/compare_digits.py --model mnist-lstm@champion

Each file ``<label>_<test index>.png`` is classified through ``rnnbench predict``'s
pipeline; the MNIST test image with that index is classified as it is (28x28,
white on black). Prints both accuracies and the files where they disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", dest="run_id")
    source.add_argument("--model")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--folder", default=str(Path(__file__).parent / "digits"))
    parser.add_argument("--sheet", help="also write a contact sheet of the preprocessed files")
    args = parser.parse_args()

    from benchmark.data import load_mnist
    from benchmark.predict import classify, contact_sheet, load_model, predict_files

    network, config = load_model(run_id=args.run_id, model=args.model, tracking_uri=args.tracking_uri)
    files = sorted(Path(args.folder).glob("*.png"))
    predictions, inputs, errors = predict_files(network, files, config.input_scale)
    assert not errors, errors
    test_images = load_mnist()["test_images"]
    indices = [int(f.stem.split("_")[1]) for f in files]
    originals = classify(network, test_images[indices], config.input_scale).argmax(-1)
    labels = torch.tensor([p.label for p in predictions])
    ours = torch.tensor([p.digit for p in predictions])
    print(f"model {args.run_id or args.model}, {len(files)} digits")
    print(f"drawn black on white, 40..400 px, off-centre, via predict: {int((ours == labels).sum())}/{len(files)}"
          f" = {100 * float((ours == labels).float().mean()):.1f}%")
    print(f"same digits MNIST-style 28x28 white on black:              {int((originals == labels).sum())}/"
          f"{len(files)} = {100 * float((originals == labels).float().mean()):.1f}%")
    for f, p, o in zip(files, predictions, originals, strict=True):
        if p.digit != p.label or int(o) != p.label:
            print(f"  {f.name}: true {p.label}, file -> {p.digit} ({p.probability:.2f}), MNIST original -> {int(o)}")
    if args.sheet:
        contact_sheet(predictions, inputs, args.sheet)


if __name__ == "__main__":
    main()
