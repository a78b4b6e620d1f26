"""How a study searches: its Optuna sampler and pruner from the study file, and the study itself.

Example: rnnbench tune studies/addition.toml --arch gru --preset standard

The study maximises the validation accuracy, named ``best_val_acc`` in its metric names. A study is refused
when it was created from a different search space, fixed settings or epochs (its ``spec_fingerprint`` user attr).
"""

from __future__ import annotations

import warnings

from ..config import ConfigError
from ..schema import COORDINATION_MARK, Metric, StudyAttr
from .study_file import StudySpec, spec_mismatch

OBJECTIVE_NAME = Metric.BEST_VAL_ACC  # each trial's value: its best epoch's validation accuracy


def make_sampler(spec: StudySpec, worker: int = 0):
    """Seeded per worker: workers sharing a seed would draw the same startup trials."""
    import optuna

    settings = spec.sampler_dict
    seed = settings.get("seed")
    seed = None if seed is None else seed + worker
    if settings["type"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.get("n_startup_trials", 10),
                                          multivariate=settings.get("multivariate", False), constant_liar=True)


def make_pruner(spec: StudySpec):
    import optuna

    settings = {k: v for k, v in spec.pruner_dict.items() if k != "type"}
    kind = spec.pruner_dict["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(**settings)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=spec.epochs, **settings)
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**settings)
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, name: str, storage, worker: int = 0, create: bool = True):
    """Create or load the study; a study made from a different space/fixed/epochs is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed by us
    if COORDINATION_MARK in name:
        raise ConfigError(f"study name {name!r} contains {COORDINATION_MARK!r}, which rnnbench reserves; "
                          "choose another")
    if not create:
        study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec, worker),
                                  pruner=make_pruner(spec))
    else:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=make_sampler(spec, worker), pruner=make_pruner(spec))
    if create and study.metric_names != [OBJECTIVE_NAME]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])  # optuna-dashboard's name for the value, not "Objective 0"
    stored = study.user_attrs.get(StudyAttr.SPEC)
    if stored is None and create:
        for key, value in {StudyAttr.SPEC: spec.fingerprint(), StudyAttr.TASK: spec.task, StudyAttr.ARCH: spec.arch,
                           StudyAttr.PRESET: spec.preset, StudyAttr.STUDY_FILE: spec.path}.items():
            study.set_user_attr(key, value)
    elif stored is not None and stored != spec.fingerprint():
        raise spec_mismatch(name)
    return study
