"""The one checkpoint policy of every ``main.py fit``: ``best.ckpt`` and ``last.ckpt`` in a new version folder.

A config names only the folder and what "best" means (``checkpoint: {dirpath: checkpoints/<run>, monitor: val/acc,
mode: max}``); each run then writes ``<dirpath>/version_<N>/`` with the next free ``N``, so a rerun never
replaces an earlier run's checkpoints. ``fit --ckpt_path last`` continues the newest version instead (a resumed
run is the same run). Wherever a checkpoint file is expected (``--ckpt_path``, a ``teacher_checkpoint``) a
checkpoint folder may be given: it stands for its newest version's ``best.ckpt``.
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
    """

    dirpath: str | None = None
    monitor: str = "val/acc"
    mode: Literal["max", "min"] = "max"

    def run_folder(self, resume: bool) -> Path:
        """This run's ``dirpath/version_<N>``: the newest one when ``resume``, else the next free one."""
        root = Path(str(self.dirpath))
        versions = version_numbers(root)
        if resume and versions:
            return root / f"version_{versions[-1]}"
        return root / f"version_{versions[-1] + 1 if versions else 0}"

    def callbacks(self, folder: Path) -> list[Any]:
        """One :class:`~callbacks.best_and_last.BestAndLastCheckpoint`: ``best.ckpt`` by ``monitor`` and
        ``last.ckpt`` at every epoch end (``--ckpt_path last``), each epoch's state written once (``last.ckpt``
        is a relative link to ``best.ckpt`` when the epoch is the best so far), in a background thread while the
        next epoch trains (landed before its first optimiser step and before ``fit`` returns)."""
        from callbacks.best_and_last import BestAndLastCheckpoint

        return [BestAndLastCheckpoint(folder, monitor=self.monitor, mode=self.mode)]


def version_numbers(root: Path) -> list[int]:
    """The ``N`` of every ``root/version_<N>`` folder, ascending."""
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := VERSION.fullmatch(p.name)))


def resolve_checkpoint(option: str, path: str, filename: str = "best.ckpt") -> str:
    """``path`` itself when it is a file; a folder gives its newest ``version_<N>/<filename>``.

    A folder without versions but with ``<filename>`` directly inside (the layout before versioning) gives that.
    Raises:
        MissingFileError: nothing at ``path``, or a folder that holds no such checkpoint yet (``option`` names
            the setting in the message).
    """
    root = Path(path)
    if root.is_file():
        return path
    if root.is_dir():
        for number in reversed(version_numbers(root)):
            if (root / f"version_{number}" / filename).is_file():
                return str(root / f"version_{number}" / filename)
        if (root / filename).is_file():
            return str(root / filename)
        raise MissingFileError(f"{option}: checkpoint folder {path} holds no version_<N>/{filename} yet; "
                               f"train that run first{trained_by(path)} or give a .ckpt file")
    folder = str(root.parent) if root.suffix == ".ckpt" else path
    raise MissingFileError(f"{option}: {path} does not exist; train that run first{trained_by(folder)}, "
                           "or fix the path (a checkpoint folder stands for its newest version's best.ckpt)")


def trained_by(folder: str) -> str:
    """`` (python main.py fit --config X)`` for the config in ``configs/`` whose ``checkpoint.dirpath`` is
    ``folder``, else the empty string."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    pattern = re.compile(rf"^\s+dirpath:\s*{re.escape(Path(folder).as_posix().rstrip('/'))}/?\s*$", re.MULTILINE)
    for config in sorted(configs.glob("*.yaml")):
        if pattern.search(config.read_text()):
            return f" (python main.py fit --config configs/{config.name})"
    return ""
