"""The one training loop: every command that trains (train, tune, reproduce) runs ``fit``.

Example: rnnbench train --task mnist --arch lstm --optimizer adamw --schedule onecycle --lr 3e-3 \
    --batch-size 256 --clip-grad 1.0

Per iteration it records the training loss on the device (no host sync); per
epoch it validates, logs, keeps the best weights in memory and calls the
``epoch_callback`` (Optuna's pruning hook). At the end it restores the best
epoch's weights, scores the test split once and hands the model to the tracker.
A search trial (``search=True``) ranks on validation alone: it skips the test
split, which its study scores once for the trial it chooses.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import ConfigError, TrainConfig
from .kernel_choice import prepare_kernels
from .models import build_model, count_parameters
from .tasks import build_task

FINITE_CHECK_EVERY = 50  # iterations between host syncs that catch a diverged loss early
PROGRESS_EVERY = 20


class NonFiniteLossError(RuntimeError):
    """Training diverged; the best finite epoch is never replaced by a NaN model."""


@dataclass
class FitResult:
    model: torch.nn.Module
    best_epoch: int
    val: dict
    test: dict
    epochs_run: int
    n_params: int
    epoch_seconds: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return optimizer_class(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(config: TrainConfig, optimizer, total_steps: int):
    """Stepped once per iteration. ``lr`` is the peak rate for ``onecycle`` and the start rate for ``cosine``."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    return None


def train_step(model: torch.nn.Module, task, config: TrainConfig, optimizer: torch.optim.Optimizer,
               batch) -> torch.Tensor:
    """One optimisation step of fit (also timed alone by ``rnnbench perf``); returns the detached mean loss."""
    loss = batch_loss(task, config, model(batch.x, batch.lengths), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
    optimizer.step()
    return loss.detach()


def batch_loss(task, config: TrainConfig, logits: torch.Tensor, batch) -> torch.Tensor:
    """The mean training loss of one batch: the task's (sum, count) of ``config.loss``."""
    loss_sum, count = task.loss(config.loss, logits, batch)
    return loss_sum / count


def overflow_error(error: RuntimeError, config: TrainConfig, iteration: int, epoch: int) -> NonFiniteLossError:
    """An optimizer step's overflow as the fault it is, a diverged run; any other error is re-raised."""
    if "overflow" not in str(error):
        raise error
    # Adam's step size lr / (1 - beta1) no longer fits a float: the same fault as a NaN loss.
    return NonFiniteLossError(f"the optimizer step overflowed at iteration {iteration} (epoch {epoch}, "
                              f"lr {config.lr:g}); lower --lr")


class BestEpoch:
    """Best-epoch selection and early stopping: the highest (val acc, -val loss) so far, its weights and metrics."""

    def __init__(self):
        self.score, self.state, self.epoch, self.val, self.stale = None, None, 0, {}, 0

    def update(self, epoch: int, val: dict, model: torch.nn.Module) -> bool:
        """Record epoch ``epoch``'s validation; True when it is the best so far (its weights are then kept)."""
        if not math.isfinite(val["loss"]):
            raise NonFiniteLossError(f"validation loss is {val['loss']} after epoch {epoch}; "
                                     "lower --lr or set --clip-grad 1.0")
        score = (val["acc"], -val["loss"])
        if self.score is not None and score <= self.score:
            self.stale += 1
            return False
        self.score, self.epoch, self.val, self.stale = score, epoch, val, 0
        self.state = copy.deepcopy(model.state_dict())
        return True

    def stop(self, config: TrainConfig) -> bool:
        return bool(config.early_stop) and self.stale >= config.early_stop


def prepare(config: TrainConfig, task=None, task_data: dict | None = None):
    """What fit does before training: threads, seeds, the task and the model, in that order -> (device, task,
    model)."""
    config.validate()
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    task = task or build_task(config, device, **(task_data or {}))
    return device, task, build_model(config, task).to(device)


def log_setup(tracker, task, model: torch.nn.Module, device: torch.device, kernel: str | None) -> int:
    """The run's parameter count, device, kernel and the task's data; returns the parameter count."""
    n_params = count_parameters(model)
    if tracker:
        tracker.log_model_info(n_params=n_params, device=str(device), kernel=kernel)
        if hasattr(task, "run_params"):  # what a task draws once and keeps (a pixel permutation's seed)
            tracker.log_params(task.run_params())
        if hasattr(task, "dataset"):
            tracker.log_dataset(task.dataset())
    return n_params


def validate(task, model: torch.nn.Module, loss: str) -> tuple[dict, float]:
    """The validation split scored after an epoch, and its seconds (logged apart from the epoch's training)."""
    started = time.perf_counter()
    val = task.evaluate(model, "val", loss)
    return val, time.perf_counter() - started


def record_epoch(result: FitResult, tracker, config: TrainConfig, epoch: int, iteration: int,
                 train_losses: list[float], val: dict, seconds: float, val_seconds: float) -> None:
    result.train_losses.extend(train_losses)
    result.epoch_seconds.append(seconds)
    result.val_history.append(_scalars(val))
    result.epochs_run = epoch
    if tracker:
        tracker.log_epoch(epoch, iteration, train_losses, val, seconds, val_seconds, config.task)


def finish(result: FitResult, task, config: TrainConfig, best: BestEpoch, tracker, search: bool = False) -> FitResult:
    """The best epoch's weights restored, the test split scored once (not for a search trial), and the run's result
    logged."""
    result.model.load_state_dict(best.state)
    result.best_epoch, result.val = best.epoch, best.val
    result.test = {} if search else task.evaluate(result.model, "test", config.loss)
    if tracker:
        tracker.log_result(result, config, figure=not search)
    return result


def fit(config: TrainConfig, task=None, tracker=None, *, epoch_callback: Callable | None = None,
        quiet: bool = False, task_data: dict | None = None, search: bool = False) -> FitResult:
    """Train ``config`` on ``task`` (built from the config when not given); returns the best epoch's model.

    ``search``: a search trial, scored on validation only (no test split; the tracker draws no figure)."""
    device, task, model = prepare(config, task, task_data)
    # Measuring auto's kernel (and a first build of the fused cells, a minute) happens here, not inside epoch 1.
    kernel = prepare_kernels(model, device, lambda: next(iter(
        task.train_batches(config.batch_size, torch.Generator().manual_seed(config.seed)))))
    optimizer = make_optimizer(config, model)
    steps_per_epoch = math.ceil(task.train_size / config.batch_size)
    schedule = make_schedule(config, optimizer, config.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(config.seed)
    n_params = log_setup(tracker, task, model, device, kernel)
    best = BestEpoch()
    result = FitResult(model, 0, {}, {}, 0, n_params)
    bar = _progress(config, steps_per_epoch, quiet)
    iteration = 0
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            started = time.perf_counter()
            losses = torch.empty(steps_per_epoch, device=device)
            bar.reset()
            bar.set_description(f"{config.arch} {config.task} epoch {epoch}/{config.epochs}")
            for step, batch in enumerate(task.train_batches(config.batch_size, shuffle)):
                try:
                    losses[step] = train_step(model, task, config, optimizer, batch)
                except RuntimeError as error:
                    raise overflow_error(error, config, iteration + step + 1, epoch) from None
                if schedule:
                    schedule.step()
                if (step + 1) % FINITE_CHECK_EVERY == 0:
                    window = step + 1 - FINITE_CHECK_EVERY
                    check_finite(losses[window: step + 1], epoch, iteration + window)
                if not quiet and (step + 1) % PROGRESS_EVERY == 0:
                    bar.set_postfix_str(f"loss {losses[step].item():.4f}", refresh=False)
                bar.update(1)
            epoch_losses = losses[: step + 1]
            check_finite(epoch_losses, epoch, iteration)
            epoch_seconds = time.perf_counter() - started
            val, val_seconds = validate(task, model, config.loss)
            improved = best.update(epoch, val, model)
            train_losses = epoch_losses.cpu().tolist()
            record_epoch(result, tracker, config, epoch, iteration, train_losses, val, epoch_seconds,
                         val_seconds)
            iteration += len(train_losses)
            if not quiet:
                mark = " *" if improved else ""
                bar.write(f"{config.arch} {config.task} epoch {epoch:>3}/{config.epochs}  "
                          f"train_loss {np.mean(train_losses):.4f}  val_loss {val['loss']:.4f}  "
                          f"val_acc {100 * val['acc']:.2f}%  {epoch_seconds:.1f}s{mark}")
            if epoch_callback:
                epoch_callback(epoch, val)
            if best.stop(config):
                break
    finally:
        bar.close()

    return finish(result, task, config, best, tracker, search)


def check_finite(losses: torch.Tensor, epoch: int, first_iteration: int) -> None:
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        where = first_iteration + int((~finite).nonzero()[0, 0]) + 1
        raise NonFiniteLossError(f"training loss became non-finite at iteration {where} (epoch {epoch}); "
                                 "lower --lr or set --clip-grad 1.0")


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float | int)}


def _progress(config: TrainConfig, total: int, quiet: bool):
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI), where it would print one line per refresh;
    # the per-epoch summary lines are written either way.
    return tqdm(total=total, disable=True if quiet else None, leave=False, unit="batch", dynamic_ncols=True)
