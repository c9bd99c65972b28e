"""Draw a distiller's (student layer x teacher layer) attention as a heatmap, per epoch."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from torch import Tensor  # noqa: E402


def attention_figure(scores: Tensor, title: str) -> plt.Figure:
    """Annotated heatmap of an ``(S, T)`` row-normalised attention matrix."""
    scores = scores.float().cpu()
    figure, axis = plt.subplots(figsize=(max(4.0, 1.2 + 0.9 * scores.shape[1]), max(2.4, 1.0 + 0.7 * scores.shape[0])))
    image = axis.imshow(scores.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    for s in range(scores.shape[0]):
        for t in range(scores.shape[1]):
            value = scores[s, t].item()
            axis.text(t, s, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    axis.set_xticks(range(scores.shape[1]), [f"T{t + 1}" for t in range(scores.shape[1])])
    axis.set_yticks(range(scores.shape[0]), [f"S{s + 1}" for s in range(scores.shape[0])])
    axis.set_xlabel("teacher layer")
    axis.set_ylabel("student layer")
    axis.set_title(title)
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    return figure


class AttentionHeatmap(L.Callback):
    """After each training epoch, send the distiller's attention to TensorBoard and to PNG files.

    Does nothing for methods without attention (``attention_scores()`` is None).

    Args:
        every_n_epochs: draw every n-th epoch (the last epoch is always drawn).
        dirname: sub-folder of the run's log dir that receives ``epoch_XXXX.png``.
    """

    def __init__(self, every_n_epochs: int = 1, dirname: str = "attention") -> None:
        self.every_n_epochs = every_n_epochs
        self.dirname = dirname

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        distiller = getattr(pl_module, "distiller", None)
        scores = distiller.attention_scores() if distiller is not None else None
        last = (trainer.max_epochs or 0) > 0 and trainer.current_epoch + 1 >= trainer.max_epochs
        if scores is None or not trainer.is_global_zero or (trainer.current_epoch % self.every_n_epochs and not last):
            return
        figure = attention_figure(scores, f"ABKD attention, epoch {trainer.current_epoch}")
        folder = Path(trainer.log_dir or trainer.default_root_dir) / self.dirname
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / f"epoch_{trainer.current_epoch:04d}.png", dpi=100)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("abkd/attention", figure, global_step=trainer.current_epoch)
        plt.close(figure)
