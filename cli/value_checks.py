"""Values a library would refuse only once training starts, refused before any folder is made.

jsonargparse checks types; the ranges live in the libraries. An injected optimizer or learning-rate scheduler
(``model.init_args.optimizer: {class_path: torch.optim.Adam, init_args: {lr: -0.01}}``, LightningCLI's own
``--optimizer``/``--lr_scheduler``) is built once here on a one-element dummy parameter, so what its constructor
refuses (a negative learning rate, betas outside [0, 1), ...) is one line naming the option, before the model, the
logger or a checkpoint folder exists. The Trainer's own arguments are checked where it is built (``main.py``).
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from foundation.errors import InputError


class ValueCheckError(InputError, ValueError):
    """An option value the class it configures refuses."""


def class_nodes(config: Any, prefix: str = "") -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(option, class_path, init_args)`` of every ``class_path``/``init_args`` node in a parsed config."""
    items = vars(config).items() if hasattr(config, "__dict__") and not isinstance(config, dict) else (
        config.items() if isinstance(config, dict) else ())
    for key, value in items:
        option = f"{prefix}.{key}" if prefix else str(key)
        if key == "__path__":
            continue
        if hasattr(value, "get") and isinstance(value.get("class_path"), str):
            init_args = value.get("init_args")
            yield option, value["class_path"], dict(vars(init_args) if hasattr(init_args, "__dict__") else init_args or {})
        if hasattr(value, "__dict__") or isinstance(value, dict):
            yield from class_nodes(value, option)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from class_nodes(item, f"{option}[{index}]")


def imported(class_path: str) -> type | None:
    """The class ``class_path`` names, None if it does not import (jsonargparse reports that itself)."""
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def check_optimizers(config: Any) -> None:
    """Build every optimizer and learning-rate scheduler ``config`` configures on a dummy parameter.

    Raises:
        ValueCheckError: a constructor refused a value (its ``ValueError``); other failures (an argument only the
            model supplies) are left to the run.
    """
    for option, class_path, init_args in class_nodes(config):
        cls = imported(class_path)
        if cls is None or not issubclass(cls, (torch.optim.Optimizer, LRScheduler, ReduceLROnPlateau)):
            continue
        parameter = torch.nn.Parameter(torch.zeros(1))
        try:
            if issubclass(cls, torch.optim.Optimizer):
                cls([parameter], **init_args)
            else:
                cls(torch.optim.SGD([parameter], lr=0.1), **init_args)
        except ValueError as refused:
            raise ValueCheckError(f"{option}: {class_path} refuses its arguments: {refused}") from refused
        except TypeError:
            continue
