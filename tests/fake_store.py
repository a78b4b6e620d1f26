"""A synthetic tracking store of fake studies, written straight through MlflowClient in the tracking schema.

Example: python benchmarks/report_scale.py --runs 500   # builds one of these and times the report

Used by tests/test_report.py and benchmarks/report_scale.py. Every run follows the schema in
benchmark/schema.py, and every name is taken from there; numbers come from a seeded generator, so a store is
reproducible. Each study
gets pruned and failed trials whose accuracy is made higher than any completed trial's, so a report
that picked one of them as best would show it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from benchmark.config import TrainConfig
from benchmark.notebook import BY_ID
from benchmark.schema import REPRODUCE_EXPERIMENT, Metric, Role, RunStatus, Suite, Tag, TrialState, rank_key
from benchmark.store import get_or_create_experiment

QUALITY = {"rnn": 0.90, "lstm": 0.975, "gru": 0.97, "birnn": 0.93, "bilstm": 0.98, "bigru": 0.978}
ENV_TAGS = {Tag.GIT_COMMIT: "abc1234", Tag.PYTHON_VERSION: "3.11.9", Tag.TORCH_VERSION: "2.14.1",
            Tag.MLFLOW_VERSION: "3.17.2", Tag.OPTUNA_VERSION: "5.0.0", Tag.RNNBENCH_VERSION: "0.1.0",
            Tag.PROCESSOR: "x86_64", Tag.TORCH_THREADS: "1", Tag.DEVICE: "cpu"}


@dataclass
class FakeStore:
    uri: str
    runs: dict[str, dict] = field(default_factory=dict)  # run id -> what was logged (for assertions)


FAKE_EVAL_LENGTHS = (30, 50, 100)  # short of the default's 1000: the report must say what was not tested


def _metrics(task: str, arch: str, config: TrainConfig, rng: random.Random, epochs: int, iterations: int,
             stop_epoch: int | None = None, boost: float = 0.0):
    """Curves and final metrics for one fake run; `stop_epoch` cuts it short (pruned)."""
    from mlflow.entities import Metric as Point

    now = int(time.time() * 1000)
    quality = QUALITY[arch] - 0.01 * abs(config.num_layers - 2) + rng.uniform(-0.01, 0.01)
    quality = min(quality + boost, 0.9995)
    out, last = [], stop_epoch or epochs
    val = []
    for epoch in range(1, last + 1):
        acc = quality * (1 - 0.5 ** epoch)
        val.append(acc)
        out += [Point(Metric.VAL_ACC, acc, now, epoch), Point(Metric.VAL_LOSS, 1 - acc, now, epoch),
                Point(Metric.EPOCH_TIME, 2.0 + rng.random(), now, epoch)]
        first = (epoch - 1) * iterations
        out += [Point(Metric.TRAIN_LOSS, 2.0 * 0.97 ** (first + i), now, first + i + 1) for i in range(iterations)]
    final = {}
    if stop_epoch is not None and boost:  # a pruned trial that looks best: a report must still skip it
        final = {Metric.BEST_VAL_ACC: quality, Metric.BEST_VAL_LOSS: 0.0}
        out += [Point(k, float(v), now, 0) for k, v in final.items()]
    if stop_epoch is None:
        best = max(range(len(val)), key=lambda i: val[i])
        final = {Metric.TEST_ACC: val[best] - 0.002, Metric.TEST_LOSS: 1 - val[best], Metric.BEST_VAL_ACC: val[best],
                 Metric.BEST_VAL_LOSS: 1 - val[best], Metric.BEST_EPOCH: best + 1, Metric.EPOCHS_RUN: epochs,
                 Metric.TRAIN_TIME: 2.5 * epochs, Metric.N_PARAMS: 1000 * config.hidden_size * config.num_layers}
        if task == "addition":
            final[Metric.TEST_SEQ_ACC] = val[best] - 0.05
            for length in [*range(1, 21), *config.eval_lengths]:
                decay = 0.0 if length <= 20 else (length - 20) * (1 - quality) * 0.02
                out.append(Point(Metric.TEST_BIT_ACC_BY_LEN, max(val[best] - decay, 0.5), now, length))
                out.append(Point(Metric.TEST_SEQ_ACC_BY_LEN, max(val[best] - 2 * decay, 0.0), now, length))
        out += [Point(k, float(v), now, 0) for k, v in final.items()]
    return out, final


def _confirm(store, create, study, task, arch, parent, seeds, lengths) -> None:
    """Confirmation runs of the study's best completed trial, as ``rnnbench confirm`` tags them."""
    from benchmark.confirm import confirm_seeds

    trials = [(rid, r) for rid, r in store.runs.items() if r["tags"].get(Tag.STUDY) == study
              and r["tags"].get(Tag.TRIAL_STATE) == TrialState.COMPLETE]
    best_id, best = min(trials, key=lambda item: rank_key(item[1]["final"][Metric.BEST_VAL_ACC],
                                                          item[1]["final"][Metric.BEST_VAL_LOSS],
                                                          int(item[1]["tags"][Tag.TRIAL]), item[0]))
    for length in (None, *lengths):
        for seed in confirm_seeds(seeds):
            config = best["config"].replace(seed=seed, train_lengths=(length,) if length else ())
            tags = {Tag.SUITE: Suite.CONFIRM, Tag.ROLE: Role.CONFIRM, Tag.STUDY: study, Tag.CONFIRM_OF: best_id}
            if length:
                tags[Tag.CONFIRM_LENGTH] = str(length)
            create(task, config, tags, RunStatus.FINISHED, parent=parent)


def build_store(uri: str, *, tasks=("mnist", "addition"), archs=tuple(QUALITY), trials: int = 6, seed: int = 0,
                epochs: int = 4, iterations: int = 5, reproduce: bool = True, extra_runs: int = 0,
                confirm_seeds: int = 0, confirm_lengths: tuple[int, ...] = ()) -> FakeStore:
    """Studies of `trials` trials per task x arch: trial 1 pruned, trial 2 failed (both 'better' than any
    completed one), the rest complete; optional seed confirmations of each study's best trial (also
    trained on single lengths, addition), reproduce runs and standalone train runs."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    client = MlflowClient(tracking_uri=uri)
    rng = random.Random(seed)
    store = FakeStore(uri)

    def create(experiment, config, tags, status, stop_epoch=None, boost=0.0, parent=None, metrics=True):
        all_tags = {**ENV_TAGS, Tag.TASK: config.task, Tag.ARCH: config.arch, Tag.SEED: str(config.seed), **tags}
        if parent:
            all_tags[Tag.PARENT_RUN] = parent
        run = client.create_run(get_or_create_experiment(client, experiment), tags=all_tags)
        entries, final = (_metrics(config.task, config.arch, config, rng, epochs, iterations, stop_epoch, boost)
                          if metrics else ([], {}))
        params = [Param(k, v) for k, v in config.to_params().items()]
        for start in range(0, max(len(entries), 1), 1000):
            client.log_batch(run.info.run_id, metrics=entries[start:start + 1000],
                             params=params if start == 0 else [])
        if status == RunStatus.FAILED:
            client.log_batch(run.info.run_id, tags=[RunTag(Tag.ERROR, "RuntimeError: fake failure")])
        client.set_terminated(run.info.run_id, status=status)
        store.runs[run.info.run_id] = {"config": config, "tags": all_tags, "status": status, "final": final}
        return run.info.run_id

    for task in tasks:
        for arch in archs:
            study = f"{task}-{arch}"
            base = TrainConfig.for_task(task, arch, epochs=epochs, eval_lengths=FAKE_EVAL_LENGTHS)
            parent = create(task, base, {Tag.SUITE: Suite.TUNE, Tag.ROLE: Role.STUDY, Tag.STUDY: study,
                                         Tag.PRESET: "quick"}, RunStatus.FINISHED, metrics=False)
            for number in range(trials):
                config = base.replace(hidden_size=rng.choice([16, 32, 64]), num_layers=rng.choice([1, 2, 3]),
                                      lr=round(10 ** rng.uniform(-3.5, -1.5), 6), loss=("ce", "mse")[number % 2],
                                      seed=number)
                state, status, stop, boost = TrialState.COMPLETE, RunStatus.FINISHED, None, 0.0
                if number == 1:
                    state, status, stop, boost = TrialState.PRUNED, RunStatus.KILLED, 2, 0.5
                elif number == 2:
                    state, status, boost = TrialState.FAIL, RunStatus.FAILED, 0.5
                tags = {Tag.SUITE: Suite.TUNE, Tag.ROLE: Role.TRIAL, Tag.STUDY: study, Tag.TRIAL: str(number),
                        Tag.TRIAL_STATE: state}
                create(task, config, tags, status, stop_epoch=stop, boost=boost, parent=parent)
            if confirm_seeds:
                _confirm(store, create, study, task, arch, parent, confirm_seeds,
                         confirm_lengths if task == "addition" else ())
            for i in range(extra_runs):
                config = base.replace(seed=100 + i, hidden_size=rng.choice([16, 32]))
                create(task, config, {Tag.SUITE: Suite.TRAIN, Tag.ROLE: Role.RUN}, RunStatus.FINISHED)
    if reproduce:
        for ref in ("addition-h3", "addition-h10", "addition-h5-mse", "addition-h5-ce", "addition-h5-len3",
                    "addition-h5-len5", "addition-h5-len10", "mnist-rnn-256"):
            experiment = BY_ID[ref]
            settings = {"eval_lengths": FAKE_EVAL_LENGTHS, **experiment.settings, "epochs": epochs}
            config = TrainConfig.for_task(experiment.task, experiment.arch, **settings)
            tags = {Tag.SUITE: Suite.REPRODUCE, Tag.ROLE: Role.RUN, Tag.NOTEBOOK_REF: ref}
            create(REPRODUCE_EXPERIMENT, config, tags, RunStatus.FINISHED)
    return store
