"""The command line: ``python main.py {fit,validate,test,predict} --config configs/<experiment>.yaml``.

A ``LightningCLI`` in subclass mode: the YAML picks the LightningModule and the
LightningDataModule by ``class_path``; the datamodule's facts (feature width,
number of classes, dataset schema) are linked into the model, so a config never
repeats them. The run's config is saved beside its TensorBoard logs. Every run also gets
:class:`callbacks.rng_state.RNGStateCheckpoint`, so ``fit --ckpt_path last`` resumes a killed run
exactly (docs/slurm_and_resume.md), and every fit the checkpoint policy of :mod:`cli.checkpoint_policy`
(``best.ckpt`` + ``last.ckpt`` in a new ``version_<N>`` folder; a config sets only ``checkpoint.dirpath``,
``checkpoint.monitor``, ``checkpoint.mode``).

A mistake in the input (an unknown key, a wrong type, a missing file: any
:class:`foundation.errors.InputError`) ends in one ``error: ...`` line and exit code 2; ``--debug`` (or
``GNNFACE_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb checks PyPI for a newer version on import
# Not the user's business: ogb converts its read-only split arrays with torch.from_numpy (nothing writes them),
# Lightning 2.6's own pytree helper uses a torch name torch deprecated.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", module=r"ogb\.")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Frozen parts (a distilled teacher, the GAN an encoder is trained against) stay in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

import lightning as L  # noqa: E402
from jsonargparse import DefaultHelpFormatter, Namespace  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402

from callbacks.rng_state import RNGStateCheckpoint  # noqa: E402
from cli.catalog import catalog_text, classes  # noqa: E402
from cli.checkpoint_policy import CheckpointPolicy, resolve_checkpoint  # noqa: E402
from cli.dataset_placeholder import dataset_name, fill_dataset  # noqa: E402
from cli.errors import explain  # noqa: E402
from foundation.errors import InputError  # noqa: E402
from foundation.files import creation_blocker  # noqa: E402

DEBUG_ENV = "GNNFACE_DEBUG"


class UsageError(InputError, ValueError):
    """A command line or config jsonargparse rejects, reduced to one line."""


class OutputPathError(InputError, PermissionError):
    """An output folder that cannot be created or written."""


class LinesKeptFormatter(DefaultHelpFormatter):
    """jsonargparse's help layout, but the epilog's class list keeps one class per line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def drop_tips(record: logging.LogRecord) -> bool:
    """Logging filter: Lightning's advertisement tips (litlogger, litmodels) are not about the run."""
    return not str(record.msg).startswith("💡 Tip")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(drop_tips)


def parser_keys(parser: Any) -> set[str]:
    """Every dotted option name of ``parser`` and of its subcommands' parsers (typo candidates)."""
    keys, parsers = set(), [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            keys.add(action.dest)
            parsers += list(getattr(action, "_name_parser_map", {}).values())
    return {key for key in keys if key and key != "help"}


def check_writable(option: str, folder: Any) -> None:
    """Raises OutputPathError unless ``folder`` is, or can be made, a writable folder (nothing is created)."""
    if folder is None:
        return
    blocker = creation_blocker(Path(str(folder)).absolute())
    if blocker is not None:
        existing, kind = blocker
        if kind == "file":
            raise OutputPathError(f"{option} {folder}: {existing} is a file, not a folder; choose another path")
        raise OutputPathError(f"{option} {folder}: {existing} is not writable; choose a folder you can write to")


class FrameworkCLI(LightningCLI):
    """Links dataset facts from ``data`` into ``model`` for the graph experiments; checkpoints the RNGs; keeps
    every fit's checkpoints in a version folder of their own."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Parsers that raise instead of printing usage (``explain`` makes one line) and list the classes."""
        parser = super().init_parser(epilog=catalog_text(), formatter_class=LinesKeptFormatter, **kwargs)
        parser.exit_on_error = False
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RNGStateCheckpoint, "rng_state")  # always on, not just when a config lists it
        parser.add_class_arguments(CheckpointPolicy, "checkpoint")
        for fact in ("num_features", "num_classes", "graph_info"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """jsonargparse's parse, its errors turned into a :class:`UsageError` of one line."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            message = explain(error, parser_keys(parser), [*classes("lightning_modules"), *classes("datamodules")])
            raise UsageError(message) from error

    def before_instantiate_classes(self) -> None:
        """``{dataset}`` in paths is filled in (cli/dataset_placeholder.py), checkpoint folders given for a checkpoint
        become files, and output folders are checked before any work."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        init_args = config.get("model.init_args") or Namespace()
        dataset = dataset_name(config.get("data"))
        logger = config["trainer"].get("logger")
        logger_args = logger.get("init_args") if hasattr(logger, "get") else None
        for section, option, key in [(config["checkpoint"], "checkpoint.dirpath", "dirpath"),
                                     *[(logger_args, f"trainer.logger.init_args.{k}", k) for k in ("save_dir", "name")]]:
            if hasattr(section, "get") and isinstance(section.get(key), str):
                section[key] = fill_dataset(option, section[key], dataset)
        for key in [k for k, v in vars(init_args).items() if k.endswith("_checkpoint") and isinstance(v, str) and v]:
            option = f"model.init_args.{key}"  # teacher_, encoder_, ...
            init_args[key] = resolve_checkpoint(option, fill_dataset(option, init_args[key], dataset))
        ckpt_path = config.get("ckpt_path")
        if isinstance(ckpt_path, str) and ckpt_path not in ("best", "last", "hpc", "registry") and "://" not in ckpt_path:
            config["ckpt_path"] = resolve_checkpoint("ckpt_path", fill_dataset("ckpt_path", ckpt_path, dataset))
        check_writable("checkpoint.dirpath", config["checkpoint"]["dirpath"])
        check_writable("trainer.default_root_dir", config["trainer"].get("default_root_dir"))
        if hasattr(logger, "get") and hasattr(logger.get("init_args"), "get"):
            check_writable("trainer.logger.init_args.save_dir", logger["init_args"].get("save_dir"))

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> L.Trainer:
        """The trainer, with the checkpoint policy's two callbacks on a fit that checkpoints."""
        policy: CheckpointPolicy = self._get(self.config_init, "checkpoint")
        self.checkpoint_folder = None
        if self.subcommand == "fit" and policy.dirpath and config.get("enable_checkpointing") is not False:
            resume = self._get(self.config, "ckpt_path") == "last"
            self.checkpoint_folder = policy.run_folder(resume=resume)
            callbacks = [*callbacks, *policy.callbacks(self.checkpoint_folder)]
        return super()._instantiate_trainer(config, callbacks)

    def report_outputs(self) -> None:
        """Prints where this run wrote its logs, checkpoints and files (rank zero only)."""
        if not self.trainer.is_global_zero:
            return
        written = []
        log_dir = getattr(self.trainer.logger, "log_dir", None)  # not trainer.log_dir: that one is a collective
        if log_dir and Path(log_dir).is_dir():
            written.append(f"logs in {log_dir}")
        folder = getattr(self, "checkpoint_folder", None)
        if folder is not None and folder.is_dir():
            written.append(f"checkpoints in {folder} ({', '.join(sorted(p.name for p in folder.glob('*.ckpt')))})")
        for callback in self.trainer.callbacks:
            for attribute in ("output_dir", "output_file"):
                if getattr(callback, attribute, None):
                    written.append(f"{type(callback).__name__} output in {getattr(callback, attribute)}")
        if written:
            print("outputs: " + "; ".join(written), file=sys.stderr)

    after_fit = after_validate = after_test = after_predict = report_outputs


def import_named_classes(args: list[str]) -> None:
    """Imports the module of every model/data class ``args`` names by its short name (``--data
    PlanetoidDataModule``): jsonargparse resolves short names only among classes already imported."""
    short = {path.rpartition(".")[2]: path for path in [*classes("lightning_modules"), *classes("datamodules")]}
    for arg in args:
        if (path := short.get(arg.rpartition("=")[2])) is not None:
            importlib.import_module(path.rpartition(".")[0])


def main(args: list[str] | None = None) -> FrameworkCLI:
    """Run the CLI on ``args`` (``sys.argv`` when None); returns it so tests can inspect the run.

    Raises:
        InputError: the arguments, the config or the files they name are wrong (``UsageError`` for what
            jsonargparse rejects).
    """
    import_named_classes(sys.argv[1:] if args is None else args)
    return FrameworkCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def run(argv: list[str]) -> int:
    """``main`` for the shell: a user's error prints ``error: <message>`` and returns 2, others raise."""
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
        os.environ[DEBUG_ENV] = "1"  # DDP's other ranks rerun sys.argv, which loses --debug
    sys.argv[1:] = [arg for arg in argv if arg != "--debug"]  # Lightning's DDP launcher reruns sys.argv
    try:
        main()
    except Exception as error:  # noqa: BLE001 - a bug re-raises below with its traceback
        message = None if debug else explain(error)
        if message is None:
            raise
        print(f"error: {message}  (--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
