"""Modular counting (after Deletang et al. 2023): the running sum mod 5 of digits 0..4, trained short, tested long.

Example: rnnbench train --task modular_counting --arch lstm --max-train-length 40 --threads 1

``parity`` with five digits instead of two: one-hot digits (5 features), a 5-class output per step, the same
lengths, splits, seeds' roles and metrics (``benchmark.tasks.parity``); its test split has a seed of its own.
"""

from __future__ import annotations

from .parity import ParityTask


class ModularCountingTask(ParityTask):
    name = "modular_counting"
    modulus = 5
    input_size = output_size = modulus
    test_seed = 20_230_505
