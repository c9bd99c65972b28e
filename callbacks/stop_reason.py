"""One line saying why a fit stopped: its epoch limit, early stopping (on which metric, after how long), a time or
step limit, a signal, Ctrl-C, or the model or a callback asking to stop.

Lightning says so only for ``max_epochs``/``max_steps``; an early-stopped fit ends without a word, and a resumed run
that had already finished trains nothing and says nothing about it. :func:`stop_reason` reads the reason from the
trainer's public state, so a report can record it too.
"""
from __future__ import annotations

import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.trainer.states import TrainerFn


def early_stopping_reason(callback: EarlyStopping, trainer: L.Trainer) -> str:
    """Why ``callback`` stopped the fit: patience ran out, a threshold was crossed, or the metric is not finite."""
    current = trainer.callback_metrics.get(callback.monitor)
    best = float(callback.best_score)
    if callback.wait_count >= callback.patience:
        return (f"early stopping: {callback.monitor} did not improve for {callback.wait_count} validation checks "
                f"(patience {callback.patience}; best {best:.4g})")
    shown = f"{float(current):.4g}" if current is not None else "?"
    return f"early stopping: {callback.monitor} = {shown} crossed a stopping/divergence threshold or is not finite"


def stop_reason(trainer: L.Trainer) -> str:
    """Why the fit on ``trainer`` ended (after it returned)."""
    if trainer.received_sigterm:
        return "SIGTERM received"
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, EarlyStopping) and trainer.should_stop \
                and callback.stopped_epoch == trainer.current_epoch - 1:
            return early_stopping_reason(callback, trainer)
        if isinstance(callback, Timer) and (remaining := callback.time_remaining()) is not None and remaining <= 0:
            return "max_time reached"
    if trainer.fast_dev_run:
        return "fast_dev_run (a quick check, not a fit)"
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"max_steps={trainer.max_steps} reached"
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:  # type: ignore[operator]
        return f"max_epochs={trainer.max_epochs} reached"
    if trainer.should_stop:
        return "the model or a callback set trainer.should_stop"
    return "training ended"


class StopReason(L.Callback):
    """Prints ``fit stopped after N epochs (step S): <reason>`` when a fit ends, or ``fit interrupted ...`` on
    Ctrl-C (rank zero, on stderr)."""

    def __init__(self) -> None:
        self._resumed_at_step: int | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._resumed_at_step = checkpoint.get("global_step")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        reason = stop_reason(trainer)
        if self._resumed_at_step is not None and trainer.global_step == self._resumed_at_step:
            reason += " before this run (it resumed a finished run: nothing was trained)"
        epochs = f"{trainer.current_epoch} epoch{'s' if trainer.current_epoch != 1 else ''}"
        print(f"fit stopped after {epochs} (step {trainer.global_step}): {reason}", file=sys.stderr)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero and trainer.state.fn == TrainerFn.FITTING and isinstance(exception, KeyboardInterrupt):
            print(f"fit interrupted (Ctrl-C) in epoch {trainer.current_epoch} (step {trainer.global_step}); "
                  "--ckpt_path last continues from the last epoch end", file=sys.stderr)
