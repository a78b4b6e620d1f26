"""Make tests/data/digits/: real MNIST test digits drawn black on white, 40..400 px, off-centre.

Example: RNNBENCH_DATA=data python tests/data/make_digits.py --count 50

Each file is ``<label>_<test index>.png``: the MNIST test image with that index,
inverted to dark ink on light paper (paper and ink shades vary a little), scaled
to a random size in 40..400 px and pasted at a random off-centre spot on a
larger canvas. The index lets a check feed the same digit MNIST-style (28x28,
white on black) for comparison. Seeded, so the files are reproducible.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5179)
    parser.add_argument("--out", default=str(Path(__file__).parent / "digits"))
    args = parser.parse_args()

    from benchmark.data import load_mnist

    data = load_mnist()
    images, labels = data["test_images"], data["test_labels"]
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index in rng.sample(range(len(labels)), args.count):
        size = rng.randint(40, 400)
        paper, ink = rng.randint(215, 255), rng.randint(0, 60)
        digit = Image.fromarray(images[index].numpy()).resize((size, size), Image.Resampling.BICUBIC)
        # white-on-black 0..255 -> ink..paper, dark on light
        digit = digit.point(lambda v, p=paper, k=ink: round(p - (p - k) * v / 255))
        width, height = size + rng.randint(size // 3, size), size + rng.randint(size // 3, size)
        canvas = Image.new("L", (width, height), paper)
        # Off-centre: the digit sits in one corner region of the canvas, never in the middle.
        left = rng.choice([rng.randint(0, (width - size) // 4), rng.randint(3 * (width - size) // 4, width - size)])
        top = rng.randint(0, height - size)
        canvas.paste(digit, (left, top))
        canvas.save(out / f"{int(labels[index])}_{index:05d}.png", optimize=True)
    total = sum(p.stat().st_size for p in out.glob("*.png"))
    print(f"{args.count} digits in {out}, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
