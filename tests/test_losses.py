"""Losses against hand-computed values, and masking."""

import math

import pytest
import torch

from benchmark.losses import bit_ce, bit_mse, class_ce, class_mse, length_mask


def test_class_ce_matches_hand_computation():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    total, count = class_ce(logits, labels)
    # p(correct) = 3/4 for the first, 1/2 for the second.
    assert count == 2
    assert total.item() == pytest.approx(-math.log(0.75) - math.log(0.5))


def test_class_mse_is_mean_over_classes_of_squared_probability_error():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    total, count = class_mse(logits, torch.tensor([0]))
    assert count == 1
    assert total.item() == pytest.approx(((0.25 - 1) ** 2 + 0.75**2) / 2)


def test_bit_losses_ignore_masked_positions():
    logits = torch.tensor([[0.0, 2.0, 1000.0]])
    bits = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third step is padding with an absurd logit
    total, count = bit_ce(logits, bits, mask)
    assert count.item() == 2
    expected = -math.log(0.5) - math.log(1 - 1 / (1 + math.exp(-2.0)))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total, count = bit_mse(logits, bits, mask)
    assert total.item() == pytest.approx(0.25 + (1 / (1 + math.exp(-2.0))) ** 2, rel=1e-6)


def test_length_mask():
    mask = length_mask(torch.tensor([1, 3, 0]), 3, "cpu")
    assert mask.tolist() == [[True, False, False], [True, True, True], [False, False, False]]
