"""Frozen configuration for one training run, validated before anything runs.

Example: rnnbench train --task addition --arch lstm --hidden-size 10 --lr 0.01

Every field is logged as an MLflow param and stored in checkpoints, so a run can
be rebuilt from the tracking store alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .catalog import (
    ADDITION_EVAL_LENGTHS,
    ARCHITECTURES,
    DEVICES,
    IMPLS,
    INPUT_SCALES,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    TASKS,
)
from .errors import ConfigError
from .registry import task_record


@dataclass(frozen=True)
class TrainConfig:
    task: str
    arch: str
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    loss: str = "ce"
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 500
    seed: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    clip_grad: float = 0.0  # max gradient norm; 0 disables clipping
    early_stop: int = 0  # stop after this many epochs without validation improvement; 0 disables
    train_size: int = 0  # 0 = the task's whole training set (mnist) or its default (addition)
    # 0 = the whole validation split; else its first val_size examples, where the task holds a split of data (MNIST
    # and its pixel forms): a search's cheap trials, as Optuna's own PyTorch example validates on 1,280 images.
    val_size: int = 0
    train_lengths: tuple[int, ...] = ()  # addition: lengths to train on; () = 1..20
    max_train_length: int = 20
    eval_lengths: tuple[int, ...] = ADDITION_EVAL_LENGTHS  # addition: generalisation lengths tested
    input_scale: str = "standard"  # mnist: "standard" (mean/std) or "unit" ([0, 1], the notebook's ToTensor)
    impl: str = "auto"
    device: str = "auto"
    threads: int = 0  # torch threads; 0 leaves torch's default

    @classmethod
    def for_task(cls, task: str, arch: str, **overrides: Any) -> TrainConfig:
        """A config with the task's defaults (its record's), overridden by every non-None keyword."""
        values = dict(task_record(task).defaults)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(field_names())}")
        for name in ("train_lengths", "eval_lengths"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        config = cls(task=task, arch=arch, **values)
        config.validate()
        return config

    def validate(self) -> None:
        _choice("task", self.task, TASKS)
        _choice("arch", self.arch, ARCHITECTURES)
        _choice("loss", self.loss, LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("impl", self.impl, IMPLS)
        _choice("input_scale", self.input_scale, INPUT_SCALES)
        _choice("device", self.device, DEVICES)
        _positive("hidden_size", self.hidden_size)
        _positive("num_layers", self.num_layers)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("max_train_length", self.max_train_length)
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}; try 1e-3")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("weight_decay", "clip_grad", "early_stop", "train_size", "val_size", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("train_lengths", "eval_lengths"):
            bad = [n for n in getattr(self, name) if n < 1]
            if bad:
                raise ConfigError(f"{name} must be positive lengths, got {bad}")

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow (tuples as comma lists)."""
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in self.as_dict().items()}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in known}
        return cls(**values)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> TrainConfig:
        """The inverse of ``to_params``: a config from a run's MLflow params (unknown keys ignored)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in params:
                continue
            text = params[f.name]
            if f.type in ("int", int):
                values[f.name] = int(text)
            elif f.type in ("float", float):
                values[f.name] = float(text)
            elif str(f.type).startswith("tuple"):
                values[f.name] = tuple(int(v) for v in text.split(",") if v.strip())
            else:
                values[f.name] = text
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _choice(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


__all__ = ["ConfigError", "TrainConfig"]
