"""Bad input: one clear line, exit code 2, nothing written to the store."""

import pytest

from benchmark import cli, commands


@pytest.mark.parametrize("argv, message", [
    (["--task", "mnist", "--arch", "transformer"], "unknown arch 'transformer'; valid: rnn, lstm, gru, birnn"),
    (["--task", "imagenet", "--arch", "lstm"], "unknown task 'imagenet'; valid: mnist, addition"),
    (["--task", "mnist", "--arch", "lstm", "--loss", "hinge"], "unknown loss 'hinge'; valid: ce, mse"),
    (["--task", "mnist", "--arch", "lstm", "--hidden-size", "0"], "hidden_size must be a positive integer"),
    (["--task", "mnist", "--arch", "lstm", "--lr", "-0.1"], "lr must be > 0"),
    (["--task", "mnist", "--arch", "lstm", "--schedule", "step"], "unknown schedule 'step'"),
    (["--task", "mnist", "--arch", "lstm", "--hidden-size", "abc"], "invalid int value: 'abc'"),
    pytest.param(["--task", "addition", "--arch", "lstm", "--device", "cuda"], "device 'cuda' requested",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(cli.main(["train", *argv, "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db"]))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlruns").exists()


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "benchmark", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout


def always_returns_a_value(body: list) -> bool:
    """Whether every path through ``body`` ends in ``return VALUE`` or ``raise`` (judged by its last statement)."""
    import ast

    last = body[-1]
    if isinstance(last, ast.Return):
        return last.value is not None  # a bare ``return`` hands the shell None, success by accident
    if isinstance(last, ast.Raise):
        return True
    if isinstance(last, ast.If):
        return bool(last.orelse) and always_returns_a_value(last.body) and always_returns_a_value(last.orelse)
    if isinstance(last, ast.With):
        return always_returns_a_value(last.body)
    if isinstance(last, ast.Try):
        if last.finalbody and always_returns_a_value(last.finalbody):
            return True
        body_ends = always_returns_a_value(last.orelse) if last.orelse else always_returns_a_value(last.body)
        return body_ends and all(always_returns_a_value(handler.body) for handler in last.handlers)
    return False


def test_the_exit_code_check_reads_every_path():
    import ast

    def judged(source: str) -> bool:
        return always_returns_a_value(ast.parse(source).body[0].body)

    assert judged("def f():\n    return 0")
    assert judged("def f():\n    try:\n        return run()\n    except KeyError:\n        raise SystemExit(2)")
    assert not judged("def f():\n    try:\n        return run()\n    except KeyError:\n        print('no')")
    assert not judged("def f():\n    try:\n        run()\n    finally:\n        close()")
    assert not judged("def f():\n    if x:\n        return 1")
    assert not judged("def f():\n    return")
    assert not judged("def f():\n    run()")


def test_every_command_handler_returns_an_exit_code():
    """A handler that falls off its end returns None, which the shell sees as success by accident."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(commands))
    handlers = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("cmd_")}
    wired = {sub.get_default("handler") for _, sub in walk(cli.build_parser())} - {None}
    assert {(h.__module__, h.__name__) for h in wired} == {(commands.__name__, name) for name in handlers}
    for name, handler in handlers.items():
        assert always_returns_a_value(handler.body), f"{name} can end without returning an exit code"


def walk(parser, path=("rnnbench",)):
    """Every (command path, parser) below and including ``parser``."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_every_option_and_argument_has_help_and_every_command_a_description():
    import argparse

    missing = []
    for path, parser in walk(cli.build_parser()):
        if len(path) > 1 and not (parser.description or "").strip():
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            text = (action.help or "").strip()
            if action.help == argparse.SUPPRESS:
                continue
            if not text or text.startswith("("):  # "(default: 1)" alone says nothing about what the option does
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}: no help line")
    assert missing == []
    assert len(list(walk(cli.build_parser()))) >= 15  # the walk reached every subcommand


def test_help_lists_the_names_registered_when_the_parser_is_built(monkeypatch, capsys):
    from benchmark import catalog

    monkeypatch.setitem(catalog.ARCHITECTURES, "toyrnn", {"cell": "toyrnn", "bidirectional": False})
    monkeypatch.setattr(catalog, "TASKS", [*catalog.TASKS, "toytask"])
    monkeypatch.setattr(cli, "TASKS", catalog.TASKS)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name in [*catalog.ARCHITECTURES, *catalog.TASKS, *catalog.LOSSES, *catalog.SCHEDULES]:
        assert name in shown
    assert "toyrnn" in shown and "toytask" in shown


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"rnnbench {version('rnnbench')}"


@pytest.mark.parametrize("line, offered", [
    ("rnnbench tr", {"train"}),
    ("rnnbench train --arch l", {"lstm"}),
    ("rnnbench train --task mnist --loss ", {"ce", "mse"}),
    ("rnnbench bench --archs rnn bi", {"birnn", "bilstm", "bigru"}),
    ("rnnbench --plugin examples/plugins/janet.py train --arch ja", {"janet"}),  # a plugin's cell, as in --help
])
def test_shell_completion_offers_commands_and_catalogue_names(tmp_path, line, offered):
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("argcomplete")
    answer = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(answer), "_ARGCOMPLETE_IFS": "\n",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "benchmark"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    got = {word.strip() for word in answer.read_text().split("\n")}
    assert offered <= got and got <= offered | {name for name in got if name.startswith(line.split()[-1])}


def test_studies_refuses_a_storage_that_does_not_exist_and_creates_nothing(capsys, tmp_path):
    assert cli.main(["studies", "--storage", str(tmp_path / "missing.journal")]) == 2
    err = capsys.readouterr().err
    assert "no Optuna storage at" in err and "missing.journal" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_studies_before_the_first_study_says_so_and_creates_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RNNBENCH_STORAGE", raising=False)
    assert cli.main(["studies", "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db"]) == 0
    assert "no studies yet" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_dashboard_without_its_extra_says_how_to_install_it(capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    assert cli.main(["dashboard", "--storage", str(tmp_path / "s.journal")]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[dashboard]"' in err and len(err.strip().splitlines()) == 1


def test_dashboard_serves_this_machine_only(capsys, tmp_path):
    pytest.importorskip("optuna_dashboard")
    assert cli.main(["dashboard", "--host", "0.0.0.0", "--storage", str(tmp_path / "s.journal")]) == 2
    assert "no authentication" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
