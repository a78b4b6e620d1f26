"""The report as a reader meets it: how to read it, honest analysis figures, masked paths, counts that agree
in number, tables a GitHub page can show, and findings stated only with the runs to back them."""

from __future__ import annotations

import re

import pytest
from fake_store import build_store

from benchmark import report
from benchmark.report.markdown import plural, shown_location
from benchmark.report.sections.findings import MIN_EVIDENCE, findings
from benchmark.report.sections.studies import MIN_IMPORTANCE_TRIALS, _importances
from benchmark.report.snapshot import RunRecord, Snapshot
from benchmark.schema import Metric, Role, RunStatus, Suite, Tag, TrialState


def _store(folder, **kwargs):
    (folder / "mlruns").mkdir(parents=True)
    return build_store(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}", **kwargs)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One addition study of 3 trials (1 completed, 1 pruned, 1 failed) and its journal beside the store."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder = tmp_path_factory.mktemp("small")
    store = _store(folder, tasks=("addition",), archs=("lstm",), trials=3, epochs=2, reproduce=False)
    journal = folder / "mlruns" / "optuna.journal"
    study = optuna.create_study(study_name="addition-lstm", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(journal))))
    distribution = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    for state, value in (("COMPLETE", 0.9), ("PRUNED", None), ("FAIL", None)):
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=distribution,
                                                  state=optuna.trial.TrialState[state], value=value))
    path, snap, _ = report.write_report(folder / "out", tracking_uri=store.uri, timestamp=False)
    return folder, path.read_text(), snap


def section(markdown: str, heading: str) -> str:
    return markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def test_the_report_opens_with_how_to_read_it(small):
    _, markdown, _ = small
    opening = markdown.split("\n## ", 1)[0]
    assert "**How to read this report.**" in opening
    assert "validation" in opening and "test" in opening and "seed" in opening


def test_no_absolute_path_of_the_machine_that_wrote_it(small):
    folder, markdown, _ = small
    assert str(folder) not in markdown and "/tmp/" not in markdown
    provenance = section(markdown, "Provenance")
    assert "- Tracking store: sqlite:///…/mlflow.db;" in provenance
    assert "- Optuna storage optuna.journal (in the tracking store's folder): 1 study" in provenance


def test_shown_location_relative_to_the_store_then_the_working_directory_else_masked(tmp_path):
    store = tmp_path / "mlruns"
    assert shown_location(store / "optuna.journal", store) == "optuna.journal (in the tracking store's folder)"
    assert shown_location(f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}") == "sqlite:///x/mlflow.db"  # cwd: tmp_path
    assert shown_location("/elsewhere/secret/mlflow.db") == "…/mlflow.db"
    assert shown_location("postgresql://me:pw@db.example/optuna") == "postgresql://me:***@db.example/optuna"


def test_git_commits_list_their_run_counts(small):
    _, markdown, snap = small
    assert f"- Git commits of the runs: abc1234 ({len(snap.runs)} runs)" in markdown


def test_counts_agree_in_number(small):
    _, markdown, _ = small
    assert plural(1, "trial") == "1 trial" and plural(2, "study", "studies") == "2 studies"
    assert plural(0, "seed") == "0 seeds"
    wrong = re.findall(r"\b1 (?:trials|runs|seeds|studies|architectures|goals|completed trials)\b", markdown)
    assert wrong == []
    assert "1 completed trial," in markdown and "1 study" in markdown


def test_importances_need_the_documented_number_of_completed_trials():
    import optuna

    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                     "hidden_size": optuna.distributions.IntDistribution(4, 64)}

    def trials(n):
        return [optuna.trial.create_trial(params={"lr": 10 ** (-4 + 3 * i / n), "hidden_size": 4 + (7 * i) % 60},
                                          distributions=distributions, value=0.5 + 0.4 * i / n) for i in range(n)]

    assert MIN_IMPORTANCE_TRIALS == 20
    below = _importances(trials(MIN_IMPORTANCE_TRIALS - 1))
    assert below == "19 completed trials, fewer than the 20 an importance estimate needs; left out"
    enough = _importances(trials(MIN_IMPORTANCE_TRIALS))
    assert isinstance(enough, dict) and set(enough) == {"lr", "hidden_size"}


def test_few_trials_replace_the_importances_figure_with_a_sentence(small):
    folder, markdown, _ = small
    studies = section(markdown, "Studies")
    assert "param_importances" not in studies and not (folder / "out" / "figures" / "addition_param_importances.png"
                                                        ).exists()
    assert "No importances figure: the largest study has 1 completed trial, fewer than the 20 needed" in studies
    assert "addition_optimisation_history.png" in studies and "pruned trials are red crosses" in studies


def test_every_table_fits_a_github_page(small, tmp_path):
    store = _store(tmp_path / "wide", archs=("lstm", "gru"), trials=4, epochs=2, confirm_seeds=2)
    path, _, _ = report.write_report(tmp_path / "out", tracking_uri=store.uri, timestamp=False)
    for markdown in (small[1], path.read_text()):
        headers = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| ---")
                   and "---" not in line]
        rules = [i for i, line in enumerate(markdown.splitlines()) if line.startswith("| ---")]
        assert rules
        for i in rules:
            width = markdown.splitlines()[i - 1].count(" | ") + 1
            assert width <= 8, markdown.splitlines()[i - 1]
        assert headers


def test_a_plain_train_run_is_not_called_a_best_trial(tmp_path):
    store = _store(tmp_path / "runs", tasks=("addition",), archs=("lstm",), trials=0, extra_runs=2, epochs=2,
                   reproduce=False)
    path, _, _ = report.write_report(tmp_path / "out", tracking_uri=store.uri, timestamp=False)
    markdown = path.read_text()
    for heading in ("Goals", "Findings", "Length generalisation (addition)"):
        assert "best trial" not in section(markdown, heading), heading
    assert "best train run" in section(markdown, "Goals") and "best train run" in section(markdown, "Findings")


def _run(run_id, arch, layers, acc, *, trial=True):
    tags = {Tag.TASK: "addition", Tag.ARCH: arch, Tag.SUITE: Suite.TUNE if trial else Suite.TRAIN,
            Tag.ROLE: Role.TRIAL if trial else Role.RUN, Tag.STUDY: f"addition-{arch}" if trial else "",
            Tag.TRIAL: run_id[-1] if trial else "", Tag.TRIAL_STATE: TrialState.COMPLETE if trial else ""}
    params = {"num_layers": str(layers), "loss": "ce", "max_train_length": "20", "hidden_size": "8", "lr": "0.01"}
    metrics = {Metric.BEST_VAL_ACC: acc, Metric.BEST_VAL_LOSS: 1 - acc, Metric.TEST_ACC: acc}
    return RunRecord(run_id, "addition", RunStatus.FINISHED, 0, tags, params, metrics)


def _findings(runs, lengths=None):
    histories = {}
    for run in runs:
        top = (lengths or {}).get(run.arch, 100)
        histories[run.run_id, Metric.TEST_BIT_ACC_BY_LEN] = [(n, 1.0) for n in (20, top)]
        histories[run.run_id, Metric.TEST_SEQ_ACC_BY_LEN] = [(n, 1.0) for n in (20, top)]
    snap = Snapshot("sqlite://", ["addition"], runs, {}, "", _histories=histories)
    return findings(snap, None)


def test_an_effect_is_claimed_only_with_enough_runs_each_side():
    assert MIN_EVIDENCE == 2
    thin = _findings([_run("a0", "lstm", 1, 0.99), _run("a1", "lstm", 2, 0.50), _run("a2", "lstm", 3, 0.48)])
    depth = next(line for line in thin.splitlines() if "depth" in line)
    assert "not enough runs to state an effect" in depth and "(1 vs 2)" in depth
    assert "hurt" not in depth and "-49" not in depth
    enough = _findings([_run("a0", "lstm", 1, 0.99), _run("a1", "lstm", 1, 0.97), _run("a2", "lstm", 2, 0.50),
                        _run("a3", "lstm", 3, 0.48)])
    depth = next(line for line in enough.splitlines() if "depth" in line)
    assert "hurt" in depth and "-49.00: best of 2 vs best of 2 runs" in depth


def test_every_finding_says_what_it_rests_on():
    text = _findings([_run("a0", "lstm", 1, 0.99), _run("a1", "lstm", 1, 0.97), _run("b0", "gru", 1, 0.98),
                      _run("b1", "gru", 1, 0.95), _run("b2", "gru", 2, 0.96)])
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines
    for line in lines:
        assert re.search(r"rests on|runs?\b|seeds?\b|each", line), line
    assert "rests on one best trial per architecture, chosen from 2 to 3 runs each, no seeds" in text


def test_a_length_claim_counts_only_architectures_tested_at_that_length():
    text = _findings([_run("a0", "lstm", 1, 0.99), _run("b0", "gru", 1, 0.98)],
                     lengths={"lstm": 1000, "gru": 100})
    line = next(line for line in text.splitlines() if "at length" in line)
    assert "at length 1000, 1 of the 1 architecture tested there" in line
    assert "not counted, tested only to shorter lengths: gru (to 100)" in line


def test_a_winner_is_not_called_from_one_run_each():
    one = _findings([_run("a0", "lstm", 1, 0.48), _run("b0", "gru", 1, 0.55)])
    line = next(line for line in one.splitlines() if "highest" in line or "wins" in line)
    assert "wins" not in line and "not called a win" in line and "1 run each" in line
    two = _findings([_run("a0", "lstm", 1, 0.48), _run("a1", "lstm", 1, 0.40), _run("b0", "gru", 1, 0.55),
                     _run("b1", "gru", 1, 0.50)])
    assert "- **addition**: gru wins with 55.00 % mean bit accuracy (best trial), 7.00 points ahead of lstm" in two


def test_seed_means_within_their_noise_are_no_effect():
    def seed(run_id, of, arch, value, number):
        tags = {Tag.TASK: "addition", Tag.ARCH: arch, Tag.SUITE: Suite.CONFIRM, Tag.ROLE: Role.CONFIRM,
                Tag.CONFIRM_OF: of, Tag.SEED: str(number)}
        return RunRecord(run_id, "addition", RunStatus.FINISHED, number, tags, {"epochs": "4", "train_size": "0"},
                         {Metric.TEST_ACC: value})

    runs = [_run("a0", "lstm", 1, 0.90), _run("a1", "lstm", 1, 0.80), _run("b0", "bilstm", 1, 0.95),
            _run("b1", "bilstm", 1, 0.85),
            seed("s1", "a0", "lstm", 0.90, 1), seed("s2", "a0", "lstm", 0.94, 2),
            seed("s3", "b0", "bilstm", 0.91, 1), seed("s4", "b0", "bilstm", 0.95, 2)]
    line = next(line for line in _findings(runs).splitlines() if "bidirectionality" in line)
    assert "made no difference" in line and "+1.00: 2 vs 2 seeds, within the seeds' noise" in line
