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
    "impl": "recurrent kernel: native (nn.LSTM etc.), loop (explicit cell loop, same weights) or auto",
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
    # -- perf (issue 7): the performance harness
    perf = commands.add_parser("perf", help="measure training/evaluation speed against the notebook's loops")
    perf.add_argument("--quick", action="store_true", help="smoke run: a few iterations, synthetic MNIST if none")
    perf.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    perf.add_argument("--out", default="reports/performance.md", help="markdown file to write")
    perf.add_argument("--data-dir", help="MNIST folder (default: $RNNBENCH_DATA or ./data)")
    perf.add_argument("--hidden-size", type=int, help="MNIST hidden size (default: 128)")
    perf.add_argument("--batch-size", type=int, help="MNIST batch size (default: 500)")
    perf.add_argument("--batches", type=int, help="timed batches per measurement (default: 10; --quick 2)")
    perf.add_argument("--repeats", type=int, help="interleaved rounds, best counts (default: 2; --quick 1)")
    perf.add_argument("--arch", nargs="+", help="architectures to measure (default: all)")
    perf.add_argument("--quiet", action="store_true", help="write the file only, print nothing")
    perf.set_defaults(handler=cmd_perf)
    return parser


def cmd_perf(args: argparse.Namespace) -> int:
    from .models import ARCHITECTURES
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
        archs=tuple(args.arch or ARCHITECTURES), quiet=args.quiet)
    if not args.quiet:
        print(f"written to {args.out}", file=sys.stderr)
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
