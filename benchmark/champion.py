"""MLflow Model Registry: the best model per task x architecture, under ``<task>-<arch>@champion``.

Example: rnnbench predict --model mnist-lstm@champion digit.png

A registered version's source is the run's ``checkpoint`` artifact folder: a
state dict + the config that rebuilds the model (``benchmark.checkpoint``),
which runs at any batch size and sequence length. We deliberately do not use
``mlflow.pytorch.log_model``'s default ``pt2`` export, which freezes the shapes
it was traced with (an RNN saved that way cannot score other string lengths).

``register_champion`` is idempotent: registering a run that already has a
version reuses that version, and the alias always ends on the given run.
Registries need a database-backed store (the default SQLite store is one).
"""

from __future__ import annotations

import time

from .config import ConfigError
from .schema import (
    CHAMPION_ALIAS,
    CHECKPOINT_FORMAT,
    Artifact,
    Metric,
    ModelVersionTag,
    RunStatus,
    Tag,
    registered_model_name,
)
from .store import client_for

VERSION_METRICS = (Metric.TEST_ACC, Metric.BEST_VAL_ACC, Metric.N_PARAMS)  # copied onto the version as tags
ALIAS_RETRIES = 3


def register_champion(run_id: str, tracking_uri: str | None = None, name: str | None = None,
                      alias: str = CHAMPION_ALIAS) -> dict:
    """Register ``run_id``'s checkpoint as a version of ``name`` (default ``<task>-<arch>``) and point ``alias`` at it.

    Returns {"name", "version", "alias", "run_id", "created"}.
    """
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"no run {run_id!r} in the tracking store ({error.error_code}); check the run id") from None
    task, arch = run.data.tags.get(Tag.TASK), run.data.tags.get(Tag.ARCH)
    if not (name or (task and arch)):
        raise ConfigError(f"run {run_id} has no task/arch tags; pass name= to register it")
    if run.info.status != RunStatus.FINISHED:
        raise ConfigError(f"run {run_id} is {run.info.status}, not FINISHED; only finished runs have a checkpoint")
    if not any(a.path == Artifact.CHECKPOINT for a in client.list_artifacts(run_id, Artifact.CHECKPOINT_FOLDER)):
        raise ConfigError(f"run {run_id} has no {Artifact.CHECKPOINT} artifact to register")
    name = name or registered_model_name(task, arch)
    try:
        client.create_registered_model(name, tags={Tag.TASK: task or "", Tag.ARCH: arch or ""},
                                       description=f"Best {arch} on {task}; checkpoint = state dict + config "
                                                   "(benchmark.checkpoint.load_checkpoint).")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    created = not existing
    if existing:
        version = min(existing, key=lambda v: int(v.version))
    else:
        metrics = run.data.metrics
        tags = {k: f"{metrics[k]:.6g}" for k in VERSION_METRICS if k in metrics}
        tags.update({ModelVersionTag.FORMAT: CHECKPOINT_FORMAT, ModelVersionTag.CHECKPOINT: Artifact.CHECKPOINT})
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{Artifact.CHECKPOINT_FOLDER}",
                                              run_id=run_id, tags=tags)
    _set_alias(client, name, alias, version.version)
    return {"name": name, "version": int(version.version), "alias": alias, "run_id": run_id, "created": created}


def _set_alias(client, name: str, alias: str, version) -> None:
    """Set (or move) the alias. Two sessions finishing at once may both insert it; on PostgreSQL the loser gets a
    unique-key violation, and the retry then finds the alias and moves it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(ALIAS_RETRIES):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as error:
            raced = any(s in str(error) for s in ("UniqueViolation", "already exists", "UNIQUE"))
            if attempt == ALIAS_RETRIES - 1 or not raced:
                raise
            time.sleep(0.2 * (attempt + 1))


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``name``, ``name@alias`` or ``name/version`` -> (name, alias, version)."""
    if "@" in reference:
        name, alias = reference.split("@", 1)
        return name, alias, None
    if "/" in reference:
        name, version = reference.rsplit("/", 1)
        return name, None, version
    return reference, None, None


def resolve_model(reference: str, tracking_uri: str | None = None) -> dict:
    """``mnist-lstm@champion`` (or ``name/3``, or ``name`` = latest) -> {"name", "version", "run_id", "source"}."""
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    name, alias, version = parse_reference(reference)
    if not name:
        raise ConfigError(f"bad model reference {reference!r}; use NAME, NAME@ALIAS or NAME/VERSION")
    try:
        if alias:
            found = client.get_model_version_by_alias(name, alias)
        elif version:
            found = client.get_model_version(name, version)
        else:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ConfigError(f"registered model {name!r} has no versions")
            found = max(versions, key=lambda v: int(v.version))
    except MlflowException as error:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise ConfigError(f"no registered model {reference!r} ({error.error_code}); registered: {known}") from None
    if not found.run_id:
        raise ConfigError(f"model {reference!r} version {found.version} has no run id; it was not registered here")
    return {"name": name, "version": int(found.version), "run_id": found.run_id, "source": found.source}
