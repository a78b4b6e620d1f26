"""Several seeds of one configuration trained in one process as one stacked model, each still its own run.

Example: rnnbench confirm --task addition --arch lstm --seeds 3   # seeds 1001-1003 in one StackedModel

``fit_together`` trains what ``fit`` would train for each seed, side by side: seed s builds its own task (its own
split and data) and model exactly as ``fit`` does (``train.prepare``), and draws its own shuffled batches with its
own generator; one step runs every seed's batch through ``benchmark.stacked_loop.StackedModel`` (x [S, B, T, F]),
sums the seeds' mean losses (each slice of a stacked parameter gets its own seed's gradient only), clips each
seed's gradients by that seed's own norm, and takes one Adam/AdamW step over the stacked tensors, which is S
optimizers' steps since Adam is per element. Schedule, best-epoch selection, early stopping and the
non-finite checks are fit's own pieces, per seed: a seed that stops early or diverges is left out of the loss
and its parameters are put back after every later step, so they never change, while the others keep training.
Each seed is evaluated, checkpointed and logged through its own ``RunTracker``, as a plain single-seed model.
A seed's kernel tag is ``stacked-fused`` or ``stacked-bmm`` (``StackedModel.kernel``), its epoch time the stack's.

Only the cells ``stacked_loop.stackable`` accepts train this way; the caller trains any other seeds one after
the other with ``fit`` (``why_not_together`` says why).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .cells.native import NativeCell
from .config import TrainConfig
from .registry import cell_spec
from .stacked_loop import StackedModel, stackable
from .train import (
    FINITE_CHECK_EVERY,
    BestEpoch,
    FitResult,
    NonFiniteLossError,
    batch_loss,
    check_finite,
    finish,
    log_setup,
    make_optimizer,
    make_schedule,
    overflow_error,
    prepare,
    record_epoch,
    validate,
)

KERNEL = "stacked-{}"  # the kernel tag of a seed trained in a stack: stacked-fused or stacked-bmm


@dataclass
class Seed:
    """One seed of a stack: what ``fit`` would hold for it, and how it ended."""

    config: TrainConfig
    task: object
    model: torch.nn.Module
    tracker: object = None
    best: BestEpoch = field(default_factory=BestEpoch)
    result: FitResult | None = None
    error: Exception | None = None
    running: bool = True  # False once stopped early or failed: its slice is then frozen


def why_not_together(config: TrainConfig) -> str:
    """Why seeds of ``config`` cannot train as one stack ("" when they can), decided before anything is built."""
    spec = cell_spec(config.arch)
    if not (isinstance(spec.cls, type) and issubclass(spec.cls, NativeCell)):
        return f"{config.arch} has no stacked kernel (only rnn, lstm, gru and their bidirectional forms have one)"
    return ""


def build_seeds(configs: list[TrainConfig], trackers: list, task_data: dict | None = None) -> list[Seed]:
    """Each seed's task and model built exactly as ``fit`` builds them (threads, seeds, task, model)."""
    seeds = []
    for config, tracker in zip(configs, trackers, strict=True):
        _, task, model = prepare(config, None, task_data)
        seeds.append(Seed(config, task, model, tracker))
    return seeds


def fit_together(seeds: list[Seed], quiet: bool = False) -> list[Seed]:
    """Train every seed's model in one stack; each seed ends with ``result`` or its ``error``. Raises only what
    ``fit`` would raise past a seed (an interruption), or ValueError when the models cannot be stacked. Unless
    ``quiet``, one line per epoch gives every seed's validation accuracy."""
    models = [seed.model for seed in seeds]
    reason = stackable(models) or ("" if len({seed.task.train_size for seed in seeds}) == 1
                                   else "the seeds' training sets differ in size")
    if reason:
        raise ValueError(reason)
    config, device = seeds[0].config, next(models[0].parameters()).device
    stack = StackedModel(models).to(device)
    optimizer = make_optimizer(config, stack)
    steps_per_epoch = math.ceil(seeds[0].task.train_size / config.batch_size)
    schedule = make_schedule(config, optimizer, config.epochs * steps_per_epoch)
    shuffles = [torch.Generator().manual_seed(seed.config.seed) for seed in seeds]
    weight = stack.param("cell.rnn.weight_hh_l0")
    for seed in seeds:
        n_params = log_setup(seed.tracker, seed.task, seed.model, device, KERNEL.format(stack.kernel(weight, weight)))
        seed.result = FitResult(seed.model, 0, {}, {}, 0, n_params)
    iteration = 0
    try:
        for epoch in range(1, config.epochs + 1):
            if not any(seed.running for seed in seeds):
                break
            stack.train()
            active = [index for index, seed in enumerate(seeds) if seed.running]
            started = time.perf_counter()
            losses = torch.zeros(len(seeds), steps_per_epoch, device=device)
            batches = zip(*(seed.task.train_batches(config.batch_size, shuffle)
                            for seed, shuffle in zip(seeds, shuffles, strict=True)), strict=True)
            for step, batch in enumerate(batches):
                try:
                    losses[:, step] = _step(stack, seeds, batch, optimizer)
                except RuntimeError as error:
                    _fail_running(seeds, overflow_error(error, config, iteration + step + 1, epoch))
                    break
                if schedule:
                    schedule.step()
                if (step + 1) % FINITE_CHECK_EVERY == 0:
                    window = step + 1 - FINITE_CHECK_EVERY
                    _check_each(seeds, losses[:, window: step + 1], epoch, iteration + window)
            _check_each(seeds, losses[:, : step + 1], epoch, iteration)
            seconds = time.perf_counter() - started
            ended = [_end_epoch(stack, index, seed, epoch, iteration, losses[index, : step + 1], seconds)
                     if seed.running else f"seed {seed.config.seed} FAILED"
                     for index, seed in enumerate(seeds) if index in active]
            if not quiet:
                print(f"{config.arch} {config.task} epoch {epoch:>3}/{config.epochs}  {'  '.join(ended)}  "
                      f"{seconds:.1f}s", flush=True)
            iteration += step + 1
        for seed in seeds:
            if seed.error is None:
                finish(seed.result, seed.task, seed.config, seed.best, seed.tracker)
    except Exception as error:  # noqa: BLE001  (a fault of the stack fails every seed not yet finished, as fit's would)
        for seed in seeds:
            if seed.error is None and not (seed.result and seed.result.test):
                seed.error, seed.running = error, False
    return seeds


def _step(stack: StackedModel, seeds: list[Seed], batch: tuple, optimizer) -> torch.Tensor:
    """One optimisation step of every seed on its own batch; returns each seed's detached mean loss [S]."""
    per_seed = seed_losses(stack, seeds, batch)
    running = torch.tensor([seed.running for seed in seeds], device=per_seed.device)
    optimizer.zero_grad(set_to_none=True)
    torch.where(running, per_seed, 0.0).sum().backward()  # where, not a product: a NaN times 0 is still NaN
    if seeds[0].config.clip_grad:
        clip_each(list(stack.parameters()), seeds[0].config.clip_grad)
    optimizer.step()
    for index, seed in enumerate(seeds):
        if not seed.running:  # Adam's momentum would still move it: put its weights back
            stack.load_slice(seed.model, index)
    return per_seed.detach()


def seed_losses(stack: StackedModel, seeds: list[Seed], batch: tuple) -> torch.Tensor:
    """Each seed's mean training loss [S] on its own batch (``batch[s]``), as ``train_step`` computes it alone."""
    steps = max(b.x.size(1) for b in batch)
    x = torch.stack([F.pad(b.x, (0, 0, 0, steps - b.x.size(1))) for b in batch])
    lengths = None
    if any(b.lengths is not None for b in batch):
        lengths = torch.stack([b.lengths if b.lengths is not None else torch.full((b.x.size(0),), b.x.size(1))
                               for b in batch])
    logits = stack(x, lengths)
    return torch.stack([batch_loss(seed.task, seed.config, seed_logits[:, : b.x.size(1)]
                                   if stack.readout == "per_step" else seed_logits, b)
                        for seed, seed_logits, b in zip(seeds, logits, batch, strict=True)])


def clip_each(parameters: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` for every seed apart: seed s's gradients (slice s of each stacked parameter) scaled by
    max_norm / (their own total norm + 1e-6), where that is below 1."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))


def _check_each(seeds: list[Seed], losses: torch.Tensor, epoch: int, first_iteration: int) -> None:
    for seed, seed_losses in zip(seeds, losses, strict=True):
        if seed.running:
            try:
                check_finite(seed_losses, epoch, first_iteration)
            except NonFiniteLossError as error:
                seed.error, seed.running = error, False


def _fail_running(seeds: list[Seed], error: Exception) -> None:
    for seed in seeds:
        if seed.running:
            seed.error, seed.running = error, False


def _end_epoch(stack: StackedModel, index: int, seed: Seed, epoch: int, iteration: int, losses: torch.Tensor,
               seconds: float) -> str:
    """Seed ``index``'s epoch as fit ends one: its weights into its own model, validation, best epoch, the log.
    Returns the seed's part of the epoch line: its validation accuracy, starred when it improved."""
    stack.copy_into(seed.model, index)
    val, val_seconds = validate(seed.task, seed.model, seed.config.loss)
    name = f"seed {seed.config.seed}"
    try:
        improved = seed.best.update(epoch, val, seed.model)
    except NonFiniteLossError as error:
        seed.error, seed.running = error, False
        return f"{name} FAILED"
    record_epoch(seed.result, seed.tracker, seed.config, epoch, iteration, losses.cpu().tolist(), val, seconds,
                 val_seconds)
    if seed.best.stop(seed.config):
        seed.running = False
    return f"{name} val_acc {100 * val['acc']:.2f}%{' *' if improved else '  '}{'' if seed.running else ' stopped'}"
