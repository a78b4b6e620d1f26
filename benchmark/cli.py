"""The ``rnnbench`` command: subcommands and argument handling only.

Example: rnnbench train --task addition --arch lstm --hidden-size 10 --lr 0.01 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from .config import TASK_DEFAULTS, ConfigError, TrainConfig

# Fields set by their own flags or meaningless on the command line.
_NOT_FLAGS = {"task", "arch"}
_HELP = {
    "hidden_size": "hidden units per direction and layer",
    "loss": "ce or mse",
    "lr": "learning rate (peak rate for --schedule onecycle)",
    "schedule": "constant, cosine or onecycle",
    "optimizer": "adam or adamw",
    "clip_grad": "max gradient norm; 0 disables",
    "early_stop": "stop after N epochs without validation improvement; 0 disables",
    "train_size": "training examples (mnist: subset of the 50k; addition: strings); 0 = default",
    "train_lengths": "addition: train only on these lengths (e.g. 3)",
    "eval_lengths": "addition: generalisation lengths tested beyond max-train-length",
    "device": "auto, cpu or cuda",
    "impl": "recurrent kernel: auto or native",
    "threads": "torch threads; 0 = torch's default",
}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, default None so the task's defaults apply."""
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        if spec.name in _NOT_FLAGS:
            continue
        flag = "--" + spec.name.replace("_", "-")
        kind = hints[spec.name]
        if typing.get_origin(kind) is tuple:
            parser.add_argument(flag, type=int, nargs="+", default=None, help=_HELP.get(spec.name))
        else:
            parser.add_argument(flag, type=kind, default=None,
                                help=f"{_HELP.get(spec.name, '')} (default: {spec.default})".strip())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_FLAGS}
    return TrainConfig.for_task(args.task, args.arch, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rnnbench", description="Benchmark recurrent networks, tracked in MLflow.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    train = commands.add_parser("train", help="train one architecture on one task as a tracked run")
    train.add_argument("--task", required=True, help=f"one of: {', '.join(TASK_DEFAULTS)}")
    train.add_argument("--arch", required=True, help="rnn, lstm, gru, birnn, bilstm or bigru")
    add_config_flags(train)
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    train.add_argument("--experiment", help="MLflow experiment (default: the task name)")
    train.add_argument("--data-dir", help="MNIST folder (default: $RNNBENCH_DATA or ./data)")
    train.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(handler=cmd_train)

    data = commands.add_parser("data", help="manage datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    fetch = data_commands.add_parser("fetch", help="get MNIST onto disk and verify its md5s")
    fetch.add_argument("--data-dir", help="target folder (default: $RNNBENCH_DATA or ./data)")
    fetch.set_defaults(handler=cmd_data_fetch)

    ui = commands.add_parser("ui", help="start the MLflow UI over the tracking store")
    ui.add_argument("--tracking-uri", help="store to browse (default: sqlite store under ./mlruns)")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=cmd_ui)

    # --- reproduce / predict / register (issue 5) ---
    reproduce = commands.add_parser("reproduce", help="re-run the course notebook's experiments and compare")
    reproduce.add_argument("--only", nargs="+", metavar="NAME",
                           help="mnist, addition and/or experiment ids (default: all; see --list)")
    reproduce.add_argument("--epochs", type=int, help="override the notebook's 10 epochs (smoke checks only)")
    reproduce.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 of each (default: 1)")
    reproduce.add_argument("--threads", type=int, help="torch threads; 0 = torch's default")
    reproduce.add_argument("--force", action="store_true", help="re-run configurations already FINISHED")
    reproduce.add_argument("--list", action="store_true", help="print the experiments and exit")
    reproduce.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    reproduce.add_argument("--data-dir", help="MNIST folder (default: $RNNBENCH_DATA or ./data)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    reproduce.set_defaults(handler=cmd_reproduce)

    predict = commands.add_parser("predict", help="classify digit images (PNG/JPEG) with a trained MNIST model")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", dest="run_id", metavar="RUN_ID", help="an MNIST run's id")
    source.add_argument("--model", metavar="NAME[@ALIAS]", help="a registered model, e.g. mnist-lstm@champion")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    predict.add_argument("--sheet", metavar="OUT.png",
                         help="write a contact sheet of the inputs as the model sees them")
    predict.set_defaults(handler=cmd_predict)

    register = commands.add_parser("register", help="register a run's model as <task>-<arch>@champion")
    register.add_argument("run_id", metavar="RUN_ID")
    register.add_argument("--name", help="registered model name (default: <task>-<arch>)")
    register.add_argument("--alias", default="champion")
    register.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    register.set_defaults(handler=cmd_register)
    return parser


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
    from .registry import register_champion

    info = register_champion(args.run_id, args.tracking_uri, name=args.name, alias=args.alias)
    state = "registered as new" if info["created"] else "already registered as"
    print(f"run {info['run_id']} {state} {info['name']} version {info['version']}; "
          f"alias {info['alias']} -> version {info['version']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .tracking import tracked_run
    from .train import fit

    config = config_from_args(args)  # validated before anything touches the store
    task_data = {"data_dir": args.data_dir} if args.task == "mnist" and args.data_dir else None
    with tracked_run(config, tracking_uri=args.tracking_uri, experiment=args.experiment) as tracker:
        result = fit(config, tracker=tracker, quiet=args.quiet or args.json, task_data=task_data)
    summary = {"run_id": tracker.run_id, "task": config.task, "arch": config.arch,
               "test_acc": result.test["acc"], "val_acc": result.val["acc"], "best_epoch": result.best_epoch}
    if "seq_acc" in result.test:
        summary["test_seq_acc"] = result.test["seq_acc"]
        summary["test_bit_acc_by_len"] = {str(n): acc for n, acc in result.test["bit_acc_by_len"].items()}
    if args.json:
        print(json.dumps(summary))
    else:
        extra = f"  test_seq_acc {100 * summary['test_seq_acc']:.2f}%" if "test_seq_acc" in summary else ""
        print(f"run {tracker.run_id}: {config.arch} on {config.task}  test_acc {100 * result.test['acc']:.2f}%"
              f"{extra}  (best epoch {result.best_epoch})")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import default_data_dir, fetch, raw_dir

    folder = fetch(Path(args.data_dir) if args.data_dir else default_data_dir())
    print(f"MNIST verified under {raw_dir(folder)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from .tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} over {uri} (Ctrl-C to stop)", file=sys.stderr)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    from .data import DataError
    from .train import NonFiniteLossError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"rnnbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (DataError, NonFiniteLossError) as error:
        print(f"rnnbench {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rnnbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
