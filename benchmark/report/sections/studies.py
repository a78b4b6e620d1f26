"""The studies: per study its trial counts, optimisation history and parameter importances.

Example: rnnbench report --out reports/   # the "## Studies" section

Importances come from the Optuna storage's trials where it holds the study (the true distributions),
else from FrozenTrials rebuilt from the trial runs over the params that varied.
"""

from __future__ import annotations

from collections import Counter

from ...catalog import arch_order_key
from ...schema import Metric, RunStatus, Tag, TrialState
from ..markdown import Figures, pct, plural, table
from ..select import arch_colours, best_of, reported_tasks, trained_on
from ..snapshot import RunRecord, Snapshot
from ..worker import offline

NOT_HYPERPARAMETERS = {"task", "arch", "seed", "threads", "device", "impl"}  # params that are never importances
# Below this many completed trials a study's importances are left out, figure and numbers: fANOVA over a
# handful of trials mostly measures which parameter the sampler happened to vary.
MIN_IMPORTANCE_TRIALS = 20


def _importances(trials: list) -> dict[str, float] | str:
    """Parameter importances (fANOVA, seeded) over completed trials, or the reason there are none."""
    import optuna

    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return (f"{plural(len(complete), 'completed trial')}, fewer than the {MIN_IMPORTANCE_TRIALS} an importance "
                "estimate needs; left out")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(complete)
    try:
        try:
            import sklearn  # noqa: F401  (fANOVA's random forest)

            evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=8, seed=0)
        except ImportError:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as error:  # too few distinct values, constant objective, ...
        return f"importances unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if not values:
        return "importances unavailable (no parameter varied)"
    # Rounded and sorted so that the markdown does not depend on float noise.
    rounded = sorted(((k, round(float(v), 2)) for k, v in values.items()), key=lambda kv: (-kv[1], kv[0]))
    return dict(rounded)


def _completed(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.trial_state == TrialState.COMPLETE and r.status == RunStatus.FINISHED
            and r.metric(Metric.BEST_VAL_ACC) is not None]


def _trials_from_runs(runs: list[RunRecord]) -> list:
    """FrozenTrials rebuilt from trial runs (objective: best_val_acc), over the params that varied."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    complete = _completed(runs)
    varied = sorted(k for k in set().union(*(r.params for r in complete)) - NOT_HYPERPARAMETERS
                    if len({r.param(k) for r in complete}) > 1)
    distributions = {}
    for key in varied:
        values = sorted({r.param(key) for r in complete})
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            distributions[key] = CategoricalDistribution(values)
            continue
        if all(v.lstrip("-").isdigit() for v in values):
            distributions[key] = IntDistribution(int(min(numbers)), int(max(numbers)))
        else:
            low, high = min(numbers), max(numbers)
            distributions[key] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
    trials = []
    for r in sorted(complete, key=lambda r: (r.trial_number or 0, r.run_id)):
        params = {}
        for key, dist in distributions.items():
            raw = r.param(key)
            params[key] = (raw if isinstance(dist, CategoricalDistribution)
                           else int(raw) if isinstance(dist, IntDistribution) else float(raw))
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions,
                                                value=r.metric(Metric.BEST_VAL_ACC)))
    return trials


def _study_arch(trials: list[RunRecord], name: str) -> str:
    return min((r.arch for r in trials if r.study == name), default="")


@offline
def studies(snap: Snapshot, figures: Figures) -> str:
    """Per study, the optimisation history and parameter importances."""
    from ..figures import importances, optimisation_histories  # matplotlib

    out = ["## Studies", ""]
    any_study = False
    palette = arch_colours(snap)
    for task in reported_tasks(snap):
        trials = snap.trials(task)
        names = sorted({r.study for r in trials if r.study}, key=lambda n: (arch_order_key(_study_arch(trials, n)), n))
        if not names:
            continue
        any_study = True
        rows, histories, weights, notes = [], {}, {}, []
        for name in names:
            runs = [r for r in trials if r.study == name]
            complete = sorted((r.trial_number, r.metric(Metric.BEST_VAL_ACC)) for r in _completed(runs)
                              if r.trial_number is not None)
            pruned = sorted((r.trial_number, r.metric(Metric.VAL_ACC)) for r in runs
                            if r.trial_state == TrialState.PRUNED and r.trial_number is not None
                            and r.metric(Metric.VAL_ACC) is not None)
            stats = snap.studies.get(name)
            counts = stats.states if stats else Counter(r.trial_state for r in runs)
            histories[name] = {"complete": complete, "pruned": pruned, "pruned_count": counts.get(TrialState.PRUNED, 0),
                               "colour": palette.get(_study_arch(trials, name), "tab:blue")}
            best = best_of(runs)
            preset = sorted({r.tags[Tag.PRESET] for r in snap.runs if r.study == name and Tag.PRESET in r.tags})
            rows.append([name, _study_arch(trials, name), str(counts.get(TrialState.COMPLETE, 0)),
                         str(counts.get(TrialState.PRUNED, 0)), str(counts.get(TrialState.FAIL, 0)),
                         pct(best.metric(Metric.BEST_VAL_ACC)) if best else "—",
                         str(best.trial_number) if best and best.trial_number is not None else "—",
                         ", ".join(preset) or "—"])
            source = stats.trials if stats and stats.trials else _trials_from_runs(runs)
            result = _importances(source)
            if isinstance(result, str):
                notes.append(f"- {name}: {result}.")
            else:
                weights[name] = result
                notes.append(f"- {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()) + ".")
        kept = ("; pruned trials are red crosses at their last reported validation accuracy"
                if any(h["pruned_count"] for h in histories.values()) else "")
        out += [f"### {task}", "",
                table(["study", "arch", "complete", "pruned", "failed", "best val acc", "best trial", "preset"], rows,
                      [2, 3, 4, 5, 6]), "",
                f"Optimisation history: each trial's best validation accuracy by trial number, and the best so "
                f"far{kept}.", "",
                figures.image(optimisation_histories(histories, f"Studies on {trained_on(task, trials)}: validation "
                                                                 "accuracy of each trial"),
                              f"{task}_optimisation_history", f"{task} optimisation history"), "",
                f"Parameter importances (fANOVA over completed trials; objective: best validation accuracy; a study "
                f"needs {MIN_IMPORTANCE_TRIALS} completed trials):", "", *notes, ""]
        if weights:
            out += [figures.image(importances(weights, f"Studies on {trained_on(task, trials)}: parameter importances"),
                                  f"{task}_param_importances", f"{task} parameter importances"), ""]
        else:
            most = max(len(_completed([r for r in trials if r.study == name])) for name in names)
            out += [f"No importances figure: the largest study has {plural(most, 'completed trial')}, fewer than "
                    f"the {MIN_IMPORTANCE_TRIALS} needed to tell a parameter's effect from the sampler's choices.", ""]
    return "\n".join(out) if any_study else ""
