"""What each ``rnnbench`` subcommand does with its parsed arguments: call the module that does the work, print.

Example: rnnbench train --task addition --arch lstm --hidden-size 10 --lr 0.01 --json

Handlers import their modules when they run: commands that never train (report, ui, studies) then start without
torch, and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

from .config import ConfigError, TrainConfig
from .registry import task_record

NOT_FLAGS = {"task", "arch"}  # TrainConfig fields set by their own flags


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in NOT_FLAGS}
    return TrainConfig.for_task(args.task, args.arch, **overrides)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError, write_report

    start = time.perf_counter()
    try:
        path, snap, figures = write_report(args.out, tracking_uri=args.tracking_uri, storage=args.storage,
                                           experiments=args.experiment, timestamp=not args.no_timestamp)
    except ReportError as error:
        print(f"rnnbench report: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {path} ({len(snap.runs)} runs, {len(figures.written)} figures) "
              f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from .catalog import ARCHITECTURES
    from .perf import run

    for name, value in (("threads", args.threads), ("hidden-size", args.hidden_size),
                        ("batch-size", args.batch_size), ("batches", args.batches), ("repeats", args.repeats)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be a positive integer, got {value}")
    unknown = [arch for arch in args.arch or [] if arch not in ARCHITECTURES]
    if unknown:
        raise ConfigError(f"unknown arch {', '.join(unknown)}; valid: {', '.join(ARCHITECTURES)}")
    run(quick=args.quick, threads=args.threads, out=args.out, data_dir=args.data_dir, hidden=args.hidden_size,
        batch=args.batch_size, batches=args.batches, repeats=args.repeats,
        archs=tuple(args.arch or default_archs()), quiet=args.quiet, device=args.device)
    if not args.quiet:
        print(f"written to {args.out}", file=sys.stderr)
    return 0


def default_archs() -> list[str]:
    """What perf measures without --arch: the built-ins and the cells of the plugins the user named (the cells
    rnnbench ships as plugins only when named, so that a default run stays comparable with earlier ones)."""
    from .catalog import BUILTIN_ARCHITECTURES
    from .plugins import LOADED

    return [*BUILTIN_ARCHITECTURES, *(cell for plugin in LOADED.values() for cell in plugin.cells)]


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import reproduce

    if args.list:
        for e in reproduce.select(args.only):
            print(f"{e.id:<20} notebook {e.notebook:6.2f}%  {e.title}")
        return 0
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {args.epochs}")
    overrides = {"threads": args.threads} if args.threads is not None else {}
    task_data = {"data_dir": args.data_dir} if args.data_dir else None
    rows = reproduce.reproduce(args.only, epochs=args.epochs, seeds=args.seeds, tracking_uri=args.tracking_uri,
                               force=args.force, quiet=args.quiet, overrides=overrides, task_data=task_data)
    if args.epochs is not None:
        print(f"(epochs overridden to {args.epochs}: not the notebook's configuration)")
    print(reproduce.format_table(rows))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import run

    return run(args.images, run_id=args.run_id, model=args.model, tracking_uri=args.tracking_uri,
               as_json=args.json, sheet=args.sheet)


def cmd_register(args: argparse.Namespace) -> int:
    from .champion import register_champion

    info = register_champion(args.run_id, args.tracking_uri, name=args.name, alias=args.alias)
    state = "registered as new" if info["created"] else "already registered as"
    print(f"run {info['run_id']} {state} {info['name']} version {info['version']}; "
          f"alias {info['alias']} -> version {info['version']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .schema import Metric
    from .tracking import check_system_metrics, per_length, task_metrics, tracked_run
    from .train import fit, resolve_device

    config = config_from_args(args)  # validated before anything touches the store
    resolve_device(config.device)
    if args.system_metrics:
        check_system_metrics()
    task_data = {"data_dir": args.data_dir} if task_record(config.task).data_dir and args.data_dir else None
    with tracked_run(config, tracking_uri=args.tracking_uri, experiment=args.experiment,
                     system_metrics=args.system_metrics) as tracker:
        result = fit(config, tracker=tracker, quiet=args.quiet or args.json, task_data=task_data)
    tested = task_metrics(config.task, result.test)  # the metrics the task's record names, objective first
    summary = {"run_id": tracker.run_id, "task": config.task, "arch": config.arch,
               **{Metric.of("test", name): value for name, value in tested.items()},
               "val_acc": result.val["acc"], "best_epoch": result.best_epoch}
    for name, values in per_length(config.task, result.test).items():
        summary[Metric.by_length(name)] = {str(n): value for n, value in values.items()}
    if args.json:
        print(json.dumps(summary))
    else:
        record = task_record(config.task)
        scores = "  ".join(f"{Metric.of('test', name)} {record.shown(name, value, unit=True)}"
                           for name, value in tested.items())
        print(f"run {tracker.run_id}: {config.arch} on {config.task}  {scores}  (best epoch {result.best_epoch})")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import default_data_dir, fetch, raw_dir

    folder = fetch(Path(args.data_dir) if args.data_dir else default_data_dir())
    print(f"MNIST verified under {raw_dir(folder)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from .server import ui

    return ui(args.tracking_uri, args.host, args.port)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import dashboard

    _warn_password_on_argv(args)
    return dashboard(args.storage, args.tracking_uri, args.host, args.port)


def cmd_tune(args: argparse.Namespace) -> int:

    from .tuning import STORAGE_ENV, format_value, load_study, run_study, run_worker

    spec = load_study(args.study_file, args.arch, args.preset).with_budget(args.trials, args.timeout)
    _warn_password_on_argv(args)
    if args.system_metrics:
        from .tracking import check_system_metrics

        check_system_metrics()
    if args.worker is not None:
        # The launcher stops its workers with SIGINT. A launcher started in the background by a script
        # (`cmd &`, nohup) passes on an ignored SIGINT, and Python then never raises KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        run_worker(spec, args.study_name, os.environ[STORAGE_ENV], args.tracking_uri, spec.trials,
                   spec.timeout, threads=args.threads, quiet=args.quiet, system_metrics=args.system_metrics)
        return 0
    result = run_study(spec, study_name=args.study_name, storage=args.storage, tracking_uri=args.tracking_uri,
                       workers=args.workers, quiet=args.quiet, system_metrics=args.system_metrics)
    counts = " ".join(f"{k.lower()} {v}" for k, v in sorted(result.counts.items()))
    print(f"study {result.study_name}: best val_acc {format_value(result.best_value)}% "
          f"(test {format_value(result.best_test_acc)}%) run {result.best_run_id}; {counts}; "
          f"{result.seconds:.0f}s; parent run {result.parent_run_id}")
    return 0 if result.status == "FINISHED" else 1


def _warn_password_on_argv(args: argparse.Namespace) -> None:
    from .store import mask_url
    from .tuning import STORAGE_ENV

    for flag, value, env in (("--storage", args.storage, STORAGE_ENV),
                             ("--tracking-uri", args.tracking_uri, "MLFLOW_TRACKING_URI")):
        if value and mask_url(value) != value:
            print(f"rnnbench: warning: {flag} holds a password, visible to every user in the process list; "
                  f"set {env} instead", file=sys.stderr)


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench import bench, results_table

    _warn_password_on_argv(args)
    results, (path, snap, figures) = bench(args.preset, archs=args.archs, tasks=args.tasks,
                          folder=Path(args.studies_dir) if args.studies_dir else None, out=args.out, seeds=args.seeds,
                          trials=args.trials, storage=args.storage, tracking_uri=args.tracking_uri,
                          workers=args.workers, quiet=args.quiet)
    print("\n" + results_table(results))
    print(f"\nreport: {path} ({len(snap.runs)} runs, {len(figures.written)} figures)")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from .confirm import confirm

    _warn_password_on_argv(args)
    confirm(args.task, args.arch, seeds=args.seeds, preset=args.preset, study_name=args.study_name,
            storage=args.storage, tracking_uri=args.tracking_uri, train_length=args.train_length,
            epochs=args.epochs, train_size=args.train_size, threads=args.threads, quiet=args.quiet,
            together=not args.one_at_a_time)
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from .store import mask_url
    from .tuning import STORAGE_ENV, format_value, list_studies, resolve_storage_url
    from .tuning.storage import existing_storage

    storage = resolve_storage_url(args.storage, args.tracking_uri)
    if args.storage or os.environ.get(STORAGE_ENV):
        storage = existing_storage(storage, args.tracking_uri)  # a storage named but absent is a typo: refused
    elif not os.path.exists(storage):  # the default journal, before the first study: nothing to list or create
        print(f"no studies yet: {storage} does not exist (rnnbench tune creates it)")
        return 0
    rows = list_studies(storage, args.tracking_uri)
    if not rows:
        print(f"no studies in {mask_url(storage)}")
        return 0
    print(f"studies in {mask_url(storage)}")
    print(f"{'study':<28} {'complete':>8} {'pruned':>6} {'fail':>4} {'running':>7} {'waiting':>7} "
          f"{'best val %':>10} {'test %':>6} {'best trial':>10}")
    for row in rows:
        best_trial = "-" if row["best_trial"] is None else str(row["best_trial"])
        print(f"{row['study']:<28} {row.get('COMPLETE', 0):>8} {row.get('PRUNED', 0):>6} {row.get('FAIL', 0):>4} "
              f"{row.get('RUNNING', 0):>7} {row.get('WAITING', 0):>7} {format_value(row['best_value']):>10} "
              f"{format_value(row['best_test_acc']):>6} {best_trial:>10}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from .server import serve
    from .store import mask_url

    if args.backend_store_uri and mask_url(args.backend_store_uri) != args.backend_store_uri:
        print("rnnbench: warning: --backend-store-uri holds a password, visible in the process list; "
              "set MLFLOW_BACKEND_STORE_URI instead", file=sys.stderr)
    return serve(backend_store_uri=args.backend_store_uri, artifacts_destination=args.artifacts_destination,
                 host=args.host, port=args.port, workers=args.workers, allowed_hosts=args.allowed_hosts,
                 auth=args.auth)
