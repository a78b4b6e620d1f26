"""Study files: every shipped file parses for every preset; a bad file is one line with file, line, key, reason."""

from pathlib import Path

import pytest

from benchmark import cli
from benchmark.catalog import ARCHITECTURES, PRESETS
from benchmark.config import ConfigError
from benchmark.tuning import StudyFileError, load_study, parse_study_file

STUDIES = Path(__file__).resolve().parent.parent / "studies"

GOOD = """\
task = "addition"

[fixed]
optimizer = "adam"
eval_lengths = [8]

[space]
hidden_size = { type = "int", low = 4, high = 8 }
lr = { type = "float", low = 1e-3, high = 1e-2, log = true }
loss = { type = "categorical", choices = ["ce", "mse"] }

[presets.quick.budget]
trials = 3
epochs = 2

[presets.standard.budget]
trials = 4
epochs = 3

[presets.full.budget]
trials = 5
epochs = 4

[presets.full.arch.gru.space]
hidden_size = { type = "int", low = 16, high = 32 }
"""


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_parses_for_every_preset_and_arch(path):
    specs = parse_study_file(path)
    assert set(specs) == {(arch, preset) for arch in ARCHITECTURES for preset in PRESETS}
    for spec in specs.values():
        if not spec.space:  # a fixed recipe (addition_length3.toml): one trial, then fresh seeds
            assert spec.trials == 1 and spec.confirm_seeds >= 1
            continue
        names = {p.name for p in spec.space}
        assert {"lr", "loss"} <= names
        # Width and depth are each searched or fixed, never both and never left to the defaults.
        assert all((name in names) != (name in spec.fixed_dict) for name in ("hidden_size", "num_layers"))
        if spec.preset == "standard" and "num_layers" in spec.fixed_dict:
            if spec.task in ("pixel_mnist", "permuted_pixel_mnist"):  # one width and depth, to fit an hour
                assert (spec.fixed_dict["hidden_size"], spec.fixed_dict["num_layers"]) == (64, 1)
            else:  # the 2-hour budget fixes the bidirectional depths
                assert spec.arch.startswith("bi") and spec.fixed_dict["num_layers"] == 1
            continue
        num_layers = next(p for p in spec.space if p.name == "num_layers")
        # standard searches 1..2 layers on MNIST to fit 2 hours on 2 cores; the others search 1..3.
        wanted = (1, 2) if (spec.preset, spec.task) == ("standard", "mnist") else (1, 3)
        assert (num_layers.low, num_layers.high) == wanted
        assert next(p for p in spec.space if p.name == "lr").log
        assert spec.sampler_dict["type"] == "tpe" and "seed" in spec.sampler_dict
        assert spec.pruner_dict["type"] in ("median", "hyperband", "successive_halving")
        # every sampled corner is a valid config
        config = spec.train_config({p.name: p.low if p.kind != "categorical" else p.choices[0] for p in spec.space})
        assert config.epochs == spec.epochs


RESEARCH_CLASSIFICATION = ("selective_copy", "mqar", "parity", "modular_counting")


@pytest.mark.parametrize("task", RESEARCH_CLASSIFICATION)
def test_research_token_tasks_train_with_cross_entropy_as_their_papers_do(task):
    # A 4-trial quick search that samples MSE against one-hot targets spends half its trials on a loss the
    # papers do not train with; on MQAR none of those trials passed 2 %.
    for spec in parse_study_file(STUDIES / f"{task}.toml").values():
        loss = next(p for p in spec.space if p.name == "loss")
        assert loss.choices == ("ce",), (spec.arch, spec.preset)


def test_layers_merge_in_order(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    quick, full_gru, full_lstm = (load_study(path, "lstm", "quick"), load_study(path, "gru", "full"),
                                  load_study(path, "lstm", "full"))
    assert (quick.trials, quick.epochs) == (3, 2)
    hidden = {s.arch + s.preset: next(p for p in s.space if p.name == "hidden_size") for s in (full_gru, full_lstm)}
    assert (hidden["grufull"].low, hidden["lstmfull"].low) == (16, 4)
    assert quick.fixed_dict == {"optimizer": "adam", "eval_lengths": (8,)}
    assert quick.default_study_name() == "addition-lstm-quick"


@pytest.mark.parametrize("change, line, key, reason", [
    (("[space]", "[space]\nwidth = { type = \"int\", low = 1, high = 2 }"), 8, "space.width",
     "not a tunable TrainConfig field"),
    (("low = 4, high = 8", "low = 8, high = 4"), 8, "space.hidden_size", "empty range: low 8 > high 4"),
    (("low = 4, high = 8", "low = 4.5, high = 8"), 8, "space.hidden_size.low", "must be an integer, got 4.5"),
    (('choices = ["ce", "mse"]', "choices = []"), 10, "space.loss.choices", "must be a non-empty list"),
    (('choices = ["ce", "mse"]', 'choices = ["ce", "hinge"]'), 10, "space.loss", "unknown loss 'hinge'"),
    (("low = 1e-3, high", "low = 0.0, high"), 9, "space.lr.low", "log scale needs low > 0"),
    (('optimizer = "adam"', "optimizer = 3"), 4, "fixed.optimizer", "must be a string, got 3"),
    (('optimizer = "adam"', "epochs = 3"), 4, "fixed.epochs", "epochs goes in [budget]"),
    (("trials = 4", "trials = \"4\""), 17, "presets.standard.budget.trials", "must be an integer"),
    (("trials = 4", "trials = 0"), 17, "presets.standard.budget.trials", "must be >= 1"),
    (("epochs = 4", "epochs = 4\nseeds = 3"), 23, "presets.full.budget.seeds", "unknown budget key"),
    (("[presets.full.arch.gru.space]", "[presets.full.arch.gpt.space]"), 24, "presets.full.arch.gpt",
     "unknown architecture"),
    (('task = "addition"', 'task = "addition"\nsearch = 1'), 2, "search", "unknown key"),
    (("[presets.full.budget]\ntrials = 5\nepochs = 4\n", ""), 21, "presets.full", "no budget.trials"),
    (("[presets.full.budget]\ntrials = 5\nepochs = 4\n\n[presets.full.arch.gru.space]\n", "[arch.gru.space]\n"),
     12, "presets", "missing preset [presets.full]"),
    (("[space]", "[pruner]\ntype = \"asha\"\n\n[space]"), 8, "pruner.type", "unknown pruner 'asha'"),
    (("[space]", "[pruner]\ntype = \"median\"\nwarmup = 1\n\n[space]"), 9, "pruner.warmup",
     "unknown median pruner setting"),
])
def test_bad_study_file_is_one_line_with_file_line_key_reason(tmp_path, change, line, key, reason):
    old, new = change
    assert old in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(StudyFileError) as caught:
        parse_study_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert reason in message and "\n" not in message


def test_successive_halving_pruner_parses_with_its_settings(tmp_path):
    path = tmp_path / "sha.toml"
    path.write_text(GOOD.replace("[space]", "[pruner]\ntype = \"successive_halving\"\nmin_resource = 1\n"
                                 "reduction_factor = 3\nmin_early_stopping_rate = 0\n\n[space]", 1))
    parse_study_file(path)
    spec = load_study(path, "gru", "standard")
    assert spec.pruner_dict == {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3,
                                "min_early_stopping_rate": 0}
    path.write_text(GOOD.replace("[space]", "[pruner]\ntype = \"successive_halving\"\nreduction_factor = 1\n\n"
                                 "[space]", 1))
    with pytest.raises(StudyFileError, match="pruner.reduction_factor: must be >= 2"):
        parse_study_file(path)


def test_invalid_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("task = \n")
    with pytest.raises(StudyFileError, match="broken.toml:1: invalid TOML: Invalid value"):
        parse_study_file(path)
    path.write_text('task = "addition"\n\n[space]\nhidden_size = { type = "int" low = 4 }\n')
    with pytest.raises(StudyFileError) as bad:  # FILE:LINE: reason, as every other study-file error
        parse_study_file(path)
    assert str(bad.value).startswith(f"{path}:4: invalid TOML: ") and "(at line" not in str(bad.value)
    with pytest.raises(ConfigError, match="cannot read study file"):
        parse_study_file(tmp_path / "missing.toml")


def test_cli_rejects_bad_study_before_touching_the_store(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("low = 4, high = 8", "low = 8, high = 4"))
    code = cli.main(["tune", str(path), "--arch", "lstm", "--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.toml:8: space.hidden_size: empty range" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlruns").exists()


def test_an_optuna_journal_that_cannot_be_written_is_one_line(tmp_path):
    from benchmark.tuning import open_storage

    (tmp_path / "blocked").write_text("a file where a folder should be")
    with pytest.raises(ConfigError, match=r"cannot write the Optuna journal .*blocked/x.journal .*pass --storage"):
        open_storage(str(tmp_path / "blocked" / "x.journal"))


def test_a_fixed_recipe_states_the_train_command_that_runs_it():
    """addition_length3.toml's header gives the one-line ``rnnbench train`` for its recipe: it must build the
    study's own configuration, so the comment cannot drift from the data."""
    import shlex

    from benchmark.cli import build_parser
    from benchmark.commands import config_from_args

    path = STUDIES / "addition_length3.toml"
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   rnnbench train "))
    command = ""
    for line in lines[start:]:
        command += " " + line.lstrip("# ").rstrip("\\ ")
        if not line.endswith("\\"):
            break
    args = build_parser().parse_args(shlex.split(command)[1:])
    spec = load_study(path, "lstm", "standard")
    stated = config_from_args(args)
    assert stated == spec.train_config({})
    assert stated.train_lengths == (3,) and not spec.space
