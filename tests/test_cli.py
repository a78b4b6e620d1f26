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


def test_every_command_handler_returns_an_exit_code():
    """A handler that falls off its end returns None, which the shell sees as success by accident."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(commands))
    handlers = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("cmd_")]
    assert len(handlers) >= 10
    for handler in handlers:
        last = handler.body[-1]
        assert isinstance(last, ast.Return | ast.Try), f"{handler.name} can end without returning an exit code"


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
