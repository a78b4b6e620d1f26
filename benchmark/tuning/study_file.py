"""Study files: a search space, fixed settings, budget, sampler and pruner as TOML data.

Example: rnnbench tune studies/mnist.toml --arch lstm --preset quick

One file per task. Layers are merged in this order, later ones winning:
the top level, ``[arch.<arch>]``, ``[presets.<preset>]``, ``[presets.<preset>.arch.<arch>]``.
Each layer may hold these tables (all optional except ``task`` at the top):

- ``[space]``   ``name = {type = "int"|"float"|"categorical", low, high, step, log, choices}``
  over TrainConfig fields (searched); a field put in ``[fixed]`` by a later layer leaves the space.
- ``[fixed]``   any TrainConfig field except task/arch/epochs (``epochs`` is budget).
- ``[budget]``  ``trials`` (finished trials the study should hold), ``epochs`` (per trial),
  ``timeout`` (seconds per session, 0 = none), ``train_size`` (training examples, 0 = task default).
- ``[confirm]`` ``seeds`` (after the study, retrain its best configuration with this many fresh
  seeds; 0 = none), ``epochs`` (train those seeds longer than the trials; 0 = as the trial),
  ``train_size`` (their training examples, 0 = all; default as the trial) and,
  addition only, ``train_lengths`` (also retrain it on each single length, the notebook's
  fixed-length experiments); see ``benchmark.confirm``.
- ``[sampler]`` ``type = "tpe"|"random"``, ``seed``, ``n_startup_trials``, ``multivariate``.
- ``[pruner]``  ``type = "median"`` (``n_startup_trials``, ``n_warmup_steps``, ``interval_steps``),
  ``"hyperband"`` (``min_resource``, ``reduction_factor``), ``"successive_halving"`` (Hyperband's
  most aggressive bracket alone: ``min_resource``, ``reduction_factor``, ``min_early_stopping_rate``)
  or ``"none"``; a layer naming a ``type`` replaces the whole pruner table.

``parse_study_file`` checks every preset x architecture of a file up front: an unknown
key, a wrong type or an empty range is one ``StudyFileError`` line
``FILE:LINE: KEY: reason``, before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import ARCHITECTURES, PRESETS, TASKS
from ..config import ConfigError, TrainConfig
from ..registry import task_record
from .study_checks import LAYER_KEYS, Failer, StudyFileError, check_layer, table_at


@dataclass(frozen=True)
class Param:
    """One search-space entry."""

    name: str
    kind: str  # int | float | categorical
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        """This parameter's value for an Optuna ``trial``: the one place the space becomes suggest_* calls."""
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        scale = " log" if self.log else ""
        step = f" step {self.step}" if self.step else ""
        return f"{self.kind}[{self.low}, {self.high}]{scale}{step}"


@dataclass(frozen=True)
class StudySpec:
    """Everything one study (task x architecture x preset) needs, validated."""

    path: str
    task: str
    arch: str
    preset: str
    space: tuple[Param, ...]
    fixed: tuple[tuple[str, Any], ...]
    trials: int
    epochs: int
    timeout: float  # seconds per session; 0 = none
    sampler: tuple[tuple[str, Any], ...]  # ("type", "tpe"), ("seed", 0), ...
    pruner: tuple[tuple[str, Any], ...]
    confirm_seeds: int = 0  # fresh-seed retrains of the best trial after the study (bench runs them)
    confirm_lengths: tuple[int, ...] = ()  # addition: also retrain the best trial on each single length
    confirm_epochs: int = 0  # epochs of those retrains; 0 = the trial's
    confirm_train_size: int | None = None  # their training examples; None = the trial's, 0 = all

    @property
    def fixed_dict(self) -> dict[str, Any]:
        return dict(self.fixed)

    @property
    def sampler_dict(self) -> dict[str, Any]:
        return dict(self.sampler)

    @property
    def pruner_dict(self) -> dict[str, Any]:
        return dict(self.pruner)

    def default_study_name(self) -> str:
        return f"{self.task}-{self.arch}-{self.preset}"

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "arch": self.arch, "preset": self.preset,
                "space": {p.name: p.describe() for p in self.space}, "fixed": self.fixed_dict,
                "trials": self.trials, "epochs": self.epochs, "timeout": self.timeout,
                "sampler": self.sampler_dict, "pruner": self.pruner_dict,
                "confirm": {"seeds": self.confirm_seeds, "epochs": self.confirm_epochs,
                            "train_size": self.confirm_train_size,
                            "train_lengths": list(self.confirm_lengths)}}

    def fingerprint(self) -> str:
        """Identifies what the trials mean (space, fixed settings, epochs), not the session budget."""
        fixed = self.fixed_dict
        defaults = task_record(self.task).defaults
        if "eval_lengths" in defaults and "eval_lengths" not in fixed:
            # The shipped file once spelled out the default lengths: the same trials keep the same fingerprint.
            fixed = {**fixed, "eval_lengths": tuple(defaults["eval_lengths"])}
        meaning = {"task": self.task, "arch": self.arch, "space": [dataclasses.asdict(p) for p in self.space],
                   "fixed": fixed, "epochs": self.epochs}
        return hashlib.sha256(json.dumps(meaning, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def with_budget(self, trials: int | None = None, timeout: float | None = None) -> StudySpec:
        changes = {k: v for k, v in {"trials": trials, "timeout": timeout}.items() if v is not None}
        if changes.get("trials", 1) < 1:
            raise ConfigError(f"--trials must be >= 1, got {trials}")
        if changes.get("timeout", 0) < 0:
            raise ConfigError(f"--timeout must be >= 0 seconds, got {timeout}")
        return dataclasses.replace(self, **changes)

    def train_config(self, values: dict[str, Any]) -> TrainConfig:
        """The trial's config: fixed settings, then the sampled values, then the epoch budget."""
        return TrainConfig.for_task(self.task, self.arch, **{**self.fixed_dict, **values, "epochs": self.epochs})


def spec_mismatch(study_name: str) -> ConfigError:
    """The error for resuming a study from a file whose trials would mean something else."""
    return ConfigError(f"study {study_name!r} was created from a different search space, fixed settings or epochs; "
                       "start a new one with --study-name NAME (or delete it)")


def load_study(path: str | Path, arch: str, preset: str = "quick") -> StudySpec:
    """The spec for one architecture and preset; the whole file is validated first."""
    specs = parse_study_file(path)
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return specs[(arch, preset)]


def parse_study_file(path: str | Path) -> dict[tuple[str, str], StudySpec]:
    """Every (arch, preset) spec of a study file, or one StudyFileError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read study file {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # Python 3.11's tomllib puts the position in the message only: "... (at line 3, column 5)".
        reason, at = re.match(r"(.*?)(?: \(at line (\d+), column (\d+)\))?$", str(error)).group(1, 2)
        raise StudyFileError(f"{path}:{at or 1}: invalid TOML: {reason}") from None
    fail = Failer(path, text)

    allowed_top = LAYER_KEYS | {"task", "description", "arch", "presets"}
    for key in data:
        if key not in allowed_top:
            fail((key,), f"unknown key; valid: {', '.join(sorted(allowed_top))}")
    if "task" not in data:
        fail((), f"missing 'task' ({', '.join(TASKS)})")
    task = data["task"]
    if task not in TASKS:
        fail(("task",), f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if not isinstance(data.get("description", ""), str):
        fail(("description",), "must be a string")

    base = {k: data[k] for k in LAYER_KEYS if k in data}
    check_layer(fail, (), base)
    arch_layers = table_at(fail, data, ("arch",))
    for arch in arch_layers:
        if arch not in ARCHITECTURES:
            fail(("arch", arch), f"unknown architecture; valid: {', '.join(ARCHITECTURES)}")
        check_layer(fail, ("arch", arch), table_at(fail, arch_layers, (arch,), ("arch",)))
    presets = table_at(fail, data, ("presets",))
    for name in PRESETS:
        if name not in presets:
            fail(("presets",), f"missing preset [presets.{name}]; every file defines {', '.join(PRESETS)}")
    for name, layer in presets.items():
        if name not in PRESETS:
            fail(("presets", name), f"unknown preset; valid: {', '.join(PRESETS)}")
        layer = table_at(fail, presets, (name,), ("presets",))
        for key in layer:
            if key not in LAYER_KEYS | {"arch"}:
                fail(("presets", name, key), f"unknown key; valid: {', '.join(sorted(LAYER_KEYS | {'arch'}))}")
        check_layer(fail, ("presets", name), {k: v for k, v in layer.items() if k != "arch"})
        for arch, sub in table_at(fail, layer, ("arch",), ("presets", name)).items():
            if arch not in ARCHITECTURES:
                fail(("presets", name, "arch", arch), f"unknown architecture; valid: {', '.join(ARCHITECTURES)}")
            check_layer(fail, ("presets", name, "arch", arch), sub)

    specs = {}
    for arch in ARCHITECTURES:
        for preset in PRESETS:
            layers = [((), base), (("arch", arch), arch_layers.get(arch, {})),
                      (("presets", preset), {k: v for k, v in presets[preset].items() if k != "arch"}),
                      (("presets", preset, "arch", arch), presets[preset].get("arch", {}).get(arch, {}))]
            specs[(arch, preset)] = _build(fail, str(path), task, arch, preset, layers)
    return specs


def _build(fail, path: str, task: str, arch: str, preset: str, layers: list) -> StudySpec:
    space: dict[str, tuple[tuple, dict]] = {}
    fixed: dict[str, tuple[tuple, Any]] = {}
    budget: dict[str, tuple[tuple, Any]] = {}
    sampler: dict[str, Any] = {"type": "tpe"}
    pruner: dict[str, Any] = {"type": "none"}
    confirm: dict[str, tuple[tuple, Any]] = {}
    for where, layer in layers:
        for name, value in layer.get("confirm", {}).items():
            confirm[name] = (where + ("confirm", name), value)
        for name, entry in layer.get("space", {}).items():
            space[name] = (where + ("space", name), entry)
            fixed.pop(name, None)
        for name, value in layer.get("fixed", {}).items():
            fixed[name] = (where + ("fixed", name), value)
            space.pop(name, None)
        for name, value in layer.get("budget", {}).items():
            budget[name] = (where + ("budget", name), value)
        sampler.update(layer.get("sampler", {}))
        if "pruner" in layer:
            pruner = dict(layer["pruner"]) if "type" in layer["pruner"] else {**pruner, **layer["pruner"]}
    for name in ("trials", "epochs"):
        if name not in budget:
            fail(("presets", preset),
                 f"no budget.{name} for preset {preset} (arch {arch}); add it under [presets.{preset}.budget]")
    fixed_values = {name: tuple(value) if isinstance(value, list) else value for name, (_, value) in fixed.items()}
    if "train_size" in budget:
        fixed_values["train_size"] = budget["train_size"][1]
    epochs = budget["epochs"][1]
    # Every fixed setting and every end of every range must make a valid TrainConfig.
    try:
        TrainConfig.for_task(task, arch, **fixed_values, epochs=epochs)
    except ConfigError as error:
        culprit = next((k for k, (_, v) in fixed.items() if str(v) in str(error) or k in str(error)), None)
        fail(fixed[culprit][0] if culprit else ("presets", preset), str(error))
    params = []
    for name, (key, entry) in space.items():
        values = entry["choices"] if entry["type"] == "categorical" else [entry["low"], entry["high"]]
        for value in values:
            try:
                TrainConfig.for_task(task, arch, **{**fixed_values, name: value}, epochs=epochs)
            except ConfigError as error:
                fail(key, f"value {value!r} is invalid: {error}")
        params.append(Param(name, entry["type"], entry.get("low"), entry.get("high"), entry.get("step"),
                            entry.get("log", False), tuple(entry.get("choices", ()))))
    if "train_lengths" in confirm and confirm["train_lengths"][1] and not task_record(task).per_length:
        fail(confirm["train_lengths"][0], f"only a task scored per length trains on chosen lengths, not {task}")
    if pruner["type"] == "median" and pruner.get("n_warmup_steps", 0) >= epochs:
        fail(("presets", preset, "pruner"), f"n_warmup_steps {pruner['n_warmup_steps']} >= epochs {epochs}: "
             "nothing could ever be pruned; lower n_warmup_steps")
    return StudySpec(path=path, task=task, arch=arch, preset=preset, space=tuple(params),
                     fixed=tuple(sorted(fixed_values.items())), trials=budget["trials"][1], epochs=epochs,
                     timeout=float(budget.get("timeout", (None, 0))[1]), sampler=tuple(sorted(sampler.items())),
                     pruner=tuple(sorted(pruner.items())), confirm_seeds=confirm.get("seeds", (None, 0))[1],
                     confirm_lengths=tuple(confirm.get("train_lengths", (None, ()))[1]),
                     confirm_epochs=confirm.get("epochs", (None, 0))[1],
                     confirm_train_size=confirm.get("train_size", (None, None))[1])


def studies_dir() -> Path:
    """./studies when present (a checkout), else the one beside the package."""
    here = Path("studies")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "studies"


__all__ = ["Param", "PRESETS", "StudyFileError", "StudySpec", "load_study", "parse_study_file", "spec_mismatch",
           "studies_dir"]
