"""Bring your own cell: a plugin file or module registers it, every command runs it, refusals are one line."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from test_tuning import TINY, runs

from benchmark import catalog, cli, plugins, registry
from benchmark.checkpoint import CheckpointError, load_checkpoint, load_run_checkpoint, save_checkpoint
from benchmark.models import Model, build_model
from benchmark.schema import Tag
from benchmark.tasks import build_task
from benchmark.train import fit

CELL = '''
import torch
from torch import nn
from benchmark import register_cell


@register_cell("{name}", bidirectional={bidirectional})
class TinyCell(nn.Module):
    def __init__(self, input_size, hidden_size, *, num_layers=1, dropout=0.0, bidirectional=False):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.width = hidden_size * self.directions

    def forward(self, x, lengths=None):
        steps = x.size(1)
        packed = {packed} and lengths is not None
        if packed:
            x = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        outputs, h_n = self.rnn(x)
        if packed:
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=steps)
        ends = (lengths if lengths is not None else torch.full((outputs.size(0),), steps)) - 1
        return outputs[..., :{width}], {last}
'''
LAST = "torch.cat(list(h_n[-self.directions:]), dim=-1)"
# Wrong `last`s that padding does not change: zeros, the first step's state, the backward half at the wrong end.
LAST_ZEROS = "torch.zeros(outputs.size(0), self.width)"
LAST_FIRST_STEP = "outputs[:, 0]"
LAST_BACKWARD_AT_END = "torch.cat([h_n[-2], outputs[torch.arange(outputs.size(0)), ends, self.width // 2:]], dim=-1)"


def cell_source(name="mycell", bidirectional=False, packed=True, width="self.width", last=LAST) -> str:
    return CELL.format(name=name, bidirectional=bidirectional, packed=packed, width=width, last=last)


def write_plugin(folder: Path, text: str, file="my_cells.py") -> Path:
    path = folder / file
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(autouse=True)
def restore_registry():
    """Each test registers into the process's registry and catalog; put them back as they were."""
    saved = (dict(catalog.ARCHITECTURES), list(catalog.TASKS), dict(registry.CELLS), dict(registry.TASKS),
             dict(plugins.LOADED))
    yield
    for live, copy in zip((catalog.ARCHITECTURES, catalog.TASKS, registry.CELLS, registry.TASKS, plugins.LOADED),
                          saved, strict=True):
        live.clear()
        live.update(copy) if isinstance(live, dict) else live.extend(copy)


def forget_plugins() -> None:
    plugins.LOADED.clear()
    for name in [n for n, spec in catalog.ARCHITECTURES.items() if "plugin" in spec]:
        del catalog.ARCHITECTURES[name], registry.CELLS[name]


def train_argv(tmp_path, arch="mycell", task="addition") -> list[str]:
    return ["train", "--task", task, "--arch", arch, "--hidden-size", "4", "--epochs", "1", "--train-size", "60",
            "--max-train-length", "4", "--eval-lengths", "5", "--quiet",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"]


def test_a_plugin_file_cell_trains_and_its_checkpoint_round_trips(tmp_path, capsys):
    path = write_plugin(tmp_path, cell_source())
    assert cli.main(["--plugin", str(path), *train_argv(tmp_path)]) == 0
    assert "mycell on addition" in capsys.readouterr().out
    assert catalog.ARCHITECTURES["mycell"] == {"cell": "mycell", "bidirectional": False, "plugin": str(path),
                                               "label": "mycell", "colour": "", "kernels": False}
    (loaded,) = [p for p in plugins.LOADED.values() if p.spec == str(path)]
    assert loaded.file == str(path) and loaded.sha256 == registry.file_sha256(path) and loaded.cells == ("mycell",)
    (run,) = runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "run")
    assert run.data.tags[Tag.PLUGINS] == f"{path}@{registry.file_sha256(path)}"
    model, config = load_run_checkpoint(run.info.run_id, f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert isinstance(model, Model) and config.arch == "mycell"


def test_plugins_come_from_the_environment_and_from_entry_points(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(plugins.PLUGINS_ENV, str(write_plugin(tmp_path, cell_source("envcell"))))
    write_plugin(tmp_path, cell_source("pointcell"), "point_cells.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint("mine", "point_cells", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points",
                        lambda group: [point] if group == plugins.ENTRY_POINT_GROUP else [])
    assert cli.main(train_argv(tmp_path, "envcell")) == 0
    assert {"envcell", "pointcell"} <= set(registry.list_cells())
    assert catalog.ARCHITECTURES["pointcell"]["plugin"] == str(tmp_path / "point_cells.py")
    assert [p.origin for p in plugins.LOADED.values() if p.cells in (("envcell",), ("pointcell",))] == [
        plugins.PLUGINS_ENV, "entry point"]


def test_help_and_an_unknown_arch_list_the_registered_names(tmp_path, capsys):
    path = write_plugin(tmp_path, cell_source())
    with pytest.raises(SystemExit):
        cli.main(["--plugin", str(path), "train", "--help"])
    assert "mycell" in capsys.readouterr().out
    assert cli.main(["--plugin", str(path), *train_argv(tmp_path, "nope")]) == 2
    assert "unknown arch 'nope'; valid: rnn, lstm, gru, birnn, bilstm, bigru" in capsys.readouterr().err
    assert "mycell" in catalog.ARCHITECTURES and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("text, message", [
    ("raise RuntimeError('no GPU here')", "failed to import: RuntimeError: no GPU here"),
    (cell_source("lstm"), "cell name 'lstm' is taken (a built-in architecture)"),
    (cell_source("My-Cell"), "cell name 'My-Cell' is not lowercase letters"),
    (cell_source(width="1"), "breaks the contract: outputs [3, 5, 1] and last [3, 3]"),
    (cell_source(packed=False), "breaks the contract: changing the padding changes `last`"),
    (cell_source(bidirectional=True, packed=False), "breaks the contract: changing the padding changes"),
    (cell_source(last=LAST_ZEROS), "breaks the contract: `last` is not `outputs` at each row's last real step"),
    (cell_source(last=LAST_FIRST_STEP), "breaks the contract: `last` is not `outputs` at each row's last real step"),
    (cell_source(bidirectional=True, last=LAST_BACKWARD_AT_END),
     "breaks the contract: the backward half of `last` is not `outputs` at step 0"),
])
def test_a_broken_plugin_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, text, message):
    path = write_plugin(tmp_path, text)
    assert cli.main(["--plugin", str(path), *train_argv(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnbench: error: plugin {path}: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()


def test_a_missing_plugin_and_a_name_taken_by_another_plugin_are_refused(tmp_path, capsys):
    assert cli.main(["--plugin", "nowhere.py", *train_argv(tmp_path)]) == 2
    assert "plugin nowhere.py: no such file" in capsys.readouterr().err
    first = write_plugin(tmp_path, cell_source())
    second = write_plugin(tmp_path, cell_source(), "again.py")
    assert cli.main(["--plugin", str(first), "--plugin", str(second), *train_argv(tmp_path)]) == 2
    assert f"cell name 'mycell' is taken (registered by {first})" in capsys.readouterr().err
    assert cli.main(["--plugin", "no_such_module_here", *train_argv(tmp_path)]) == 2
    assert "failed to import: ModuleNotFoundError" in capsys.readouterr().err


TASK = """
from benchmark import register_task
from benchmark.tasks.addition import AdditionTask


@register_task("{name}")
class ShortAddition(AdditionTask):
    name = "{name}"
"""


def test_a_plugin_task_trains_and_a_task_lacking_the_protocol_is_refused(tmp_path, capsys):
    path = write_plugin(tmp_path, TASK.format(name="shortadd"), "tasks_ok.py")
    assert cli.main(["--plugin", str(path), *train_argv(tmp_path, "lstm", "shortadd")]) == 0
    assert "lstm on shortadd" in capsys.readouterr().out
    assert registry.list_tasks()[:2] == ["mnist", "addition"] and registry.list_tasks()[-1] == "shortadd"
    broken = write_plugin(tmp_path, TASK.format(name="brokenadd").replace("(AdditionTask)", ""), "tasks_bad.py")
    assert cli.main(["--plugin", str(broken), *train_argv(tmp_path, "lstm", "brokenadd")]) == 2
    assert "task 'brokenadd' breaks the contract: ShortAddition lacks train_size, train_batches, loss, evaluate" \
        in capsys.readouterr().err


RECORDED_TASK = """
from benchmark import register_task
from benchmark.tasks.addition import AdditionTask


@register_task("evensum", label="Even sums", description="sums of bit strings, scored whole",
               metrics=("acc", "exact"), metric_labels={"exact": "exact-match rate"})
class EvenSum(AdditionTask):
    name = "evensum"

    def evaluate(self, model, split, loss_name):
        scores = super().evaluate(model, split, loss_name)
        return {**scores, "exact": scores["seq_acc"]}
"""


def test_a_plugin_tasks_record_names_its_metric_and_label_everywhere(tmp_path, tracking_uri, capsys):
    """A task from a file rnnbench has never seen: its own metric in the tracker and the summary line, and its label
    and metric's words in the report, from its record alone."""
    path = write_plugin(tmp_path, RECORDED_TASK, "evensum.py")
    assert cli.main(["--plugin", str(path), *train_argv(tmp_path, "lstm", "evensum")]) == 0
    line = capsys.readouterr().out
    exact = re.search(r"test_exact (\d+\.\d+)%", line)
    assert exact and "test_acc" in line, line
    (run,) = runs(tracking_uri, "run")
    assert 100 * run.data.metrics["test_exact"] == pytest.approx(float(exact.group(1)), abs=0.005)
    assert "val_exact" in run.data.metrics and "test_seq_acc" not in run.data.metrics  # the record's metrics only
    assert cli.main(["--plugin", str(path), "report", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "r"),
                     "--no-timestamp", "--quiet", "--storage", str(tmp_path / "none.journal")]) == 0
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "Even sums: sums of bit strings, scored whole." in markdown
    assert "| exact-match rate |" in markdown


def test_workers_are_handed_the_launchers_plugins(tmp_path, monkeypatch):
    monkeypatch.setenv(plugins.PLUGINS_ENV, "already_there")
    path = write_plugin(tmp_path, cell_source())
    plugins.load_plugin(str(path))
    assert plugins.environment_value() == f"already_there:{path}"


def test_tune_and_report_with_a_plugin_cell_and_the_report_without_it(tmp_path, tracking_uri, capsys):
    path = write_plugin(tmp_path, cell_source())
    study = tmp_path / "tiny.toml"
    study.write_text(TINY.format(pruner="none", epochs=1, train_size=60) + "\n[arch.mycell.fixed]\nbatch_size = 20\n")
    code = cli.main(["--plugin", str(path), "tune", str(study), "--arch", "mycell", "--trials", "2",
                     "--tracking-uri", tracking_uri, "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert {r.data.params["batch_size"] for r in runs(tracking_uri, "trial")} == {"20"}
    assert cli.main(["--plugin", str(path), "confirm", "--task", "addition", "--arch", "mycell", "--seeds", "1",
                     "--tracking-uri", tracking_uri, "--quiet"]) == 0
    assert len(runs(tracking_uri, "confirm")) == 1
    assert cli.main(["--plugin", str(path), "reproduce", "--list"]) == 0
    assert cli.main(["report", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "with"),
                     "--no-timestamp", "--quiet", "--storage", str(tmp_path / "mlruns" / "optuna.journal")]) == 0
    forget_plugins()
    assert "mycell" not in catalog.ARCHITECTURES
    assert cli.main(["report", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "without"),
                     "--no-timestamp", "--quiet", "--storage", str(tmp_path / "mlruns" / "optuna.journal")]) == 0
    with_plugin = (tmp_path / "with" / "report.md").read_text()
    assert "mycell" in with_plugin
    assert (tmp_path / "without" / "report.md").read_text() == with_plugin


def test_perf_gives_a_registered_cell_its_rows(tmp_path):
    path = write_plugin(tmp_path, cell_source())
    out = tmp_path / "performance.md"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "RNNBENCH_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "benchmark", "--plugin", str(path), "perf", "--quick", "--threads",
                           "1", "--hidden-size", "8", "--batch-size", "20", "--arch", "lstm", "mycell", "--out",
                           str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sections = out.read_text().split("## ")
    for section in ("Training step", "MNIST training", "Evaluation"):
        table = next(part for part in sections if part.startswith(section))
        assert "| lstm |" in table and "| mycell |" in table, section


def test_a_plugin_checkpoint_needs_its_plugin_and_the_same_file(tmp_path):
    path = write_plugin(tmp_path, cell_source())
    plugins.load_plugin(str(path))
    config = tiny_config("addition", "mycell", epochs=1)
    result = fit(config, quiet=True)
    save_checkpoint(tmp_path / "model.pt", result.model, config)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["plugin"]["cell"] == {"name": "mycell", "module": registry.CELLS["mycell"].source.module,
                                         "file": str(path), "sha256": registry.file_sha256(path)}
    forget_plugins()
    with pytest.raises(CheckpointError, match=f"needs the plugin cell 'mycell' from {path}; load it with"):
        load_checkpoint(tmp_path / "model.pt")
    path.write_text(path.read_text() + "\n# edited\n")
    plugins.load_plugin(str(path))
    with pytest.raises(CheckpointError, match="the file changed"):
        load_checkpoint(tmp_path / "model.pt")


def test_checkpoints_record_the_readout_and_the_input_normalisation(tmp_path, mnist_data):
    from benchmark.tasks.mnist import PIXEL_MEAN, PIXEL_STD

    config = tiny_config("mnist", "gru", epochs=1, train_size=100)
    model = build_model(config, build_task(config, "cpu", **mnist_data))
    save_checkpoint(tmp_path / "model.pt", model, config)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["input"] == {"input_scale": "standard", "mean": PIXEL_MEAN, "std": PIXEL_STD, "applied": True}
    assert payload["model"]["readout"] == "last" and payload["plugin"] == {}
    payload["format"] = "rnnbench-checkpoint/1"  # the first format: no input or plugin record
    del payload["input"], payload["plugin"]
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[1] == config


# --- the cell contract, over every registered cell (rnnbench's own plugins included) and the example ---

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "janet.py"  # the file researchers copy
CONTRACT_CELLS = ["mycell", "bimycell", "janet", "bijanet", *registry.list_cells()]


@pytest.fixture
def cell(request, tmp_path) -> str:
    name = request.param
    if name in ("mycell", "bimycell"):
        plugins.load_plugin(str(write_plugin(tmp_path, cell_source(name, bidirectional=name == "bimycell"))))
    elif name not in registry.CELLS:
        plugins.load_plugin(str(EXAMPLE))
    return name


@pytest.mark.parametrize("cell", CONTRACT_CELLS, indirect=True)
def test_every_registered_cell_keeps_the_contract(cell):
    assert plugins.cell_contract_problem(registry.CELLS[cell]) is None


@pytest.mark.parametrize("readout", catalog.READOUTS)
@pytest.mark.parametrize("cell", CONTRACT_CELLS, indirect=True)
def test_every_registered_cell_in_its_model_shapes_gradients_padding_and_checkpoint(cell, readout, tmp_path):
    torch.manual_seed(0)
    model = Model(cell, 3, 5, 2, num_layers=2, readout=readout)
    x, lengths = torch.randn(4, 6, 3), torch.tensor([6, 4, 2, 1])
    logits = model(x, lengths)
    assert logits.shape == ((4, 2) if readout == "last" else (4, 6, 2))
    logits.square().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    model.eval()
    padded = x.clone()
    padded[torch.arange(6)[None, :] >= lengths[:, None]] = 7.0
    with torch.no_grad():
        same, changed = model(x, lengths), model(padded, lengths)
    real = (torch.arange(6)[None, :] < lengths[:, None])
    assert torch.allclose(same, changed, atol=1e-5) if readout == "last" else torch.allclose(same[real],
                                                                                             changed[real], atol=1e-5)
    config = tiny_config("addition", cell, hidden_size=5, num_layers=2)
    save_checkpoint(tmp_path / "cell.pt", model, config)
    loaded, _ = load_checkpoint(tmp_path / "cell.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x, lengths), same)


# Seeded settings under which every contract cell learns. Measured test accuracy / loss, worst cell: MNIST 0.43 /
# 1.36 (minGRU; most reach 0.7-1.0), addition 0.82 / 0.54 (IndRNN; most reach 0.9-1.0). Untrained: MNIST one
# class in ten (loss ln 10 = 2.30); addition's bits about 0.61, the majority bit (loss ln 2 = 0.69).
LEARNS = {"mnist": (dict(epochs=6, batch_size=25, lr=1e-2, train_size=500, hidden_size=32), 0.3, 1.8),
          "addition": (dict(epochs=4, batch_size=25, lr=5e-2, train_size=1000, hidden_size=16), 0.75, 0.62)}


@pytest.mark.parametrize("task", catalog.BUILTIN_TASKS)
@pytest.mark.parametrize("cell", CONTRACT_CELLS, indirect=True)
def test_every_registered_cell_learns_on_every_builtin_task(cell, task, mnist_data):
    settings, min_acc, max_loss = LEARNS[task]
    config = tiny_config(task, cell, **settings)
    result = fit(config, quiet=True, task_data=mnist_data if task == "mnist" else None)
    assert all(torch.isfinite(torch.tensor(result.train_losses)))
    assert result.test["acc"] > min_acc and result.test["loss"] < max_loss, result.test


def test_a_plugin_cells_mnist_run_registers_and_predicts_with_its_plugin(tmp_path, mnist_data, capsys):
    from PIL import Image

    from benchmark.champion import register_champion
    from benchmark.tracking import tracked_run

    path = write_plugin(tmp_path, cell_source())
    plugins.load_plugin(str(path))
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    config = tiny_config("mnist", "mycell", epochs=1)
    with tracked_run(config, tracking_uri=uri) as tracker:
        fit(config, tracker=tracker, quiet=True, task_data=mnist_data)
    info = register_champion(tracker.run_id, uri)
    assert info["name"] == "mnist-mycell"
    image = tmp_path / "3_digit.png"
    Image.fromarray(mnist_data["test_images"][0].numpy()).save(image)
    assert cli.main(["--plugin", str(path), "predict", "--model", "mnist-mycell@champion", "--tracking-uri", uri,
                     str(image)]) == 0
    assert "3_digit.png" in capsys.readouterr().out
    forget_plugins()  # the same checkpoint without its plugin: one line naming it
    assert cli.main(["predict", "--model", "mnist-mycell@champion", "--tracking-uri", uri, str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the plugin cell 'mycell'" in err and "--plugin" in err


def test_tune_workers_load_the_launchers_plugins(tmp_path, tracking_uri, capsys):
    """Worker processes import nothing from the launcher: they get the plugin through $RNNBENCH_PLUGINS."""
    path = write_plugin(tmp_path, cell_source())
    study = tmp_path / "tiny.toml"
    study.write_text(TINY.format(pruner="none", epochs=1, train_size=60))
    code = cli.main(["--plugin", str(path), "tune", str(study), "--arch", "mycell", "--trials", "2", "--workers", "2",
                     "--tracking-uri", tracking_uri, "--quiet"])
    assert code == 0, capsys.readouterr().err
    trials = runs(tracking_uri, "trial")
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["arch"] for r in trials} == {"mycell"}
    assert {r.data.tags[Tag.PLUGINS] for r in trials} == {f"{path}@{registry.file_sha256(path)}"}
