"""``rnnbench bench``: tune every architecture on every task at one preset, confirm each best trial, then report.

Example: rnnbench bench --preset quick --archs lstm gru --tasks addition

Every study file is loaded and checked before the first trial runs, so a mistake in one costs nothing. Without
``--workers``, each study gets what ``auto_workers`` picks for this machine: two one-thread workers for a small
model, where a step is too short to keep two threads busy, else one worker with every core.
"""

from __future__ import annotations

from pathlib import Path

from .catalog import ARCHITECTURES, BUILTIN_TASKS, TASKS
from .config import ConfigError
from .confirm import confirm
from .report import write_report
from .tuning import StudyResult, check_device, format_value, load_study, run_study, studies_dir
from .tuning.session import available_cores

# Two one-thread workers train two trials at once where each model is at most this wide: there a step is a few
# small products, which one thread keeps busy and a second speeds up little (docs/performance.md, "Workers").
SMALL_HIDDEN = 64


def largest_hidden(spec) -> int:
    """The widest hidden size a study's trials can train: the top of its search space, else its fixed size."""
    for param in spec.space:
        if param.name == "hidden_size":
            return int(max([param.high or 0, *(int(c) for c in param.choices)]))
    return spec.train_config({}).hidden_size


def auto_workers(spec, cores: int | None = None) -> tuple[int, str]:
    """How many worker processes to run ``spec`` with on this machine, and why, in words."""
    cores = cores or available_cores()
    hidden = largest_hidden(spec)
    if cores >= 2 and hidden <= SMALL_HIDDEN:
        return 2, f"2 workers x {cores // 2} thread(s): hidden <= {hidden}, too small a step for {cores} threads"
    return 1, f"1 worker x {cores} threads: hidden up to {hidden}"


def bench(preset: str, *, archs: list[str] | None = None, tasks: list[str] | None = None,
          folder: Path | None = None, out: Path | str = "reports", seeds: int | None = None,
          trials: int | None = None, storage: str | None = None, tracking_uri: str | None = None,
          workers: int | None = None, quiet: bool = False) -> tuple[list[StudyResult], tuple]:
    """Tune (and confirm, where the preset asks) task x architecture; returns the results and ``write_report``'s
    (path, snapshot, figures). ``workers`` None: ``auto_workers`` picks per study."""
    archs = archs or [arch for arch, spec in ARCHITECTURES.items() if "plugin" not in spec]
    tasks = tasks or list(BUILTIN_TASKS)
    for name, chosen, valid in (("arch", archs, ARCHITECTURES), ("task", tasks, TASKS)):
        for value in chosen:
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if seeds is not None and seeds < 0:
        raise ConfigError(f"--seeds must be >= 0, got {seeds}")
    folder = folder or studies_dir()
    specs = [load_study(folder / f"{task}.toml", arch, preset).with_budget(trials) for task in tasks for arch in archs]
    for spec in specs:
        check_device(spec)
    results = []
    for spec in specs:
        count, why = (workers, "as asked") if workers else auto_workers(spec)
        if not quiet:
            print(f"{spec.default_study_name()}: {why}", flush=True)
        result = run_study(spec, storage=storage, tracking_uri=tracking_uri, workers=count, quiet=quiet)
        results.append(result)
        count = spec.confirm_seeds if seeds is None else seeds
        if count and result.best_run_id:
            for length in (None, *spec.confirm_lengths):
                confirm(spec.task, spec.arch, seeds=count, study_name=result.study_name, storage=storage,
                        tracking_uri=tracking_uri, train_length=length, epochs=spec.confirm_epochs or None,
                        train_size=spec.confirm_train_size, quiet=quiet)
    return results, write_report(out, tracking_uri=tracking_uri, storage=storage)


def results_table(results: list[StudyResult]) -> str:
    """One markdown row per study: trial counts, best validation accuracy, its test accuracy, time, parameters."""
    lines = ["| study | trials (complete/pruned/fail) | best val acc % | its test acc % | minutes | best params |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c = r.counts
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.best_params.items())
        lines.append(f"| {r.study_name} | {c.get('COMPLETE', 0)}/{c.get('PRUNED', 0)}/{c.get('FAIL', 0)} | "
                     f"{format_value(r.best_value)} | {format_value(r.best_test_acc)} | {r.seconds / 60:.1f} | "
                     f"{params} |")
    return "\n".join(lines)
