"""MNIST read row by row: 28 steps of 28 pixels, classified from the final state.

Example: rnnbench train --task mnist --arch lstm --epochs 10

The 60k training images are split 50k/10k into train/validation by a
permutation seeded with ``config.seed`` (``config.val_size`` keeps the first
part of the 10k); the official 10k test set is used only to report the chosen
model. All images stay in memory once, as uint8 on the device; a batch is one
index + one fused scale-and-standardise, no per-image work.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from ..losses import CLASS_LOSSES
from . import PIXEL_MEAN, PIXEL_STD
from .base import Batch

VALIDATION_FRACTION = 1 / 6  # 10k of the 60k training images
EVAL_BATCH = 5000


class MnistTask:
    name = "mnist"
    input_size = 28
    output_size = 10
    readout = "last"
    eval_batch = EVAL_BATCH  # images per evaluation forward pass

    def __init__(self, config, device, *, train_images: Tensor | None = None, train_labels: Tensor | None = None,
                 test_images: Tensor | None = None, test_labels: Tensor | None = None, data_dir=None,
                 digest: str | None = None):
        if train_images is None:
            loaded = self.load_data(data_dir)
            digest = loaded["digest"]
            train_images, train_labels = loaded["train_images"], loaded["train_labels"]
            test_images, test_labels = loaded["test_images"], loaded["test_labels"]
        self.device = torch.device(device)
        self.input_scale = config.input_scale
        # ``load_data`` hands its digest on: a study's trials share one loading and need not hash 55 MB each.
        self.content_md5 = digest or content_md5(train_images, train_labels, test_images, test_labels)
        self.subset = config.train_size
        self.split_seed = config.seed
        split = torch.Generator().manual_seed(config.seed)
        order = torch.randperm(len(train_images), generator=split)
        n_val = round(len(train_images) * VALIDATION_FRACTION)
        train_index, val_index = order[n_val:], order[:n_val]
        if config.train_size:
            train_index = train_index[: config.train_size]
        if config.val_size:
            val_index = val_index[: config.val_size]
        self.splits = {
            "train": self._to_device(train_images[train_index], train_labels[train_index]),
            "val": self._to_device(train_images[val_index], train_labels[val_index]),
            "test": self._to_device(test_images, test_labels),
        }

    @staticmethod
    def load_data(data_dir=None) -> dict:
        """The MNIST images and labels as uint8 / int64 tensors, from ``data_dir`` or the default data folder, and
        their ``digest`` (``content_md5``)."""
        from ..data import load_mnist  # torchvision: only when no preloaded tensors are given

        data = load_mnist(str(data_dir) if data_dir else None)
        keys = ("train_images", "train_labels", "test_images", "test_labels")
        return {**data, "digest": content_md5(*(data[key] for key in keys))}

    def dataset(self) -> dict:
        """The run's dataset input: the images' md5 and the split sizes; a training subset is in the name."""
        sizes = {split: len(labels) for split, (_, labels) in self.splits.items()}
        return {"name": self.name + (f"-train{sizes['train']}" if self.subset else ""), "digest": self.content_md5,
                "source": "benchmark.data.load_mnist",
                "profile": {"md5": self.content_md5, **sizes, "split_seed": self.split_seed,
                            "validation": "seeded split of the 60k training set"}}

    def _to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return images.to(self.device, torch.uint8).contiguous(), labels.to(self.device, torch.int64)

    @property
    def train_size(self) -> int:
        return len(self.splits["train"][1])

    @staticmethod
    def as_input(images: Tensor, scale: str = "standard") -> Tensor:
        """uint8 [B, 28, 28] -> float [B, 28 steps, 28 features].

        ``unit``: pixels in [0, 1], as torchvision's ToTensor (the notebook) gives them. ``standard`` (the
        default): then standardised with the training set's mean and std, as torchvision's own MNIST
        examples do. Centred inputs matter for the tanh RNN: on the notebook's configuration it reached
        91.8 % / 94.2 % test accuracy (seeds 0 / 1) on [0, 1] pixels and 96.0 % (seed 0) standardised.
        """
        x = images.float().div_(255.0)
        return x.sub_(PIXEL_MEAN).div_(PIXEL_STD) if scale == "standard" else x

    def train_batches(self, batch_size: int, generator: torch.Generator):
        images, labels = self.splits["train"]
        order = torch.randperm(len(labels), generator=generator).to(self.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield Batch(self.as_input(images[index], self.input_scale), labels[index])

    def loss(self, name: str, logits: Tensor, batch: Batch):
        return CLASS_LOSSES[name](logits, batch.y)

    @torch.no_grad()
    def predict(self, model, split: str) -> tuple[Tensor, Tensor]:
        """Class probabilities [N, 10] and labels [N] of a split, in its stored order."""
        model.eval()
        images, labels = self.splits[split]
        probs = [model(self.as_input(images[i:i + self.eval_batch], self.input_scale)).softmax(-1)
                 for i in range(0, len(labels), self.eval_batch)]
        return torch.cat(probs), labels

    @torch.no_grad()
    def evaluate(self, model, split: str, loss_name: str) -> dict:
        model.eval()
        images, labels = self.splits[split]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for start in range(0, len(labels), self.eval_batch):
            chunk = slice(start, start + self.eval_batch)
            batch = Batch(self.as_input(images[chunk], self.input_scale), labels[chunk])
            logits = model(batch.x)
            loss_sum += self.loss(loss_name, logits, batch)[0]
            correct += (logits.argmax(-1) == batch.y).sum()
        n = max(len(labels), 1)
        return {"loss": loss_sum.item() / n, "acc": correct.item() / n}


def content_md5(*tensors: Tensor) -> str:
    """md5 of the tensors' bytes: the same images and labels give the same digest, however they were loaded."""
    digest = hashlib.md5()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
