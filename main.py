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
from lightning.fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402

from callbacks.log_folder import LogFolder  # noqa: E402
from callbacks.rng_state import RNGStateCheckpoint  # noqa: E402
from callbacks.stop_reason import StopReason  # noqa: E402
from cli.catalog import catalog_text, classes  # noqa: E402
from cli.checkpoint_policy import CheckpointPolicy, newest_file, resolve_checkpoint  # noqa: E402
from cli.errors import explain  # noqa: E402
from cli.given_checkpoint import GivenCheckpoint, check_weights, read_given  # noqa: E402
from cli.placeholders import class_path_of, fill, run_values, swapped_distiller, with_distiller  # noqa: E402
from cli.value_checks import check_optimizers  # noqa: E402
from foundation.errors import InputError  # noqa: E402
from foundation.files import creation_blocker  # noqa: E402

DEBUG_ENV = "GNNFACE_DEBUG"
SPECIAL_CKPT = ("hpc", "registry")
"""``--ckpt_path`` values Lightning resolves itself (``best``/``last`` are resolved here, in ``checkpoint.dirpath``)."""


class UsageError(InputError, ValueError):
    """A command line or config jsonargparse rejects, reduced to one line."""


class OutputPathError(InputError, PermissionError):
    """An output folder that cannot be created or written."""


class NothingToResumeError(InputError, FileNotFoundError):
    """``--ckpt_path best``/``last`` with no such checkpoint in the config's checkpoint folder."""


class LinesKeptFormatter(DefaultHelpFormatter):
    """jsonargparse's help layout, but the epilog's class list keeps one class per line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def not_ours(record: logging.LogRecord) -> bool:
    """Logging filter: Lightning's advertisement tips (litlogger, litmodels) are not about the run, and its own
    "`Trainer.fit` stopped" line is replaced by :class:`callbacks.stop_reason.StopReason`'s."""
    return not str(record.msg).startswith(("💡 Tip", "`Trainer.fit` stopped"))


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(not_ours)


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
    absolute = Path(str(folder)).absolute()
    blocker = creation_blocker(absolute)
    if blocker is not None:
        existing, kind = blocker
        if kind == "file":
            raise OutputPathError(f"{option} {absolute}: {existing} is a file, not a folder; choose another path")
        raise OutputPathError(f"{option} {absolute}: {existing} is not writable; choose a folder you can write to")


def logger_arguments(trainer: Any) -> Any:
    """The ``init_args`` of a single configured logger (``trainer.logger: {class_path, init_args}``), else None."""
    logger = trainer.get("logger")
    init_args = logger.get("init_args") if hasattr(logger, "get") else None
    return init_args if hasattr(init_args, "get") else None


def requeued() -> bool:
    """Whether this is a SLURM job that was requeued (it may have been stopped before its first epoch ended)."""
    return bool(os.environ.get("SLURM_RESTART_COUNT"))


def next_free(root: Path, stem: str) -> str:
    """``<stem>_<k>`` with the smallest ``k`` not yet a folder in ``root``."""
    k = 0
    while (root / f"{stem}_{k}").exists():
        k += 1
    return f"{stem}_{k}"


class FrameworkCLI(LightningCLI):
    """Links dataset facts from ``data`` into ``model`` for the graph experiments; checkpoints the RNGs; keeps
    every fit's checkpoints in a version folder of their own; checks the given checkpoint and values first."""

    given: GivenCheckpoint | None = None
    resuming = False
    checkpoint_folder: Path | None = None

    def __init__(self, *args: Any, only: str | None = None, **kwargs: Any) -> None:
        self.only = only
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """LightningCLI's subcommands, or only ``only`` when the command line starts with it: a subcommand's parser
        (the Trainer's, model's and data's options) takes start-up time to build, and the others go unused."""
        every = LightningCLI.subcommands()
        return {self.only: every[self.only]} if self.only in every else every

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Parsers that raise instead of printing usage (``explain`` makes one line), take option names only in
        full (``--trainer.max_epoch`` is not ``max_epochs``) and list the classes."""
        parser = super().init_parser(epilog=catalog_text(), formatter_class=LinesKeptFormatter, allow_abbrev=False,
                                     **kwargs)
        parser.exit_on_error = False
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RNGStateCheckpoint, "rng_state")  # always on, not just when a config lists it
        parser.add_class_arguments(CheckpointPolicy, "checkpoint")
        for fact in ("num_features", "num_classes", "graph_info"):
            parser.link_arguments(f"data.{fact}", f"model.init_args.{fact}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """jsonargparse's parse (its errors turned into a :class:`UsageError` of one line), then the run prepared:
        before LightningCLI reads ``--ckpt_path`` (it does so next), that file is found and checked here."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            message = explain(error, parser_keys(parser), [*classes("lightning_modules"), *classes("datamodules")])
            raise UsageError(message) from error
        if self.config.get("subcommand"):
            self.prepare(self.config[self.config["subcommand"]], self.config["subcommand"])

    def prepare(self, config: Namespace, subcommand: str) -> None:
        """Everything decided from the parsed config before any class is built or any file is written: names
        filled in (cli/placeholders.py), the given checkpoint found and read, values and output folders checked,
        and the logger's version chosen."""
        if subcommand != "fit":  # the checkpoint policy's state matters only to a fit continuing from the file
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used to create")
        values, swapped = run_values(config), swapped_distiller(config)
        policy, logger = config["checkpoint"], logger_arguments(config["trainer"])
        if isinstance(policy.get("dirpath"), str):
            policy["dirpath"] = fill("checkpoint.dirpath", with_distiller(policy["dirpath"], swapped), values)
        for section, key, swap in [(logger, "save_dir", False), (logger, "name", True)]:
            if hasattr(section, "get") and isinstance(section.get(key), str):
                value = with_distiller(section[key], swapped) if swap else section[key]
                section[key] = fill(f"trainer.logger.init_args.{key}", value, values)
        init_args = config.get("model.init_args") or Namespace()
        for key in [k for k, v in vars(init_args).items() if k.endswith("_checkpoint") and isinstance(v, str) and v]:
            option = f"model.init_args.{key}"  # teacher_, encoder_, ...
            init_args[key] = resolve_checkpoint(option, fill(option, init_args[key], values))
        self.given = self.given_checkpoint(config, subcommand, values)
        check_optimizers(config)
        check_writable("checkpoint.dirpath", policy["dirpath"])
        check_writable("trainer.default_root_dir", config["trainer"].get("default_root_dir"))
        if logger is not None:
            check_writable("trainer.logger.init_args.save_dir", logger.get("save_dir"))
            if "version" in logger and logger.get("version") is None:
                logger["version"] = self.log_version(subcommand, logger)

    def given_checkpoint(self, config: Namespace, subcommand: str, values: dict[str, str | None]) -> GivenCheckpoint | None:
        """``--ckpt_path`` found (``best``/``last`` in ``checkpoint.dirpath``, a folder's newest ``best.ckpt``) and
        read; ``config.ckpt_path`` becomes that file."""
        ckpt_path = config.get("ckpt_path")
        if not isinstance(ckpt_path, str) or ckpt_path in SPECIAL_CKPT or "://" in ckpt_path:
            return None
        dirpath = config["checkpoint"].get("dirpath")
        if ckpt_path in ("best", "last"):
            if not dirpath:
                raise NothingToResumeError(f"--ckpt_path {ckpt_path} looks in checkpoint.dirpath, which this config "
                                           "does not set; set it or give the checkpoint's path")
            found = newest_file(Path(dirpath).absolute(), f"{ckpt_path}.ckpt")
            if found is None and subcommand == "fit" and ckpt_path == "last" and requeued():
                print(f"nothing to resume in {Path(dirpath).absolute()} yet (a requeued job stopped before its first "
                      "epoch ended): starting the run", file=sys.stderr)
                config["ckpt_path"] = None
                return None
            if found is None:
                action = "drop --ckpt_path last to start a new run" if subcommand == "fit" else "train that run first"
                raise NothingToResumeError(f"--ckpt_path {ckpt_path}: nothing to {'resume' if subcommand == 'fit' else 'load'} "
                                           f"in {Path(dirpath).absolute()} (no version_<N>/{ckpt_path}.ckpt there); {action}")
            self.resuming = subcommand == "fit" and ckpt_path == "last"
            path = str(found)
        else:
            path = resolve_checkpoint("ckpt_path", fill("ckpt_path", ckpt_path, values))
        given = read_given(path, class_path_of(config.get("model")), fitting=subcommand == "fit")
        # LightningCLI reads ckpt_path next and takes the model's options from its hyper-parameters; without the
        # class it records (a checkpoint of a plain Trainer) that cannot work in subclass mode, so the path is set
        # again once that is done (before_instantiate_classes) and the weights are checked against the model instead
        config["ckpt_path"] = path if given.class_path or not given.hparams else None
        return given

    def before_instantiate_classes(self) -> None:
        """The given checkpoint's path, where LightningCLI was not to read it (see :meth:`given_checkpoint`)."""
        if self.given is not None and self.subcommand:
            self.config[self.subcommand]["ckpt_path"] = str(self.given.path)

    def log_version(self, subcommand: str, logger: Any) -> str | None:
        """The logger's version: a resumed fit continues its run's folder; validate/test/predict of a checkpoint
        log inside the folder of the fit that wrote it (``version_<N>/test_<k>``, or ``test_<k>`` when that folder
        is unknown); otherwise None (the logger's next ``version_<N>``)."""
        recorded = self.given.log_folder if self.given is not None else None
        root = Path(str(logger.get("save_dir") or ".")) / str(logger.get("name") or "")
        known = recorded is not None and recorded["name"] == str(logger.get("name") or "") \
            and (root / recorded["version"]).is_dir()
        if subcommand == "fit":
            return recorded["version"] if self.resuming and known and recorded else None
        if self.given is None:
            return None
        inside = root / recorded["version"] if known and recorded else root
        relative = inside.relative_to(root)
        return str(relative / next_free(inside, subcommand)) if str(relative) != "." else next_free(inside, subcommand)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with the checkpoint policy's callback on a fit that checkpoints, the log-folder and
        stop-reason callbacks; what the Trainer refuses becomes a :class:`UsageError`."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        configured = config["trainer"].get("callbacks") or []
        callbacks = [*(configured if isinstance(configured, list) else [configured]), LogFolder(), StopReason()]
        policy: CheckpointPolicy = config["checkpoint"]
        if self.subcommand == "fit" and policy.dirpath and config["trainer"].get("enable_checkpointing") is not False:
            given = self.given.path.absolute() if self.given is not None else None
            self.checkpoint_folder = given.parent if self.resuming and given else policy.run_folder(resume=False)
            callbacks += policy.callbacks(self.checkpoint_folder)
        try:
            return super().instantiate_trainer(**{**kwargs, "callbacks": callbacks})
        except (MisconfigurationException, ValueError) as refused:
            raise UsageError(f"trainer: {refused}") from refused

    def check_given_checkpoint(self) -> None:
        """The given checkpoint's weights fit the model just built (before Lightning loads them)."""
        if self.given is not None:
            check_weights(self.given, self.model)

    before_fit = before_validate = before_test = before_predict = check_given_checkpoint

    def report_outputs(self) -> None:
        """Prints where this run wrote its logs, checkpoints and files, as absolute paths (rank zero only)."""
        if not self.trainer.is_global_zero:
            return
        written = []
        log_dir = getattr(self.trainer.logger, "log_dir", None)  # not trainer.log_dir: that one is a collective
        if log_dir and Path(log_dir).is_dir():
            written.append(f"logs in {Path(log_dir).absolute()}")
        folder = self.checkpoint_folder
        if folder is not None and folder.is_dir():
            written.append(f"checkpoints in {folder} ({', '.join(sorted(p.name for p in folder.glob('*.ckpt')))})")
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]
            for attribute in ("output_dir", "output_file"):
                if value := getattr(callback, attribute, None):
                    path = Path(value) if Path(value).is_absolute() else Path(log_dir or self.trainer.default_root_dir) / value
                    written.append(f"{type(callback).__name__} output in {path.absolute()}")
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
    given = sys.argv[1:] if args is None else args
    import_named_classes(given)
    return FrameworkCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        only=given[0] if given else None,
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
