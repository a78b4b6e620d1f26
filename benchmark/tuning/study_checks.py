"""The checks behind a study file's one-line errors: keys, types and ranges of one layer, and the line of a key.

Example: rnnbench tune studies/mnist.toml --arch lstm   (a bad file stops here as FILE:LINE: KEY: reason)

``benchmark.tuning.study_file`` calls ``check_layer`` on every layer of a file before it merges them; a
``Failer`` turns a key path into ``StudyFileError("FILE:LINE: KEY: reason")``.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

from ..config import ConfigError, TrainConfig, field_names

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


class Failer:
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


def table_at(fail, parent: dict, key: tuple, where: tuple = ()) -> dict:
    value = parent.get(key[0], {})
    if not isinstance(value, dict):
        fail(where + key, f"must be a table, got {type(value).__name__}")
    return value


def check_layer(fail, where: tuple, layer: dict) -> None:
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
