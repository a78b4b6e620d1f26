"""The research tasks (adding problem, selective copying, MQAR, parity, modular counting): generators against
examples worked by hand, batches and logits of every shape, seeded splits, a loss that falls, the CLI."""

import json

import pytest
import torch

from benchmark import cli
from benchmark.config import ConfigError, TrainConfig
from benchmark.models import build_model
from benchmark.registry import task_record
from benchmark.tasks import build_task, mqar, selective_copy
from benchmark.tasks.adding_problem import target
from benchmark.tasks.parity import generate, running_sum
from benchmark.tasks.tokens import IGNORE

# Tiny settings per task: T, split sizes and model small enough for seconds on one core.
TINY = {
    "adding_problem": dict(max_train_length=12, train_size=64),
    "selective_copy": dict(max_train_length=20, train_size=64),
    "mqar": dict(max_train_length=32, train_size=64),
    "parity": dict(max_train_length=6, train_size=64),
    "modular_counting": dict(max_train_length=6, train_size=64),
}
TASKS = list(TINY)


def test_every_shipped_synthetic_task_is_tested_here():
    """The tests below run over TINY: a task rnnbench ships without a data set (addition has its own tests) must
    have its tiny settings here, or it would go untested."""
    from benchmark.registry import TASKS as REGISTERED

    shipped = {name for name, record in REGISTERED.items()
               if record.source.builtin and not record.data_dir and name != "addition"}
    assert set(TINY) == shipped


def tiny(task: str, arch: str = "lstm", **overrides) -> TrainConfig:
    return TrainConfig.for_task(task, arch, **{"hidden_size": 8, "batch_size": 16, "epochs": 1, "lr": 1e-2,
                                               **TINY[task], **overrides})


def first_batch(task, config):
    return next(iter(task.train_batches(config.batch_size, torch.Generator().manual_seed(0))))


@pytest.mark.parametrize("arch", ["lstm", "mingru"])
@pytest.mark.parametrize("name", TASKS)
def test_batch_and_logit_shapes_and_a_loss_that_falls(name, arch):
    config = tiny(name, arch, batch_size=8)
    task = build_task(config, "cpu")
    batch = first_batch(task, config)
    assert batch.x.dtype == torch.float32 and batch.x.shape[0] == 8 and batch.x.shape[2] == task.input_size
    torch.manual_seed(0)
    model = build_model(config, task)
    logits = model(batch.x, batch.lengths)
    if task.readout == "last":
        assert logits.shape == (8, task.output_size) and batch.y.shape == (8,)
    else:
        assert logits.shape == (*batch.x.shape[:2], task.output_size) and batch.y.shape == batch.x.shape[:2]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(60):
        loss_sum, count = task.loss(config.loss, model(batch.x, batch.lengths), batch)
        loss = loss_sum / count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0], losses
    scores = task.evaluate(model, "val", config.loss)
    assert set(task_record(name).metrics) <= set(scores) and scores["loss"] > 0


@pytest.mark.parametrize("name", TASKS)
def test_splits_follow_the_seed_and_the_test_split_never_does(name):
    a, same, other = (build_task(tiny(name, seed=seed), "cpu") for seed in (0, 0, 1))
    for split in ("train", "val"):
        assert torch.equal(a.splits[split][0], same.splits[split][0])
        assert not torch.equal(a.splits[split][0], other.splits[split][0])
    assert torch.equal(a.splits["test"][0], other.splits["test"][0])
    assert torch.equal(a.splits["test"][1], other.splits["test"][1])
    assert a.dataset()["digest"] != other.dataset()["digest"]


def test_adding_problem_target_and_generator():
    # Worked by hand: values 0.1 .. 0.6, markers at steps 1 and 4: 0.2 + 0.5.
    values = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    markers = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    assert target(torch.stack([values, markers], -1)[None]).item() == pytest.approx(0.7)
    task = build_task(tiny("adding_problem", max_train_length=10, train_size=500), "cpu")
    x, y = task.splits["train"]
    marked = x[..., 1].nonzero()[:, 1].view(-1, 2)  # each row: exactly two markers, one in each half
    assert (marked[:, 0] < 5).all() and (marked[:, 1] >= 5).all()
    assert torch.allclose(y, x[..., 0].gather(1, marked).sum(1))
    assert float(x[..., 0].min()) >= 0 and float(x[..., 0].max()) < 1


class Constant(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, lengths=None):
        return torch.full((len(x), 1), self.value)


def test_adding_problem_scores_the_constant_answer_near_zero_explained_variance():
    task = build_task(tiny("adding_problem", max_train_length=10), "cpu")
    scores = task.evaluate(Constant(1.0), "test", "mse")
    assert scores["mse"] == pytest.approx(1 / 6, abs=0.02) and scores["acc"] == pytest.approx(0, abs=0.12)
    assert scores["acc"] == pytest.approx(1 - 6 * scores["mse"]) and scores["loss"] == scores["mse"]


def test_selective_copy_layout_by_hand():
    data = torch.tensor([[3] + [0] * 15])
    positions = torch.tensor([list(range(16))])
    positions[0, 0] = 17  # data token 3 at step 17, the other 15 (zeros) at steps 1..15
    positions = positions.sort(dim=1).values
    tokens, targets = selective_copy.layout(data[:, [1] * 15 + [0]], positions, 18)
    expected = [16] + [0] * 15 + [16, 3] + [17] * 16
    assert tokens[0].tolist() == expected
    assert targets[0].tolist() == [IGNORE] * 18 + [0] * 15 + [3]


def test_selective_copy_generator_copies_the_data_in_order():
    tokens, targets = selective_copy.generate(50, 40, torch.Generator().manual_seed(2))
    assert tokens.shape == (50, 56) and (tokens[:, 40:] == selective_copy.MARKER).all()
    data_at = tokens[:, :40] < 16
    assert (data_at.sum(1) == 16).all()
    assert torch.equal(tokens[:, :40][data_at].view(50, 16), targets[:, 40:])
    assert (targets[:, :40] == IGNORE).all()


def test_mqar_layout_by_hand():
    keys, values, slots = torch.tensor([[5, 7]]), torch.tensor([[130, 200]]), torch.tensor([[1, 0]])
    tokens, targets = mqar.layout(keys, values, slots, 8)
    assert tokens[0].tolist() == [5, 130, 7, 200, 7, 0, 5, 0]
    assert targets[0].tolist() == [IGNORE] * 4 + [200, IGNORE, 130, IGNORE]


def test_mqar_generator_keys_values_and_queries():
    tokens, targets = mqar.generate(100, 64, torch.Generator().manual_seed(3))
    keys, values = tokens[:, 0:8:2], tokens[:, 1:8:2]
    assert ((keys >= 1) & (keys < 128)).all() and ((values >= 128) & (values < 256)).all()
    assert all(len(set(row)) == 4 for row in keys.tolist())  # without replacement within a sequence
    asked = targets != IGNORE
    assert (asked.sum(1) == 4).all() and not asked[:, :8].any()
    for row in range(100):
        answer = dict(zip(keys[row].tolist(), values[row].tolist(), strict=True))
        assert sorted(tokens[row][asked[row]].tolist()) == sorted(answer)
        assert targets[row][asked[row]].tolist() == [answer[k] for k in tokens[row][asked[row]].tolist()]
    assert (tokens[:, 8:][~asked[:, 8:]] == 0).all()


def test_parity_and_modular_counting_by_hand():
    assert running_sum(torch.tensor([[1, 0, 1, 1]]), 2).tolist() == [[1, 1, 0, 1]]
    assert running_sum(torch.tensor([[4, 3, 0, 2, 1]]), 5).tolist() == [[4, 2, 2, 4, 0]]
    x, y = generate(torch.tensor([4, 2]), torch.Generator().manual_seed(0))
    digits = x.argmax(-1)
    assert torch.equal(y[0], digits[0].cumsum(0) % 2)
    assert x[1, 2:].abs().sum() == 0 and (y[1, 2:] == 0).all()  # padding is zero


def test_parity_splits_and_per_length_scores():
    task = build_task(tiny("parity"), "cpu")
    assert set(task.splits["train"][2].tolist()) == set(range(1, 7))
    assert set(task.splits["val"][2].tolist()) == set(range(1, 7))
    assert set(task.splits["test"][2].tolist()) == set(range(7, 501))

    class Oracle(torch.nn.Module):  # right everywhere except at step 0 of strings longer than 100
        def forward(self, x, lengths=None):
            logits = 10 * torch.nn.functional.one_hot(x.argmax(-1).cumsum(1) % 2, 2).float()
            long = torch.tensor([int(n) > 100 for n in lengths])
            logits[long, 0] = logits[long, 0].flip(-1)
            return logits

    scores = task.evaluate(Oracle(), "test", "ce")
    assert scores["acc_by_len"][7] == 1.0 and scores["acc_by_len"][200] == pytest.approx(199 / 200)
    assert scores["acc"] == pytest.approx(sum(scores["acc_by_len"].values()) / 494)


@pytest.mark.parametrize("name, setting", [("selective_copy", 15), ("mqar", 15), ("parity", 500)])
def test_settings_a_task_cannot_honour_are_refused(name, setting):
    with pytest.raises(ConfigError, match="max_train_length"):
        build_task(tiny(name, max_train_length=setting), "cpu")


@pytest.mark.parametrize("name", ["adding_problem", "selective_copy", "mqar", "parity"])
def test_rnnbench_train_runs_each_task(name, tmp_path, capsys):
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TINY[name].items()]
    code = cli.main(["train", "--task", name, "--arch", "lstm", "--hidden-size", "8", "--epochs", "1",
                     "--batch-size", "32", "--threads", "1", "--quiet", "--json", *flags,
                     "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == name and "test_acc" in summary
    if name == "adding_problem":
        assert "test_mse" in summary
    if name == "parity":
        assert set(summary["test_acc_by_len"]) == {str(n) for n in range(7, 501)}


def test_a_raw_metric_is_a_plain_number_in_the_summary_line_and_the_comparison_table(tmp_path, capsys):
    from benchmark.report.markdown import Figures
    from benchmark.report.sections.comparison import comparison
    from benchmark.report.snapshot import load_snapshot

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TINY["adding_problem"].items()]
    assert cli.main(["train", "--task", "adding_problem", "--arch", "gru", "--hidden-size", "8", "--epochs", "1",
                     "--threads", "1", "--quiet", *flags, "--tracking-uri", uri]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    acc, mse = (line.split(f"{name} ", 1)[1].split()[0] for name in ("test_acc", "test_mse"))
    assert acc.endswith("%") and not mse.endswith("%") and len(mse.strip("0.").replace(".", "")) <= 4
    assert float(mse) == pytest.approx((1 - float(acc[:-1]) / 100) / 6, rel=1e-3)
    table = comparison(load_snapshot(uri), Figures(tmp_path / "figures")).split("### adding_problem", 1)[1]
    header, _, row = table.strip().split("\n\n")[1].splitlines()[:3]
    cells = dict(zip((h.strip() for h in header.strip("|").split("|")),
                     (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert cells["test MSE"] == mse and cells["explained variance"] == acc[:-1]


@pytest.mark.parametrize("raw", [("acc",), ("mse",)])
def test_a_raw_metric_must_be_a_metric_and_never_the_objective(raw):
    from benchmark.registry import RegistryError, register_task

    with pytest.raises(RegistryError, match="raw_metrics must be among its metrics and exclude the objective"):
        register_task("never_registered", "x:Y", metrics=("acc", "err"), raw_metrics=raw)


def test_an_objective_other_than_acc_is_refused_until_everything_ranks_on_it():
    from benchmark.registry import TASKS, RegistryError, register_task

    with pytest.raises(RegistryError, match="objective 'exact' is not supported"):
        register_task("never_registered", "x:Y", metrics=("acc", "exact"), objective="exact")
    assert "never_registered" not in TASKS


def test_a_task_with_one_per_length_metric_gets_one_panel_named_after_it():
    from benchmark.report import figures

    record = task_record("parity")
    names = tuple(record.metric_label(name) for name in record.per_length)
    fig = figures.accuracy_by_length({"lstm": [(41, 1.0), (500, 0.9)]}, {}, 40, "parity", names=names)
    assert [ax.get_title() for ax in fig.axes] == ["per-step accuracy"]


def test_the_report_names_the_lengths_a_test_metric_covers():
    """Parity is scored on the lengths it never trained on; addition on its training lengths."""
    from benchmark.registry import task_record

    assert task_record("parity").scored_span(40) == "41..500"
    assert task_record("parity").scored_span(12) == "13..500"
    assert task_record("addition").scored_span(20) == "1..20"
