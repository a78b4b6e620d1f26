"""Pixel MNIST: 784 steps of one pixel, in raster order or in one fixed permutation, classified from the final state.

Example: rnnbench train --task permuted_pixel_mnist --arch indrnn --hidden-size 128

The long-sequence versions of MNIST rows (Le et al. 2015): the same images, the same seeded 50k/10k split of the
training set and the official 10k test set as ``mnist`` (``MnistTask``'s data handling, reused), read one pixel
per step. The permuted task shuffles the 784 pixels with one permutation drawn from ``permutation_seed``, the
same for every run, which breaks the local structure a raster scan leaves for the recurrence to exploit.
Both are registered, with their records, in ``benchmark/tasks/__init__.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mnist import MnistTask

PIXELS = 28 * 28


class PixelMnistTask(MnistTask):
    name = "pixel_mnist"
    input_size = 1
    eval_batch = 500  # 784 steps: the [B, T, H] outputs of 5000 images would take gigabytes

    def as_input(self, images: Tensor, scale: str = "standard") -> Tensor:
        """uint8 [B, 28, 28] -> float [B, 784 steps, 1 feature], scaled as ``MnistTask.as_input``."""
        return MnistTask.as_input(images, scale).reshape(len(images), PIXELS, 1)

    def run_params(self) -> dict[str, str]:
        """Settings of the task beyond the TrainConfig, to record with the run."""
        return {}


class PermutedPixelMnistTask(PixelMnistTask):
    name = "permuted_pixel_mnist"
    permutation_seed = 0

    def __init__(self, config, device, **data):
        super().__init__(config, device, **data)
        self.permutation = pixel_permutation(self.permutation_seed).to(self.device)

    def as_input(self, images: Tensor, scale: str = "standard") -> Tensor:
        return super().as_input(images, scale)[:, self.permutation]

    def run_params(self) -> dict[str, str]:
        return {"permutation_seed": str(self.permutation_seed)}


def pixel_permutation(seed: int) -> Tensor:
    """The order in which the permuted task reads the pixels: int64 [784], drawn on the CPU from ``seed``."""
    return torch.randperm(PIXELS, generator=torch.Generator().manual_seed(seed))
