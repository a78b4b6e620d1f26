"""Seeds trained together as one stacked model: each seed's loss, gradients and result are those it gets alone."""

import pytest
import torch
from conftest import tiny_config

from benchmark.models import Model
from benchmark.stacked import build_seeds, clip_each, fit_together, seed_losses, why_not_together
from benchmark.stacked_loop import StackedModel
from benchmark.train import batch_loss, fit, prepare

SEEDS = (1001, 1002, 1003)


def first_batches(seeds):
    return tuple(next(iter(s.task.train_batches(s.config.batch_size, torch.Generator().manual_seed(s.config.seed))))
                 for s in seeds)


@pytest.mark.parametrize("kernel", ["fused", "bmm"])
@pytest.mark.parametrize(("arch", "layers"), [("lstm", 1), ("bigru", 2), ("rnn", 1)])
def test_one_step_gives_each_seed_the_loss_and_clipped_gradients_it_gets_alone(arch, layers, kernel):
    configs = [tiny_config("addition", arch, num_layers=layers, seed=seed, clip_grad=0.05, impl="loop",
                           batch_size=3)
               for seed in SEEDS]
    seeds = build_seeds(configs, [None] * len(configs))
    stack = StackedModel([s.model for s in seeds])
    stack.prefer_fused = kernel == "fused"
    if kernel == "fused" and arch != "rnn":
        assert stack.kernel(seeds[0].task.splits["train"][0], stack.stacked[0]) == "fused"
    batches = first_batches(seeds)
    assert len({b.x.size(1) for b in batches}) > 1  # the seeds' batches are padded to different lengths
    losses = seed_losses(stack, seeds, batches)
    losses.sum().backward()
    clip_each(list(stack.parameters()), 0.05)
    for index, config in enumerate(configs):
        _, task, alone = prepare(config)  # the same seed trained alone: its own task, model and first batch
        batch = next(iter(task.train_batches(config.batch_size, torch.Generator().manual_seed(config.seed))))
        loss = batch_loss(task, config, alone(batch.x, batch.lengths), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(alone.parameters(), 0.05)
        assert losses[index].item() == pytest.approx(loss.item(), rel=1e-5)
        for name, stacked in zip(stack.names, stack.stacked, strict=True):
            torch.testing.assert_close(stacked.grad[index], alone.get_parameter(name).grad, rtol=1e-4, atol=1e-6)


def test_a_stopped_seed_keeps_its_weights_while_the_others_train():
    from benchmark.stacked import _step
    from benchmark.train import make_optimizer

    seeds = build_seeds([tiny_config("addition", "gru", seed=seed) for seed in SEEDS[:2]], [None, None])
    stack = StackedModel([s.model for s in seeds])
    before = [p.detach().clone() for p in stack.parameters()]
    optimizer = make_optimizer(seeds[0].config, stack)
    _step(stack, seeds, first_batches(seeds), optimizer)  # both train: Adam's momentum is now non-zero
    seeds[0].running = False
    stack.copy_into(seeds[0].model, 0)
    frozen = [p.detach()[0].clone() for p in stack.parameters()]
    _step(stack, seeds, first_batches(seeds), optimizer)
    for old, after, kept in zip(before, stack.parameters(), frozen, strict=True):
        assert torch.equal(after[0], kept) and not torch.equal(after[1], old[1])


def final(result):
    return {"best_epoch": result.best_epoch, "val_acc": result.val["acc"], "test_acc": result.test["acc"],
            "test_loss": result.test["loss"]}


@pytest.mark.parametrize(("task", "arch", "count"), [("addition", "lstm", 3), ("mnist", "bigru", 2)])
def test_seeds_trained_together_end_where_each_seed_alone_ends(task, arch, count, mnist_data):
    data = mnist_data if task == "mnist" else None
    configs = [tiny_config(task, arch, seed=seed, impl="loop", clip_grad=1.0) for seed in SEEDS[:count]]
    together = fit_together(build_seeds(configs, [None] * count, data))
    for seed, config in zip(together, configs, strict=True):
        assert seed.error is None
        alone = fit(config, quiet=True, task_data=data)
        got, want = final(seed.result), final(alone)
        assert got["best_epoch"] == want["best_epoch"] and seed.result.epochs_run == alone.epochs_run
        assert got == pytest.approx(want, abs=2e-3)
        # the seed's model is a plain single-seed Model holding its best epoch's weights
        assert isinstance(seed.result.model, Model)
        for name, value in alone.model.state_dict().items():
            torch.testing.assert_close(seed.result.model.state_dict()[name], value, rtol=1e-3, atol=1e-4)
    assert len({final(seed.result)["test_loss"] for seed in together}) == count  # different seeds, different runs


def test_cells_without_a_stacked_kernel_say_so():
    assert why_not_together(tiny_config("addition", "lstm")) == ""
    assert why_not_together(tiny_config("addition", "bigru")) == ""
    for arch in ("mingru", "indrnn", "biminlstm"):
        assert "no stacked kernel" in why_not_together(tiny_config("addition", arch))


def test_a_diverging_seed_fails_alone_and_the_others_finish_as_they_would_alone(capsys):
    from benchmark.train import NonFiniteLossError

    configs = [tiny_config("addition", "gru", seed=seed, impl="loop") for seed in SEEDS[:2]]
    seeds = build_seeds(configs, [None, None])
    real_loss = seeds[0].task.loss
    seeds[0].task.loss = lambda name, logits, batch: (real_loss(name, logits, batch)[0] * float("nan"), 1)
    fit_together(seeds)
    assert isinstance(seeds[0].error, NonFiniteLossError) and "non-finite" in str(seeds[0].error)
    assert f"seed {SEEDS[0]} FAILED" in capsys.readouterr().out
    assert seeds[1].error is None
    assert final(seeds[1].result) == pytest.approx(final(fit(configs[1], quiet=True)), abs=2e-3)


def test_each_epoch_prints_one_line_with_every_seeds_validation_accuracy(capsys):
    configs = [tiny_config("addition", "gru", seed=seed, impl="loop", epochs=3) for seed in SEEDS[:2]]
    seeds = fit_together(build_seeds(configs, [None, None]))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"gru addition epoch {epoch:>3}/3")
        for seed in seeds:
            assert f"seed {seed.config.seed} val_acc {100 * seed.result.val_history[epoch - 1]['acc']:.2f}%" in line
    fit_together(build_seeds(configs, [None, None]), quiet=True)
    assert capsys.readouterr().out == ""


def test_a_seed_that_stops_early_says_so_on_its_last_line(capsys):
    # lr ~0: validation never improves after epoch 1, so early_stop 1 ends both seeds after epoch 2
    configs = [tiny_config("addition", "gru", seed=seed, impl="loop", epochs=5, early_stop=1, lr=1e-12)
               for seed in SEEDS[:2]]
    seeds = fit_together(build_seeds(configs, [None, None]))
    lines = capsys.readouterr().out.splitlines()
    assert [seed.result.epochs_run for seed in seeds] == [2, 2]
    assert len(lines) == 2 and "stopped" not in lines[0]
    assert all(f"seed {seed.config.seed} val_acc" in lines[1] and lines[1].count(" stopped") == 2 for seed in seeds)
