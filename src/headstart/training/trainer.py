"""The one training loop (Hugging Face Accelerate) used by every strategy and phase."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import Dataset

from headstart.backbones import Backbone
from headstart.config import TrainConfig
from headstart.device import derive_seed, make_accelerator, seed_everything, seed_global, seeded
from headstart.errors import ConfigError
from headstart.features.predict import collate_of, predict_logits
from headstart.strategies import ParamGroup, Strategy, StrategyContext
from headstart.strategies.steps import Step, SupervisedStep
from headstart.training.callbacks import Callback, EarlyStopping, TrainState
from headstart.training.checkpoint import (
    load_nested,
    load_optimizer_state,
    optimizer_state,
    rng_state,
    save_nested,
    set_rng_state,
    write_safetensors,
)
from headstart.training.lr_find import RangeTest, check_sweep, diverged, rates, smooth
from headstart.training.optim import build_optimizer, build_scheduler
from headstart.training.tracking import Tracking, epoch_values


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def batches_per_process(step: Step, processes: int) -> int:
    """The batches one of ``processes`` data-parallel processes takes in an epoch, as
    Accelerate shards them: every process takes one batch per round; a loader that drops
    its last incomplete batch drops an incomplete round too, any other repeats batches to
    complete it. The learning-rate schedule counts these steps."""
    batches = step.steps_per_epoch()
    if processes <= 1:
        return batches
    if step.drops_last():
        return max(1, batches // processes)
    return math.ceil(batches / processes)


def train_draws_seed(seed: int, epoch: int, process: int = 0) -> int:
    """The seed of the process-wide generators (augmentation, dropout) for ``epoch`` on
    data-parallel ``process``: each process draws its own (the same draws on every process
    would crop, flip and drop out the examples at one position of every shard alike); the
    first process draws as a single process does."""
    name = f"train draws, epoch {epoch}" + (f", process {process}" if process else "")
    return derive_seed(seed, name)


class Trainer:
    """The one loop: every gradient step in headstart is taken here.

    A :class:`~headstart.strategies.steps.Step` says what a batch is and what it costs
    (by default: cross-entropy on ``(input, label)`` pairs plus the strategy's loss term);
    the loop owns the rest: AdamW over the strategy's :class:`ParamGroup` layout, the
    step's schedule, Accelerate (device, mixed precision, gradient accumulation, several
    processes), ``strategy.on_epoch_start`` (freezing), validation, early stopping,
    callbacks (progress, history) and, with ``checkpoint_dir``, a checkpoint after every
    epoch that ``resume=True`` continues from (model, optimiser, schedule, strategy, step,
    random state).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: Path | None = None,
        eval_batch_size: int = 64,
        tracking: Tracking | None = None,
    ) -> None:
        self.cfg = cfg
        self.callbacks = [EarlyStopping(cfg.patience), *callbacks]
        self.checkpoint_dir = checkpoint_dir
        self.eval_batch_size = eval_batch_size
        self.tracking = tracking

    # ---------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        groups: list[ParamGroup],
        train_ds: Dataset[Any] | None,
        val_ds: Dataset[Any] | None,
        strategy: Strategy | None = None,
        resume: bool = False,
        step: Step | None = None,
        ctx: StrategyContext | None = None,
    ) -> TrainState:
        """Train ``model``. ``train_ds``: ``(input, label)`` pairs for the default
        supervised step (None when ``step`` brings its own batches). With a strategy,
        its ``setup(ctx)`` runs before the first epoch and ``teardown(ctx)`` after the
        last (``ctx`` is built from the training data when not given)."""
        cfg = self.cfg
        seed_everything(cfg)
        tracking = self.tracking
        acc = make_accelerator(cfg, **(tracking.accelerator_kwargs() if tracking else {}))
        generator = torch.Generator()
        step, ctx = self._step(model, train_ds, strategy, step, ctx, acc.device)
        if strategy is not None and ctx is not None:
            ctx.steps_per_epoch = batches_per_process(step, acc.num_processes)
            with seeded(cfg.seed, "strategy setup"):  # modules it builds, draws it makes
                strategy.setup(ctx)
        if tracking is not None:
            project, init_kwargs = tracking.init_kwargs()
            acc.init_trackers(project, config=tracking.config, init_kwargs=init_kwargs)
        try:
            return self._run(acc, model, groups, val_ds, strategy, resume, step, generator)
        finally:
            if tracking is not None:
                acc.end_training()
            if strategy is not None and ctx is not None:
                strategy.teardown(ctx)

    def _step(
        self,
        model: nn.Module,
        train_ds: Dataset[Any] | None,
        strategy: Strategy | None,
        step: Step | None,
        ctx: StrategyContext | None,
        device: torch.device,
    ) -> tuple[Step, StrategyContext | None]:
        """The step given, or the supervised step on ``train_ds`` (with a context built
        from the training data when a strategy needs one and none is given)."""
        cfg = self.cfg
        if step is not None:
            return step, ctx
        if train_ds is None:
            raise ConfigError(
                "training data or a step that brings its own batches",
                "neither",
                "pass train_ds, or a Step",
            )
        if strategy is not None and ctx is None and isinstance(model, Backbone):
            ctx = StrategyContext(
                model,
                train_ds,
                num_classes=0,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                device=device,
            )
        step = SupervisedStep(
            train_ds,
            cfg.batch_size,
            collate_of(model),
            cfg.num_workers,
            cfg.label_smoothing,
            strategy,
            ctx,
        )
        return step, ctx

    def range_test(
        self,
        model: nn.Module,
        groups: list[ParamGroup],
        train_ds: Dataset[Any],
        strategy: Strategy | None = None,
        ctx: StrategyContext | None = None,
        *,
        start: float = 1e-7,
        end: float = 10.0,
        steps: int = 200,
        method: str = "valley",
        on_step: Callable[[int, float, float], None] | None = None,
    ) -> RangeTest:
        """The learning-rate range test (:mod:`headstart.training.lr_find`): ``steps``
        optimiser steps at geometrically growing rates, the head's from ``start`` to
        ``end`` and every group at its usual fraction of it, through the strategy's loss
        and hooks as training would take them. The model's weights and buffers, which
        parameters train, the strategy's own modules and the random state are put back
        bit for bit afterwards; the optimiser is a throwaway. ``on_step(i, rate, loss)``
        after each step (a progress bar)."""
        check_sweep(start, end, steps, method)
        random_state = rng_state()
        cfg = self.cfg
        seed_everything(cfg)
        acc = make_accelerator(cfg)
        generator = torch.Generator()
        step, ctx = self._step(model, train_ds, strategy, None, ctx, acc.device)
        keep = [model, *step.modules()]
        if strategy is not None:
            keep += strategy.own_modules()
        saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in keep]
        trains = [[p.requires_grad for p in m.parameters()] for m in keep]
        if strategy is not None and ctx is not None:
            ctx.steps_per_epoch = batches_per_process(step, acc.num_processes)
            with seeded(cfg.seed, "strategy setup"):
                strategy.setup(ctx)
        lrs: list[float] = []
        losses: list[float] = []
        stopped = "end of the sweep"
        try:
            for module in keep[1:]:
                module.to(acc.device)
            optimizer = build_optimizer(groups, cfg)
            scales = [g["lr"] / cfg.lr for g in optimizer.param_groups]
            wrapped, optimizer = acc.prepare(model, optimizer)
            base = acc.unwrap_model(wrapped)
            wrapped.train()
            if strategy is not None and isinstance(base, Backbone):
                strategy.on_epoch_start(0, base)
            elif strategy is None:
                apply_groups(groups)
            sweep = rates(start, end, steps)
            epoch = 0
            while len(lrs) < steps and stopped == "end of the sweep":
                generator.manual_seed(derive_seed(cfg.seed, f"train order, epoch {epoch}"))
                for batch in acc.prepare(step.loader(epoch, generator)):
                    lr = float(sweep[len(lrs)])
                    for group, scale in zip(optimizer.param_groups, scales, strict=True):
                        group["lr"] = lr * scale
                    loss = step.loss(wrapped, batch)
                    acc.backward(loss)
                    self._update(optimizer, None)
                    lrs.append(lr)
                    losses.append(float(loss.detach()))
                    if on_step is not None:
                        on_step(len(lrs), lr, losses[-1])
                    if diverged(smooth(losses)):
                        stopped = f"the loss diverged at rate {lr:.3g}"
                        break
                    if len(lrs) == steps:
                        break
                epoch += 1
        finally:
            if strategy is not None and ctx is not None:
                strategy.teardown(ctx)
            for module, state, flags in zip(keep, saved, trains, strict=True):
                module.load_state_dict(state)
                for p, flag in zip(module.parameters(), flags, strict=True):
                    p.requires_grad_(flag)
            set_rng_state(random_state)
        if len(lrs) < 10:
            raise ConfigError(
                "a range test of at least 10 steps before the loss diverges",
                f"{len(lrs)} steps ({stopped})",
                "lower the start rate (--start-lr)",
            )
        return RangeTest(lrs, losses, stopped=stopped, method=method)

    def _run(
        self,
        acc: Accelerator,
        model: nn.Module,
        groups: list[ParamGroup],
        val_ds: Dataset[Any] | None,
        strategy: Strategy | None,
        resume: bool,
        step: Step,
        generator: torch.Generator,
    ) -> TrainState:
        cfg = self.cfg
        own = [*(strategy.own_modules() if strategy is not None else []), *step.modules()]
        for module in own:
            module.to(acc.device)  # before the optimiser, so resumed state lands beside it
        for name, modules in (
            ("strategy", strategy.own_modules() if strategy is not None else []),
            ("step", step.modules()),
        ):
            known = {id(p) for g in groups for p in g.params}
            params = [p for m in modules for p in m.parameters() if id(p) not in known]
            if params:  # trained beside the model, at the head's learning rate
                groups = [*groups, ParamGroup(name, params, True, 1.0)]
        optimizer = build_optimizer(groups, cfg)
        # each of several processes takes its shard of the batches: the schedule counts
        # the optimiser steps one process takes
        per_process = batches_per_process(step, acc.num_processes)
        steps_per_epoch = math.ceil(per_process / cfg.grad_accum)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, step.schedule)
        model, optimizer = acc.prepare(model, optimizer)
        prepared: dict[int, Any] = {}
        state = TrainState()
        best_state: dict[str, torch.Tensor] | None = None
        if resume and self._has_checkpoint():
            state, best_state = self._load(
                acc.unwrap_model(model), optimizer, scheduler, strategy, step, acc.scaler
            )
        if state.finished:  # nothing left to train: hand back the best weights
            return self._finish(acc, model, best_state, state)

        for cb in self.callbacks:
            cb.on_train_begin(state, cfg.epochs, per_process)
        base = acc.unwrap_model(model)
        for epoch in range(state.epoch + 1, cfg.epochs):
            t0 = time.perf_counter()
            # the epoch's order from a generator of its own; augmentation and dropout draw
            # from the process-wide generators, seeded here for this epoch alone: an epoch
            # depends on (seed, epoch) and on nothing drawn before it (setup, validation,
            # an embedding pass), and a resumed run continues bit for bit; each of several
            # processes draws its own
            generator.manual_seed(derive_seed(cfg.seed, f"train order, epoch {epoch}"))
            seed_global(train_draws_seed(cfg.seed, epoch, acc.process_index))
            raw = step.loader(epoch, generator)
            if id(raw) not in prepared:
                prepared = {id(raw): acc.prepare(raw)}
            loader = prepared[id(raw)]
            model.train()
            if strategy is not None and isinstance(base, Backbone):
                strategy.on_epoch_start(epoch, base)
            elif strategy is None:
                apply_groups(groups)
            trainable, total = count_params(base)
            loss_sum, n_batches = 0.0, 0
            for batch in loader:
                with acc.accumulate(model):
                    loss = step.loss(model, batch)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        self._update(optimizer, scheduler)
                        state.step += 1
                loss_val = float(loss.detach())
                loss_sum += loss_val
                n_batches += 1
                for cb in self.callbacks:
                    cb.on_batch_end(state, loss_val)
            state.epoch = epoch
            if acc.num_processes > 1:  # the mean over every process's batches
                totals = acc.reduce(
                    torch.tensor([loss_sum, float(n_batches)], device=acc.device), "sum"
                )
                loss_sum, n_batches = float(totals[0]), int(totals[1])
            logs = {
                "epoch": epoch,
                "train_loss": loss_sum / max(1, n_batches),
                **self._validate(base, val_ds, acc.device),
                "lr": optimizer.param_groups[-1]["lr"],
                "trainable_params": trainable,
                "total_params": total,
                "seconds": time.perf_counter() - t0,
            }
            for cb in self.callbacks:
                cb.on_epoch_end(state, logs)
            if self.tracking is not None:
                acc.log(epoch_values(logs), step=epoch)
            state.history.append(logs)
            if logs.get("best"):
                best_state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
            if epoch == cfg.epochs - 1:
                state.stop = True
            if state.stop:
                state.finished = True
            if acc.is_main_process:  # one writer of the checkpoint
                self._save(
                    base, optimizer, scheduler, strategy, step, state, best_state, acc.scaler
                )
            if state.stop:
                break
        for cb in self.callbacks:
            cb.on_train_end(state)
        return self._finish(acc, model, best_state, state)

    @staticmethod
    def _update(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """One optimiser step (the training loop's, and the range test's with its rates
        set by hand), the schedule's step, and the gradients cleared."""
        optimizer.step()  # the only optimiser step in headstart
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def _finish(
        acc: Accelerator,
        model: nn.Module,
        best_state: dict[str, torch.Tensor] | None,
        state: TrainState,
    ) -> TrainState:
        """Load the best weights and take off Accelerate's mixed-precision wrapper, so that
        evaluation and saving see the plain fp32 model (as ``headstart.load`` will)."""
        base = acc.unwrap_model(model, keep_fp32_wrapper=False)
        if best_state is not None:
            base.load_state_dict(best_state)
        return state

    # ---------------------------------------------------------------------------------
    def _validate(
        self, model: nn.Module, val_ds: Dataset[Any] | None, device: torch.device
    ) -> dict[str, float]:
        if val_ds is None or len(val_ds) == 0:  # type: ignore[arg-type]
            # no validation data: early stopping keeps the last epoch
            nan = float("nan")
            return {"val_loss": nan, "val_accuracy": nan, "val_macro_f1": nan}
        logits, labels = predict_logits(
            model, val_ds, self.eval_batch_size, device, self.cfg.num_workers
        )
        pred = logits.argmax(1).numpy()
        y = labels.numpy()
        return {
            "val_loss": float(nn.functional.cross_entropy(logits, labels)),
            "val_accuracy": float(accuracy_score(y, pred)),
            "val_macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        }

    def _has_checkpoint(self) -> bool:
        return (
            self.checkpoint_dir is not None and (self.checkpoint_dir / "last.safetensors").is_file()
        )

    def _save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        strategy: Strategy | None,
        step: Step,
        state: TrainState,
        best_state: dict[str, torch.Tensor] | None,
        scaler: Any = None,
    ) -> None:
        if self.checkpoint_dir is None or not self.cfg.checkpoint:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if best_state is not None and state.best_epoch == state.epoch:
            write_safetensors(best_state, self.checkpoint_dir / "best.safetensors")
        save_nested(
            {
                "model": {k: v for k, v in model.state_dict().items()},
                "optimizer": optimizer_state(optimizer),
                "scheduler": scheduler.state_dict(),
                "strategy": strategy.state_dict() if strategy is not None else None,
                "step": step.state_dict(),
                "step_modules": [m.state_dict() for m in step.modules()],
                "state": copy.deepcopy(vars(state)),
                "rng": rng_state(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            self.checkpoint_dir / "last.safetensors",
        )

    def _load(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        strategy: Strategy | None,
        step: Step,
        scaler: Any = None,
    ) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
        assert self.checkpoint_dir is not None
        ck = load_nested(self.checkpoint_dir / "last.safetensors")
        model.load_state_dict(ck["model"])
        for module, weights in zip(step.modules(), ck.get("step_modules") or [], strict=False):
            module.load_state_dict(weights)  # before the optimiser state that refers to them
        load_optimizer_state(optimizer, ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if strategy is not None and ck["strategy"] is not None:
            strategy.load_state_dict(ck["strategy"])
        step.load_state_dict(ck.get("step") or {})
        state = TrainState(**ck["state"])
        set_rng_state(ck["rng"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        best_path = self.checkpoint_dir / "best.safetensors"
        best = load_file(str(best_path)) if best_path.is_file() else None
        return state, best


def apply_groups(groups: list[ParamGroup]) -> None:
    """Without a strategy: each group's parameters train as the group says."""
    for g in groups:
        for p in g.params:
            p.requires_grad_(g.trainable)
