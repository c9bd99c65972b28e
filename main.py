"""The command line: ``python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml``.

A ``LightningCLI`` in subclass mode: the YAML picks the LightningModule and the
LightningDataModule by ``class_path``; the datamodule's facts (feature width,
number of classes, dataset schema) are linked into the model, so a config never
repeats them. The run's config is saved beside its TensorBoard logs. Every run also gets
:class:`callbacks.rng_state.RNGStateCheckpoint`, so ``fit --ckpt_path last`` resumes a killed run
exactly (docs/slurm_and_resume.md).
"""
from __future__ import annotations

import os

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb checks PyPI for a newer version on import

import lightning as L  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402

from callbacks.rng_state import RNGStateCheckpoint  # noqa: E402


class FrameworkCLI(LightningCLI):
    """Links dataset facts from ``data`` into ``model`` for the graph experiments; checkpoints the RNGs."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RNGStateCheckpoint, "rng_state")  # always on, not just when a config lists it
        for fact in ("num_features", "num_classes", "graph_info"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")


def main(args: list[str] | None = None) -> FrameworkCLI:
    """Run the CLI on ``args`` (``sys.argv`` when None); returns it so tests can inspect the run."""
    return FrameworkCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
