# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion looks for this marker)
"""The ``rnnbench`` command line: its subcommands and options; ``benchmark.commands`` holds what each one does.

Example: rnnbench train --task addition --arch lstm --hidden-size 10 --lr 0.01 --json

Plugins (``--plugin``, before the subcommand) are loaded before the parser is built, so that ``--arch`` and
``--task`` list (and complete) what they registered. Shell completion is argcomplete's:
``eval "$(register-python-argcomplete rnnbench)"``; the parser answers it only when the shell asks.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import typing

from . import catalog, plugins
from . import commands as handlers
from .catalog import ARCHITECTURES, PRESETS, TASKS
from .commands import NOT_FLAGS
from .config import ConfigError, TrainConfig

_HELP = {
    "hidden_size": "hidden units per direction and layer",
    "num_layers": "stacked recurrent layers",
    "dropout": "dropout rate before the head, and between stacked layers",
    "loss": "training loss",
    "lr": "learning rate (peak rate for --schedule onecycle)",
    "epochs": "passes over the training set",
    "batch_size": "examples per optimisation step",
    "seed": "seed of the initial weights, the data order and the synthetic tasks' generated data",
    "optimizer": "optimiser",
    "weight_decay": "weight decay on every parameter, biases included (L2 for adam, decoupled for adamw)",
    "schedule": "learning-rate schedule",
    "clip_grad": "max gradient norm; 0 disables",
    "early_stop": "stop after N epochs without validation improvement; 0 disables",
    "train_size": "training examples (mnist: subset of the 50k; addition: strings); 0 = default",
    "val_size": "validation examples (mnist and pixel mnist: the first part of the 10k); 0 = all",
    "train_lengths": "addition: train only on these lengths, e.g. 3 (default: all of 1..max-train-length)",
    "max_train_length": "addition, parity, modular_counting: train on lengths 1..N; adding_problem, selective_copy, "
                        "mqar: the sequence length T (docs/tasks.md)",
    "eval_lengths": "addition: generalisation lengths tested beyond max-train-length",
    "input_scale": "mnist pixels: standard (mean/std) or unit ([0, 1], the notebook's ToTensor)",
    "device": "where to train",
    "impl": "recurrent kernel: native (nn.LSTM etc.), aten (the same with oneDNN off), loop (explicit cell loop, "
            "same weights), fused (that loop with C++ LSTM/GRU steps, built on first use) or auto",
    "threads": "torch threads; 0 = torch's default",
}
# TrainConfig fields whose values are catalogue names: their help lists them and the shell completes them.
_CHOICES = {"loss": "LOSSES", "optimizer": "OPTIMIZERS", "schedule": "SCHEDULES", "device": "DEVICES",
            "input_scale": "INPUT_SCALES", "impl": "IMPLS"}


REDELIVER_SECONDS = 0.05  # an interrupt Python dropped comes again this much later
SYSTEM_METRICS_HELP = "log MLflow's system metrics (CPU, memory, GPU; needs psutil: the system-metrics extra)"


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, default None so the task's defaults apply."""
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        if spec.name in NOT_FLAGS:
            continue
        flag = "--" + spec.name.replace("_", "-")
        kind = hints[spec.name]
        text = _HELP.get(spec.name, "")  # tests/test_cli.py fails a field without its help line
        names = getattr(catalog, _CHOICES[spec.name]) if spec.name in _CHOICES else ()
        if not all(name in text for name in names):
            text = f"{text}: one of {', '.join(names)}"
        if typing.get_origin(kind) is tuple:
            default = " ".join(map(str, spec.default))
            action = parser.add_argument(flag, type=int, nargs="+", default=None, metavar="N",
                                         help=f"{text} (default: {default})" if default else text)
        else:
            action = parser.add_argument(flag, type=kind, default=None,
                                         help=f"{text} (default: {spec.default})".strip())
        if names:
            action.completer = completer(names)


# Commands that read the store or serve it: they never build a model, so they load plugins (which import torch)
# only when --plugin names one.
STORE_ONLY_COMMANDS = {"report", "ui", "dashboard", "studies", "server", "data"}


def arch_help() -> str:
    return f"one of: {', '.join(ARCHITECTURES)}"


def task_help() -> str:
    return f"one of: {', '.join(TASKS)}"


def completer(names):
    """An argcomplete completer offering ``names`` (as they are when the parser is built, plugins loaded)."""
    offered = list(names)
    return lambda **_: offered


def names_flag(parser: argparse.ArgumentParser, flag: str, names, text: str, **options) -> argparse.Action:
    """A flag whose values are catalogue names: validated by ``TrainConfig`` (one line naming the valid ones),
    listed in its help and completed by the shell."""
    action = parser.add_argument(flag, help=text, **options)
    action.completer = completer(names)
    return action


def add_command(commands, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in ``rnnbench --help``, and ``description`` (default: the summary) atop its own."""
    return commands.add_parser(name, help=summary, description=description or summary[0].upper() + summary[1:] + ".")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnbench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return f"{__version__} (not installed)"


def global_plugins(argv: list[str]) -> tuple[list[str], str | None]:
    """The ``--plugin`` values and the subcommand, read before the full parser exists."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, rest = pre.parse_known_args(argv)
    return known.plugin, next((token for token in rest if not token.startswith("-")), None)


def load_plugins_for(command: str | None, specs: list[str]) -> None:
    if command is None or (command in STORE_ONLY_COMMANDS and not specs):
        return
    plugins.load_plugins(specs)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rnnbench", description="Benchmark recurrent networks, tracked in MLflow.")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE",
                        help="a Python file or module that registers cells or tasks (repeatable; also "
                             f"${plugins.PLUGINS_ENV}, colon-separated, and entry points {plugins.ENTRY_POINT_GROUP})")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND",
                                     help="what to do; rnnbench COMMAND --help lists its options")

    train = add_command(commands, "train", "train one architecture on one task as a tracked run")
    names_flag(train, "--task", TASKS, task_help(), required=True)
    names_flag(train, "--arch", ARCHITECTURES, arch_help(), required=True)
    add_config_flags(train)
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    train.add_argument("--experiment", help="MLflow experiment (default: the task name)")
    train.add_argument("--data-dir", help="MNIST folder (default: $RNNBENCH_DATA or ./data)")
    train.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.add_argument("--system-metrics", action="store_true", help=SYSTEM_METRICS_HELP)
    train.set_defaults(handler=handlers.cmd_train)

    data = add_command(commands, "data", "manage datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser,
                                        metavar="ACTION", help="what to do with the data")
    fetch = add_command(data_commands, "fetch", "get MNIST onto disk and verify its md5s")
    fetch.add_argument("--data-dir", help="target folder (default: $RNNBENCH_DATA or ./data)")
    fetch.set_defaults(handler=handlers.cmd_data_fetch)

    ui = add_command(commands, "ui", "start the MLflow UI over the tracking store")
    ui.add_argument("--tracking-uri", help="store to browse (default: sqlite store under ./mlruns)")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    ui.set_defaults(handler=handlers.cmd_ui)

    dashboard = add_command(commands, "dashboard", "start optuna-dashboard over the studies' Optuna storage",
                            "Start optuna-dashboard over the Optuna storage the studies use, on this machine only. "
                            "Needs the optional extra: pip install -e \".[dashboard]\".")
    dashboard.add_argument("--storage", help="Optuna storage URL or .journal path (default: $RNNBENCH_STORAGE, else "
                           "mlruns/optuna.journal)")
    dashboard.add_argument("--tracking-uri", help="MLflow tracking URI whose folder holds the default storage")
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dashboard.set_defaults(handler=handlers.cmd_dashboard)
    add_tuning_commands(commands)

    report = add_command(commands, "report", "write reports/report.md and figures from the tracking store")
    report.add_argument("--tracking-uri", help="store to read (default: sqlite store under ./mlruns)")
    report.add_argument("--storage", help="Optuna storage: RDB URL or journal file (default: optuna.journal "
                                          "beside the tracking store, if present)")
    report.add_argument("--out", default="reports", help="folder for report.md and figures/ (default: reports)")
    report.add_argument("--experiment", nargs="+", help="MLflow experiments to read (default: all with runs)")
    report.add_argument("--no-timestamp", action="store_true",
                        help="leave out the generation time, so the same store gives byte-identical markdown")
    report.add_argument("--quiet", action="store_true", help="no summary line")
    report.set_defaults(handler=handlers.cmd_report)

    perf = add_command(commands, "perf", "measure training/evaluation speed against the notebook's loops")
    perf.add_argument("--quick", action="store_true", help="smoke run: a few iterations, synthetic MNIST if none")
    perf.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    perf.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                      help="where to measure: cpu (every section) or cuda (training step, MNIST against the "
                           "notebook, addition) (default: cpu)")
    perf.add_argument("--out", default="reports/performance.md", help="markdown file to write")
    perf.add_argument("--data-dir", help="MNIST folder (default: $RNNBENCH_DATA or ./data)")
    perf.add_argument("--hidden-size", type=int, help="MNIST hidden size (default: 128)")
    perf.add_argument("--batch-size", type=int, help="MNIST batch size (default: 500)")
    perf.add_argument("--batches", type=int, help="timed batches per measurement (default: 10; --quick 2)")
    perf.add_argument("--repeats", type=int, help="interleaved rounds, best counts (default: 2; --quick 1)")
    names_flag(perf, "--arch", ARCHITECTURES, f"architectures to measure, {arch_help()} (default: the built-ins "
               "and the cells of plugins named with --plugin)", nargs="+")
    perf.add_argument("--quiet", action="store_true", help="write the file only, print nothing")
    perf.set_defaults(handler=handlers.cmd_perf)

    reproduce = add_command(commands, "reproduce", "re-run the course notebook's experiments and compare")
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
    reproduce.set_defaults(handler=handlers.cmd_reproduce)

    predict = add_command(commands, "predict", "classify digit images (PNG/JPEG) with a trained MNIST model")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", dest="run_id", metavar="RUN_ID", help="an MNIST run's id")
    source.add_argument("--model", metavar="NAME[@ALIAS]", help="a registered model, e.g. mnist-lstm@champion")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, one digit each")
    predict.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    predict.add_argument("--sheet", metavar="OUT.png",
                         help="write a contact sheet of the inputs as the model sees them")
    predict.set_defaults(handler=handlers.cmd_predict)

    register = add_command(commands, "register", "register a run's model as <task>-<arch>@champion")
    register.add_argument("run_id", metavar="RUN_ID", help="the MLflow run whose checkpoint is registered")
    register.add_argument("--name", help="registered model name (default: <task>-<arch>)")
    register.add_argument("--alias", default="champion", help="alias set on the new version (default: champion)")
    register.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store under ./mlruns)")
    register.set_defaults(handler=handlers.cmd_register)
    add_server_command(commands)
    return parser


# --- tune / bench / confirm / studies: the logic is in benchmark.tuning, benchmark.bench and benchmark.confirm ---


def add_tuning_commands(commands) -> None:

    tune = add_command(commands, "tune", "tune one architecture with an Optuna study; each trial an MLflow run")
    tune.add_argument("study_file", metavar="STUDY.toml", help="study definition, e.g. studies/mnist.toml")
    names_flag(tune, "--arch", ARCHITECTURES, arch_help(), required=True)
    tune.add_argument("--preset", default="quick", choices=PRESETS, help="budget preset (default: quick)")
    _add_session_flags(tune)
    tune.add_argument("--trials", type=int, help="finished trials the study should hold (default: the preset's)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after S seconds (default: the preset's)")
    tune.add_argument("--study-name", help="default: <task>-<arch>-<preset>; the same name resumes the study")
    tune.add_argument("--system-metrics", action="store_true", help=SYSTEM_METRICS_HELP + " on every trial's run")
    tune.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: one worker of --workers N
    tune.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    tune.set_defaults(handler=handlers.cmd_tune)

    bench = add_command(commands, "bench",
                        "tune and seed-confirm every architecture on each task at a preset budget, then report")
    bench.add_argument("--preset", required=True, choices=PRESETS, help="budget preset of every study")
    names_flag(bench, "--archs", ARCHITECTURES, f"architectures, {arch_help()} (default: every cell rnnbench "
               "ships)", nargs="+")
    names_flag(bench, "--tasks", TASKS, f"tasks, {task_help()} (default: mnist addition)", nargs="+")
    bench.add_argument("--studies-dir", help="folder with <task>.toml files (default: ./studies)")
    bench.add_argument("--out", default="reports", help="where the report is written (default: reports)")
    bench.add_argument("--seeds", type=int, help="fresh-seed confirmations of each study's best trial (default: "
                       "the preset's [confirm] seeds; 0 = none)")
    bench.add_argument("--trials", type=int, help="finished trials each study should hold (default: the preset's); "
                       "--trials 1 tries a preset's every study cheaply")
    bench.add_argument("--workers", type=int, help="processes on each study (default: per study, two one-thread "
                       "workers for a model of hidden size <= 64 on a machine of 2 cores or more, else one)")
    _add_session_flags(bench, workers=False)
    bench.set_defaults(handler=handlers.cmd_bench)

    confirm = add_command(commands, "confirm", "retrain a study's best configuration with fresh seeds")
    names_flag(confirm, "--task", TASKS, task_help(), required=True)
    names_flag(confirm, "--arch", ARCHITECTURES, arch_help(), required=True)
    confirm.add_argument("--seeds", type=int, default=3, help="how many fresh seeds (default: 3)")
    confirm.add_argument("--preset", choices=PRESETS, help="which study when several exist (task-arch-preset)")
    confirm.add_argument("--study-name", help="the study, when not named task-arch-preset")
    confirm.add_argument("--train-length", type=int, help="addition: train on this one length only (the notebook's "
                         "fixed-length experiments); tests still cover 1..20 and the generalisation lengths")
    confirm.add_argument("--epochs", type=int, help="train the seeds this long (default: as the trial)")
    confirm.add_argument("--train-size", type=int, help="training examples of the seeds, 0 = all (default: as the "
                         "trial)")
    confirm.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, all cores)")
    confirm.add_argument("--one-at-a-time", action="store_true", help="train the seeds one after the other, not as "
                         "one stacked model (rnn, lstm, gru and their bidirectional forms stack; others never do)")
    _add_session_flags(confirm, workers=False)
    confirm.set_defaults(handler=handlers.cmd_confirm)

    studies = add_command(commands, "studies", "list the studies in the Optuna storage")
    studies.add_argument("--storage", help="Optuna storage (default: $RNNBENCH_STORAGE, else mlruns/optuna.journal)")
    studies.add_argument("--tracking-uri", help="MLflow tracking URI whose folder holds the default storage")
    studies.set_defaults(handler=handlers.cmd_studies)


def _add_session_flags(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    if workers:
        parser.add_argument("--workers", type=int, default=1, help="processes on one study; torch threads divided")
    parser.add_argument("--storage", help="Optuna storage URL or .journal path (default: $RNNBENCH_STORAGE, else "
                        "mlruns/optuna.journal); put passwords in $RNNBENCH_STORAGE, not on the command line")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the sqlite "
                        "store under ./mlruns), e.g. http://HOST:5000 from rnnbench server")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Errors printed as one line with exit code 1. Their modules import torch, so they are looked up only
    once a command has loaded them: commands that never train (report, ui) start without torch."""
    names = (("benchmark.data", "DataError"), ("benchmark.train", "NonFiniteLossError"))
    return tuple(getattr(sys.modules[module], name) for module, name in names if module in sys.modules)


# --- server: the logic is in benchmark.server ---


def add_server_command(commands) -> None:
    server = add_command(commands, "server", "MLflow tracking server with artifact proxying, for many workers")
    server.add_argument("--backend-store-uri", help="runs database (default: $MLFLOW_BACKEND_STORE_URI, else "
                        "mlruns/mlflow.db); put passwords in $MLFLOW_BACKEND_STORE_URI, not on the command line")
    server.add_argument("--artifacts-destination",
                        help="where proxied artifacts are stored (default: mlruns/artifacts)")
    server.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1; 0.0.0.0 for other "
                        "machines, with --auth)")
    server.add_argument("--auth", action="store_true", help="require a user name and password (MLflow's basic-auth "
                        "app); the admin password comes from $MLFLOW_AUTH_ADMIN_PASSWORD, workers send "
                        "$MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD")
    server.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    server.add_argument("--workers", type=int, help="server processes (default: MLflow's)")
    server.add_argument("--allowed-hosts", help="Host headers accepted besides localhost and private IPs, "
                        "e.g. mlflow.example.org")
    server.set_defaults(handler=handlers.cmd_server)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill, timeout, a scheduler stopping the job) ends a command the way Ctrl-C does: the running
    trial is failed and its run closed, worker processes are told, nothing stays RUNNING. An interrupt (either
    signal) that Python drops is delivered again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def redeliver(unraisable):
        # A signal handled inside a weakref callback or __del__ raises there, where Python only prints and drops
        # the exception: deliver it again shortly, from a thread, so that it lands in ordinary code (not in here).
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            timer = threading.Timer(REDELIVER_SECONDS, _thread.interrupt_main, args=(signal.SIGTERM,))
            timer.daemon = True
            timer.start()
        else:
            previous_hook(unraisable)

    previous, previous_hook = signal.signal(signal.SIGTERM, interrupt), sys.unraisablehook
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def completion_words() -> list[str] | None:
    """The words a shell asks argcomplete to complete (program name left out); None when it is not asking."""
    if "_ARGCOMPLETE" not in os.environ:
        return None
    line = os.environ.get("COMP_LINE", "")
    return line[: int(os.environ.get("COMP_POINT", len(line)))].split()[1:]


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit; returns at once when the shell is not asking."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:  # completion registered from another environment: offer nothing, run nothing
        sys.exit(1)
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    words = completion_words()
    specs, command = global_plugins(argv if words is None else words)  # completing: plugins of the line typed
    try:
        load_plugins_for(command, specs)  # before anything is parsed or written
    except ConfigError as error:
        print(f"rnnbench: error: {error}", file=sys.stderr)
        return 2
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return args.handler(args)
    except ConfigError as error:
        print(f"rnnbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if not isinstance(error, _one_line_errors()):
            raise
        print(f"rnnbench {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rnnbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
