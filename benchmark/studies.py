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
import math
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig, field_names

PRESETS = ("quick", "standard", "full")
SPACE_TYPES = ("int", "float", "categorical")
SAMPLERS = {"tpe": {"seed", "n_startup_trials", "multivariate"}, "random": {"seed"}}
PRUNERS = {
    "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
    "hyperband": {"min_resource", "reduction_factor"},
    "successive_halving": {"min_resource", "reduction_factor", "min_early_stopping_rate"},
    "none": set(),
}
BUDGET_KEYS = {"trials": int, "epochs": int, "timeout": float, "train_size": int}
CONFIRM_KEYS = {"seeds", "epochs", "train_size", "train_lengths"}
LAYER_KEYS = {"space", "fixed", "budget", "sampler", "pruner", "confirm"}
NOT_TUNABLE = {"task", "arch", "epochs"}  # set by the command and by the budget
ENTRY_KEYS = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
              "categorical": {"type", "choices"}}


class StudyFileError(ConfigError):
    """A bad study file: one line naming the file, line, key and reason."""


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
        meaning = {"task": self.task, "arch": self.arch, "space": [dataclasses.asdict(p) for p in self.space],
                   "fixed": self.fixed_dict, "epochs": self.epochs}
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


def load_study(path: str | Path, arch: str, preset: str = "quick") -> StudySpec:
    """The spec for one architecture and preset; the whole file is validated first."""
    specs = parse_study_file(path)
    from .models import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return specs[(arch, preset)]


def parse_study_file(path: str | Path) -> dict[tuple[str, str], StudySpec]:
    """Every (arch, preset) spec of a study file, or one StudyFileError line."""
    from .models import ARCHITECTURES
    from .tasks import TASKS

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read study file {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"{path}: invalid TOML: {error}") from None
    fail = _Failer(path, text)

    allowed_top = LAYER_KEYS | {"task", "description", "arch", "presets"}
    for key in data:
        if key not in allowed_top:
            fail((key,), f"unknown key; valid: {', '.join(sorted(allowed_top))}")
    if "task" not in data:
        fail((), "missing 'task' (mnist or addition)")
    task = data["task"]
    if task not in TASKS:
        fail(("task",), f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if not isinstance(data.get("description", ""), str):
        fail(("description",), "must be a string")

    base = {k: data[k] for k in LAYER_KEYS if k in data}
    _check_layer(fail, (), base)
    arch_layers = _table(fail, data, ("arch",))
    for arch in arch_layers:
        if arch not in ARCHITECTURES:
            fail(("arch", arch), f"unknown architecture; valid: {', '.join(ARCHITECTURES)}")
        _check_layer(fail, ("arch", arch), _table(fail, arch_layers, (arch,), ("arch",)))
    presets = _table(fail, data, ("presets",))
    for name in PRESETS:
        if name not in presets:
            fail(("presets",), f"missing preset [presets.{name}]; every file defines {', '.join(PRESETS)}")
    for name, layer in presets.items():
        if name not in PRESETS:
            fail(("presets", name), f"unknown preset; valid: {', '.join(PRESETS)}")
        layer = _table(fail, presets, (name,), ("presets",))
        for key in layer:
            if key not in LAYER_KEYS | {"arch"}:
                fail(("presets", name, key), f"unknown key; valid: {', '.join(sorted(LAYER_KEYS | {'arch'}))}")
        _check_layer(fail, ("presets", name), {k: v for k, v in layer.items() if k != "arch"})
        for arch, sub in _table(fail, layer, ("arch",), ("presets", name)).items():
            if arch not in ARCHITECTURES:
                fail(("presets", name, "arch", arch), f"unknown architecture; valid: {', '.join(ARCHITECTURES)}")
            _check_layer(fail, ("presets", name, "arch", arch), sub)

    specs = {}
    for arch in ARCHITECTURES:
        for preset in PRESETS:
            layers = [((), base), (("arch", arch), arch_layers.get(arch, {})),
                      (("presets", preset), {k: v for k, v in presets[preset].items() if k != "arch"}),
                      (("presets", preset, "arch", arch), presets[preset].get("arch", {}).get(arch, {}))]
            specs[(arch, preset)] = _build(fail, str(path), task, arch, preset, layers)
    return specs


class _Failer:
    """Raises StudyFileError with the line of the key, found by scanning the file text."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def __call__(self, key: tuple, reason: str) -> typing.NoReturn:
        line = find_line(self.lines, tuple(str(k) for k in key))
        name = ".".join(str(k) for k in key) or "(top level)"
        raise StudyFileError(f"{self.path}:{line}: {name}: {reason}")


def find_line(lines: list[str], key: tuple[str, ...]) -> int:
    """1-based line defining ``key`` (a dotted path): the key itself, else the first table or key below it
    (``[a.b.c]`` defines ``a.b``), else the closest enclosing one; 1 if none."""
    below, above, above_len = None, 1, -1
    table: tuple[str, ...] = ()
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            table = _dotted(line.strip("[]"))
            path = table
        elif "=" in line:
            path = table + _dotted(line.split("=", 1)[0])
            # Inline tables: `name = { type = "int", low = 1 }` also defines name.low.
            for part in line.split("=", 1)[1].strip().strip("{}").split(","):
                if "=" in part and path + _dotted(part.split("=", 1)[0]) == key:
                    return number
        else:
            continue
        if path == key:
            return number
        if below is None and path[: len(key)] == key:
            below = number
        if key[: len(path)] == path and len(path) > above_len:
            above, above_len = number, len(path)
    return below or above


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _table(fail, parent: dict, key: tuple, where: tuple = ()) -> dict:
    value = parent.get(key[0], {})
    if not isinstance(value, dict):
        fail(where + key, f"must be a table, got {type(value).__name__}")
    return value


def _check_layer(fail, where: tuple, layer: dict) -> None:
    """Types and keys of one layer; ranges are checked on the merged spec too."""
    for section in ("space", "fixed", "budget", "sampler", "pruner", "confirm"):
        if section in layer and not isinstance(layer[section], dict):
            fail(where + (section,), f"must be a table, got {type(layer[section]).__name__}")
    names = set(field_names())
    for name, entry in layer.get("space", {}).items():
        key = where + ("space", name)
        if name not in names or name in NOT_TUNABLE:
            fail(key, f"not a tunable TrainConfig field; valid: {', '.join(sorted(names - NOT_TUNABLE))}")
        _check_entry(fail, key, name, entry)
    for name, value in layer.get("fixed", {}).items():
        key = where + ("fixed", name)
        if name not in names or name in NOT_TUNABLE:
            hint = " (epochs goes in [budget])" if name == "epochs" else ""
            fail(key, f"not a settable TrainConfig field{hint}; valid: {', '.join(sorted(names - NOT_TUNABLE))}")
        _check_value(fail, key, name, value)
    for name, value in layer.get("budget", {}).items():
        key = where + ("budget", name)
        if name not in BUDGET_KEYS:
            fail(key, f"unknown budget key; valid: {', '.join(BUDGET_KEYS)}")
        _check_number(fail, key, value, BUDGET_KEYS[name])
        if value < (0 if name in ("timeout", "train_size") else 1):
            fail(key, f"must be {'>= 0' if name in ('timeout', 'train_size') else '>= 1'}, got {value}")
    for name, value in layer.get("confirm", {}).items():
        key = where + ("confirm", name)
        if name not in CONFIRM_KEYS:
            fail(key, f"unknown confirm key; valid: {', '.join(sorted(CONFIRM_KEYS))}")
        if name in ("seeds", "epochs", "train_size"):
            _check_number(fail, key, value, int)
            if value < 0:
                fail(key, f"must be >= 0, got {value}")
        elif not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                    for v in value):
            fail(key, f"must be a list of positive lengths such as [3, 5, 10], got {value!r}")
    sampler = layer.get("sampler", {})
    if sampler:
        kind = sampler.get("type", "tpe")
        if kind not in SAMPLERS:
            fail(where + ("sampler", "type"), f"unknown sampler {kind!r}; valid: {', '.join(SAMPLERS)}")
        for name, value in sampler.items():
            if name != "type" and name not in SAMPLERS[kind]:
                fail(where + ("sampler", name), f"unknown {kind} sampler setting; valid: type, "
                     f"{', '.join(sorted(SAMPLERS[kind]))}")
            if name == "multivariate":
                if not isinstance(value, bool):
                    fail(where + ("sampler", name), f"must be true or false, got {value!r}")
            elif name != "type":
                _check_number(fail, where + ("sampler", name), value, int)
                if value < 0:
                    fail(where + ("sampler", name), f"must be >= 0, got {value}")
    pruner = layer.get("pruner", {})
    if pruner:
        kind = pruner.get("type")
        if kind is None:
            fail(where + ("pruner",), f"needs a type: {', '.join(PRUNERS)}")
        if kind not in PRUNERS:
            fail(where + ("pruner", "type"), f"unknown pruner {kind!r}; valid: {', '.join(PRUNERS)}")
        for name, value in pruner.items():
            if name == "type":
                continue
            if name not in PRUNERS[kind]:
                fail(where + ("pruner", name), f"unknown {kind} pruner setting; valid: type"
                     + "".join(f", {k}" for k in sorted(PRUNERS[kind])))
            _check_number(fail, where + ("pruner", name), value, int)
            low = 2 if name == "reduction_factor" else 1 if name in ("interval_steps", "min_resource") else 0
            if value < low:
                fail(where + ("pruner", name), f"must be >= {low}, got {value}")


def _check_entry(fail, key: tuple, name: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        fail(key, 'must be an inline table such as {type = "float", low = 1e-4, high = 1e-2, log = true}')
    kind = entry.get("type")
    if kind not in SPACE_TYPES:
        fail(key + ("type",), f"must be one of {', '.join(SPACE_TYPES)}, got {kind!r}")
    for k in entry:
        if k not in ENTRY_KEYS[kind]:
            fail(key + (k,), f"unknown key for a {kind} entry; valid: {', '.join(sorted(ENTRY_KEYS[kind]))}")
    field_type = _field_type(name)
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            fail(key + ("choices",), "must be a non-empty list")
        for choice in choices:
            _check_value(fail, key + ("choices",), name, choice)
        if len(set(map(str, choices))) != len(choices):
            fail(key + ("choices",), "has duplicates")
        return
    if field_type not in (int, float):
        fail(key + ("type",), f"{name} is not numeric; use type = \"categorical\"")
    if kind == "float" and field_type is int:
        fail(key + ("type",), f"{name} is an integer field; use type = \"int\"")
    for bound in ("low", "high"):
        if bound not in entry:
            fail(key, f"missing '{bound}'")
        _check_number(fail, key + (bound,), entry[bound], int if kind == "int" else float)
    if "step" in entry:
        _check_number(fail, key + ("step",), entry["step"], int if kind == "int" else float)
        if not entry["step"] > 0:
            fail(key + ("step",), f"must be > 0, got {entry['step']}")
    if "log" in entry and not isinstance(entry["log"], bool):
        fail(key + ("log",), f"must be true or false, got {entry['log']!r}")
    if entry["low"] > entry["high"]:
        fail(key, f"empty range: low {entry['low']} > high {entry['high']}")
    if entry.get("log") and entry["low"] <= 0:
        fail(key + ("low",), f"log scale needs low > 0, got {entry['low']}")
    if entry.get("log") and "step" in entry:
        fail(key + ("step",), "step cannot be combined with log = true")


def _field_type(name: str):
    hint = typing.get_type_hints(TrainConfig)[name]
    return tuple if typing.get_origin(hint) is tuple else hint


def _check_value(fail, key: tuple, name: str, value: Any) -> None:
    field_type = _field_type(name)
    if field_type is tuple:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            fail(key, f"must be a list of integers, got {value!r}")
    else:
        _check_number(fail, key, value, field_type) if field_type in (int, float) else None
        if field_type is str and not isinstance(value, str):
            fail(key, f"must be a string, got {value!r}")


def _check_number(fail, key: tuple, value: Any, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(key, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind is int and not isinstance(value, int):
        fail(key, f"must be an integer, got {value!r}")
    if not math.isfinite(value):
        fail(key, f"must be finite, got {value!r}")


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
    if "train_lengths" in confirm and confirm["train_lengths"][1] and task != "addition":
        fail(confirm["train_lengths"][0], f"only the addition task trains on chosen lengths, not {task}")
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
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "studies"


__all__ = ["Param", "PRESETS", "StudyFileError", "StudySpec", "load_study", "parse_study_file", "studies_dir"]
