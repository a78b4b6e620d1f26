"""The addition generator against integer arithmetic; metrics and padding."""

import pytest
import torch
from conftest import tiny_config

from benchmark.config import TrainConfig
from benchmark.models import Model
from benchmark.tasks import Batch
from benchmark.tasks.addition import AdditionTask, bits_to_int, generate


def test_generator_matches_integer_addition():
    lengths = torch.tensor([1, 2, 3, 5, 8, 13, 20, 40] * 50)
    x, y = generate(lengths, torch.Generator().manual_seed(1))
    assert x.shape == (len(lengths), 40, 2) and y.shape == (len(lengths), 40)
    for i, n in enumerate(lengths.tolist()):
        a, b = bits_to_int(x[i, :, 0].tolist()), bits_to_int(x[i, :, 1].tolist())
        total = bits_to_int(y[i].tolist())
        assert a < 2 ** (n - 1) and b < 2 ** (n - 1), "operands must be below 2^(L-1)"
        assert a + b == total, "LSB-first sum bits must encode a + b"
        assert not y[i, n:].any() and not x[i, n:].any(), "padding must be zero"


def test_generator_is_seeded_and_uses_all_operand_bits():
    lengths = torch.full((2000,), 6)
    x1, _ = generate(lengths, torch.Generator().manual_seed(3))
    x2, _ = generate(lengths, torch.Generator().manual_seed(3))
    x3, _ = generate(lengths, torch.Generator().manual_seed(4))
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    operands = {bits_to_int(row) for row in x1[:, :, 0].int().tolist()}
    assert operands == set(range(2**5))


def test_task_splits_follow_config():
    config = tiny_config("addition", train_lengths=(3,), max_train_length=6, eval_lengths=(9, 12))
    task = AdditionTask(config, "cpu")
    assert set(task.splits["train"][2].tolist()) == {3}
    # Validation comes from the training distribution: a length-3 model is chosen without seeing other lengths.
    assert set(task.splits["val"][2].tolist()) == {3}
    assert task.test_lengths == [1, 2, 3, 4, 5, 6, 9, 12]
    assert set(AdditionTask(config.replace(train_lengths=()), "cpu").splits["val"][2].tolist()) == set(range(1, 7))
    same = AdditionTask(config.replace(seed=5), "cpu")
    # The test set is shared by every run; training data follows the seed.
    assert "test" not in task.splits  # made when first scored: search trials never pay for it
    assert torch.equal(same.split("test")[0], task.split("test")[0])
    assert len(task.split("test")[2]) == task.test_size == len(task.test_lengths) * 1000
    assert not torch.equal(same.splits["train"][0], task.splits["train"][0])


class OracleAdder(torch.nn.Module):
    """Emits the exact sum bits as large logits, except it flips bit 0 of every string of ``flip_length``."""

    def __init__(self, flip_length):
        super().__init__()
        self.flip_length = flip_length

    def forward(self, x, lengths=None):
        a, b = x[..., 0].long(), x[..., 1].long()
        carry = torch.zeros(len(x), dtype=torch.long)
        bits = torch.zeros_like(a)
        for t in range(x.size(1)):
            column = a[:, t] + b[:, t] + carry
            bits[:, t], carry = column & 1, column >> 1
        if lengths is not None:
            flip = lengths == self.flip_length
            bits[flip, 0] = 1 - bits[flip, 0]
        return (bits.float() * 2 - 1).mul(20).unsqueeze(-1)


def test_evaluate_metrics_match_hand_computation():
    config = tiny_config("addition", max_train_length=4, eval_lengths=(7,))
    task = AdditionTask(config, "cpu")
    metrics = task.evaluate(OracleAdder(flip_length=3), "test", "ce")
    # Length 3: one of three bits wrong in every string; other lengths perfect.
    assert metrics["bit_acc_by_len"] == pytest.approx({1: 1.0, 2: 1.0, 3: 2 / 3, 4: 1.0, 7: 1.0})
    assert metrics["seq_acc_by_len"] == pytest.approx({1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0, 7: 1.0})
    assert metrics["acc"] == pytest.approx((3 + 2 / 3) / 4)  # mean over lengths 1..4, not over bits
    assert metrics["seq_acc"] == pytest.approx(0.75)


@pytest.mark.parametrize("arch", ["lstm", "bigru"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_padding_changes_neither_loss_nor_outputs(arch, loss):
    torch.manual_seed(0)
    config = TrainConfig.for_task("addition", arch, hidden_size=6)
    task = AdditionTask(config.replace(train_size=20, max_train_length=5), "cpu")
    model = Model(arch, 2, 6, 1, readout="per_step").eval()
    lengths = torch.tensor([2, 5, 3])
    x, y = generate(lengths, torch.Generator().manual_seed(0))
    padded_x = torch.cat([x, torch.rand(3, 4, 2)], dim=1)  # junk, not zeros, in the padding
    padded_y = torch.cat([y, torch.ones(3, 4)], dim=1)
    tight = Batch(x, y, lengths)
    loose = Batch(padded_x, padded_y, lengths)
    loss_tight = task.loss(loss, model(tight.x, tight.lengths), tight)
    loss_loose = task.loss(loss, model(loose.x, loose.lengths), loose)
    assert loss_tight[1] == loss_loose[1] == lengths.sum()
    assert loss_tight[0].item() == pytest.approx(loss_loose[0].item(), rel=1e-5)
    out_tight, out_loose = model(x, lengths), model(padded_x, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out_tight[i, :n], out_loose[i, :n])


def test_validation_accuracy_is_over_the_training_lengths():
    config = tiny_config("addition", train_lengths=(3,), max_train_length=6, eval_lengths=(9,))
    val = AdditionTask(config, "cpu").evaluate(OracleAdder(flip_length=5), "val", "ce")
    assert val["acc"] == 1.0 and set(val["bit_acc_by_len"]) == {3}  # the flipped length 5 is not validated
    beyond = AdditionTask(config.replace(train_lengths=(9,)), "cpu").evaluate(OracleAdder(flip_length=9), "val", "ce")
    assert beyond["acc"] == pytest.approx(8 / 9)  # bit 0 of each length-9 string flipped
