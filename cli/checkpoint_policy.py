"""The one checkpoint policy of every ``main.py fit``: ``best.ckpt`` and ``last.ckpt`` in a new version folder.

A config names only the folder and what "best" means (``checkpoint: {dirpath: checkpoints/<run>, monitor: val/acc,
mode: max}``); each run then writes ``<dirpath>/version_<N>/`` with the next free ``N``, so a rerun never
replaces an earlier run's checkpoints. ``fit --ckpt_path last`` continues the newest version holding a
``last.ckpt`` instead (a resumed run is the same run); with none there it is an error naming the folder. Wherever a
checkpoint file is expected (``--ckpt_path``, a ``teacher_checkpoint``) a checkpoint folder may be given: it stands
for its newest version's ``best.ckpt``; ``--ckpt_path best``/``last`` stand for the newest ``best.ckpt``/``last.ckpt``
of the config's own ``checkpoint.dirpath``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from foundation.checkpoints import MissingFileError

VERSION = re.compile(r"version_(\d+)")


@dataclass
class CheckpointPolicy:
    """Where and by which score ``main.py fit`` keeps checkpoints.

    Args:
        dirpath: folder of this experiment's runs; each fit writes ``dirpath/version_<N>/{best,last}.ckpt``.
            None: no checkpoints from the policy (only the ``trainer.callbacks`` a config lists).
        monitor: the logged validation metric ``best.ckpt`` follows.
        mode: ``max`` or ``min``: whether a higher or a lower ``monitor`` is better.
        background: write each epoch's files in a thread while the next epoch trains (true), or before it does
            (false); null: in a thread when the model is on an accelerator (on the CPU, copying the state for the
            thread costs about what writing it does).
    """

    dirpath: str | None = None
    monitor: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    background: bool | None = None

    def run_folder(self, resume: bool) -> Path:
        """This run's ``dirpath/version_<N>`` (absolute): the newest one when ``resume``, else the next free one."""
        root = Path(str(self.dirpath)).absolute()
        versions = version_numbers(root)
        if resume and versions:
            return root / f"version_{versions[-1]}"
        return root / f"version_{versions[-1] + 1 if versions else 0}"

    def callbacks(self, folder: Path) -> list[Any]:
        """One :class:`~callbacks.best_and_last.BestAndLastCheckpoint`: ``best.ckpt`` by ``monitor`` and
        ``last.ckpt`` at every epoch end (``--ckpt_path last``), each epoch's state written once (``last.ckpt``
        is a relative link to ``best.ckpt`` when the epoch is the best so far), at once or (``background``) in a
        thread while the next epoch trains (landed before its first optimiser step and before ``fit`` returns)."""
        from callbacks.best_and_last import BestAndLastCheckpoint

        return [BestAndLastCheckpoint(folder, monitor=self.monitor, mode=self.mode, background=self.background)]


def version_numbers(root: Path) -> list[int]:
    """The ``N`` of every ``root/version_<N>`` folder, ascending."""
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := VERSION.fullmatch(p.name)))


def newest_file(root: Path, filename: str) -> Path | None:
    """The newest ``root/version_<N>/filename`` (by ``N``), else None."""
    for number in reversed(version_numbers(root)):
        if (root / f"version_{number}" / filename).is_file():
            return root / f"version_{number}" / filename
    return None


def resolve_checkpoint(option: str, path: str, filename: str = "best.ckpt") -> str:
    """``path`` itself when it is a file; a folder gives its newest ``version_<N>/<filename>``.

    A folder without versions but with ``<filename>`` directly inside gives that file.
    Raises:
        MissingFileError: nothing at ``path``, or a folder that holds no such checkpoint yet (``option`` names
            the setting in the message).
    """
    root = Path(path)
    if root.is_file():
        return path
    if root.is_dir():
        if (newest := newest_file(root, filename)) is not None:
            return str(newest)
        if (root / filename).is_file():
            return str(root / filename)
        raise MissingFileError(f"{option}: checkpoint folder {root.absolute()} holds no version_<N>/{filename} yet; "
                               f"train that run first{trained_by(path)} or give a .ckpt file")
    folder = str(root.parent) if root.suffix == ".ckpt" else path
    raise MissingFileError(f"{option}: {root.absolute()} does not exist; train that run first{trained_by(folder)}, "
                           "or fix the path (a checkpoint folder stands for its newest version's best.ckpt)")


DIRPATH = re.compile(r"^\s+dirpath:\s*[\"']?([^\"'#\s]+)[\"']?\s*(?:#.*)?$", re.MULTILINE)


def trained_by(folder: str) -> str:
    """`` (python main.py fit --config X)`` for the config in ``configs/`` whose ``checkpoint.dirpath`` is
    ``folder`` (a ``{dataset}``/``{distiller}`` in it matching any name), else the empty string."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    wanted = Path(folder).as_posix().rstrip("/")
    for config in sorted(configs.glob("*.yaml")):
        for dirpath in DIRPATH.findall(config.read_text()):
            pattern = re.sub(r"\\\{(dataset|distiller)\\\}", "[^/]+", re.escape(dirpath.rstrip("/")))
            if re.fullmatch(pattern, wanted):
                return f" (python main.py fit --config configs/{config.name})"
    return ""
