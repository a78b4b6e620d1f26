"""MLflow Model Registry: the best model per task x architecture, under ``<task>-<arch>@champion``.

Example: rnnbench predict --model mnist-lstm@champion digit.png

A registered version is an MLflow pyfunc model logged from its run (``benchmark.served_model``), so
``mlflow.pyfunc.load_model("models:/mnist-lstm@champion")`` and ``mlflow models serve --env-manager local`` work
where rnnbench is installed (the model's code imports it); its one artifact
is the run's checkpoint (state dict + config, ``benchmark.checkpoint.load_checkpoint``), which runs at any batch
size and sequence length. We deliberately do not use ``mlflow.pytorch.log_model``'s default ``pt2`` export,
which freezes the shapes it was traced with (an RNN saved that way cannot score other string lengths).

``register_champion`` is idempotent: registering a run that already has a version reuses that version.
The alias ends on the given run, unless ``only_if_better`` and the current champion ranks as high or higher
(``schema.rank_key``): a tune session moves it only when its study's best beats the champion.
Registries need a database-backed store (the default SQLite store is one).
"""

from __future__ import annotations

import math

from .config import ConfigError
from .schema import (
    CHAMPION_ALIAS,
    CHECKPOINT_FORMAT,
    PYFUNC_CHECKPOINT,
    Artifact,
    Metric,
    ModelTag,
    ModelVersionTag,
    RunStatus,
    Tag,
    rank_key,
    registered_model_name,
)
from .store import client_for, download_artifact, retried

VERSION_METRICS = (Metric.TEST_ACC, Metric.BEST_VAL_ACC, Metric.N_PARAMS)  # copied onto the version as tags
ALIAS_RETRIES = 3


def register_champion(run_id: str, tracking_uri: str | None = None, name: str | None = None,
                      alias: str = CHAMPION_ALIAS, *, only_if_better: bool = False) -> dict:
    """Register ``run_id``'s model as a version of ``name`` (default ``<task>-<arch>``) and point ``alias`` at it
    (with ``only_if_better``, only when it ranks above the alias's current run).

    Returns {"name", "version", "alias", "run_id", "created", "moved", "champion_run_id"}.
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
        client.create_registered_model(name, tags={ModelTag.TRAINED: f"{arch} on {task}"},
                                       description=model_description(name, task, arch, alias))
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # Versions registered before they were pyfunc models (their source: the checkpoint folder) are not reused.
    existing = [v for v in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                if v.source.startswith("models:/")]
    created = not existing
    version = min(existing, key=lambda v: int(v.version)) if existing else _create_version(client, name, run)
    current = _alias_run(client, name, alias)
    moved = not (only_if_better and current is not None and current.info.run_id != run_id
                 and not _ranks_above(run, current))
    if moved:
        _set_alias(client, name, alias, version.version)
    return {"name": name, "version": int(version.version), "alias": alias, "run_id": run_id, "created": created,
            "moved": moved, "champion_run_id": run_id if moved else current.info.run_id}


def model_description(name: str, task: str | None, arch: str | None, alias: str = CHAMPION_ALIAS) -> str:
    """The registered model's description (markdown in the UI): what it is and the two ways to load it."""
    what = f"The best {arch} on {task}" if task and arch else "A model"
    return (f"{what} benchmarked by rnnbench, ranked by validation accuracy.\n\n"
            f"- As an MLflow model, at any batch size and sequence length: "
            f"`mlflow.pyfunc.load_model(\"models:/{name}@{alias}\")`, or `mlflow models serve --env-manager "
            f"local`, where rnnbench is installed (the model's code imports it).\n"
            f"- The network itself: `benchmark.checkpoint.load_checkpoint` on the version's "
            f"`{PYFUNC_CHECKPOINT}`, or `rnnbench predict --model {name}@{alias}` (MNIST).")


def _create_version(client, name: str, run):
    """Log the run's checkpoint as a pyfunc model of the run, then register it, linked to the run."""
    import tempfile
    from pathlib import Path

    from .served_model import log_pyfunc, using_tracking_uri

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifact(run_id, Artifact.CHECKPOINT, tmp, client.tracking_uri)
        info = log_pyfunc(run_id, Path(local), client.tracking_uri)
    metrics = run.data.metrics
    tags = {k: f"{metrics[k]:.6g}" for k in VERSION_METRICS if k in metrics}
    tags.update({ModelVersionTag.FORMAT: CHECKPOINT_FORMAT, ModelVersionTag.CHECKPOINT: PYFUNC_CHECKPOINT})
    with using_tracking_uri(client.tracking_uri):
        return client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=tags,
                                           model_id=info.model_id,
                                           run_link=f"#/experiments/{run.info.experiment_id}/runs/{run_id}")


def _alias_run(client, name: str, alias: str):
    """The run the alias points at now, or None (no alias yet, or its run is gone)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(client.get_model_version_by_alias(name, alias).run_id)
    except MlflowException:
        return None


def _ranks_above(run, other) -> bool:
    """Strictly better in ``schema.rank_key``'s order (validation accuracy, then loss); a tie keeps the champion."""
    def key(r):
        metrics = r.data.metrics
        return rank_key(metrics.get(Metric.BEST_VAL_ACC, -math.inf), metrics.get(Metric.BEST_VAL_LOSS))

    return key(run) < key(other)


def _set_alias(client, name: str, alias: str, version) -> None:
    """Set (or move) the alias. Two sessions finishing at once may both insert it; on PostgreSQL the loser gets a
    unique-key violation, and the retry then finds the alias and moves it."""
    from mlflow.exceptions import MlflowException

    retried(lambda: client.set_registered_model_alias(name, alias, version), attempts=ALIAS_RETRIES,
            errors=MlflowException,
            when=lambda error: any(s in str(error) for s in ("UniqueViolation", "already exists", "UNIQUE")))


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
