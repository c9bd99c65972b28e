"""One line ``error: <what is wrong and how to fix it>`` for an error a user caused, or None for a bug.

A user's error is a :class:`foundation.errors.InputError` anywhere in the exception's cause chain (jsonargparse
wraps the ones raised while it instantiates the model and datamodule in a "Union subtypes" error), a missing or
unwritable file (``FileNotFoundError``, ``PermissionError``, ... name the path), a plain ``ValueError`` a class
raised on a config value while jsonargparse instantiated it, or a
jsonargparse parse error (unknown key, wrong type, unknown class_path), reduced to its innermost reason with the
nearest valid key for a typo.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
from argparse import ArgumentError
from collections.abc import Iterable, Iterator

from foundation.errors import InputError

FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
UNION_FAILED = "Does not validate against any of the Union subtypes"
PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
UNKNOWN_KEY = re.compile(r"(?:Option|Key) '([^']+)' is not (?:accepted|expected)")
UNRECOGNIZED = re.compile(r"Unrecognized arguments: (\S+)", re.IGNORECASE)
CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
EXPECTED_TYPE = re.compile(r"Expected a <class '([^']+)'>\. Got value: (.*)")
IMPORT_FAILED = re.compile(r"No module named '([^']+)'|has no attribute '([^']+)'")


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__  # type: ignore[assignment]


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def nearest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate to ``name``, else the empty string."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def init_arguments(class_path: str) -> list[str]:
    """The ``__init__`` parameter names of ``class_path`` and of its bases (jsonargparse follows ``**kwargs``)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):
        if "__init__" in vars(klass):
            names += [p for p in inspect.signature(vars(klass)["__init__"]).parameters if p not in ("self", "args", "kwargs")]
    return names


def explain(error: BaseException, parser_keys: Iterable[str] = (), classes: Iterable[str] = ()) -> str | None:
    """The message for ``error`` when it is the user's (see the module docstring), else None.

    Args:
        parser_keys: the dotted option names the parser accepts (``trainer.max_epochs``, ``ckpt_path``, ...),
            candidates for a mistyped top-level key.
        classes: the class paths ``--model``/``--data`` accept, listed when a class_path does not import.
    """
    chain = list(causes(error))
    for link in chain:
        if isinstance(link, (InputError, *FILE_ERRORS)):
            return one_line(str(link))
    if not any(isinstance(link, ArgumentError) for link in chain):
        for outer, inner in zip(chain, chain[1:]):
            if str(outer).startswith(UNION_FAILED) and type(inner) is ValueError:
                return one_line(str(inner))  # a class rejected a config value while jsonargparse instantiated it
        return None
    messages = [str(link) for link in chain]
    text = "\n".join(messages)
    key = PARSER_KEY.search(text)
    where = f"{key.group(1)}: " if key else ""
    if (unknown := UNKNOWN_KEY.search(text)) is not None:
        name = unknown.group(1).rpartition(".")[2]
        owner = CLASS_PATH.search(text)
        candidates = init_arguments(owner.group(1)) if owner else [k.rpartition(".")[2] for k in parser_keys]
        return f"{where}unknown option {unknown.group(1)!r}{nearest(name, candidates)}"
    if (unrecognized := UNRECOGNIZED.search(text)) is not None:
        name = unrecognized.group(1).lstrip("-").split("=")[0]
        return f"unknown option --{name}{nearest(name, parser_keys)}; see --help for the accepted ones"
    if (owner := CLASS_PATH.search(text)) is not None and IMPORT_FAILED.search(text):
        family = {"data": "datamodules.", "model": "lightning_modules."}.get(key.group(1) if key else "", "")
        listed = sorted(c for c in classes if c.startswith(family))
        hint = f"use one of {', '.join(listed)}" if listed else "check the module and class name"
        return f"{where}class_path {owner.group(1)!r} does not import; {hint}"
    if (expected := EXPECTED_TYPE.search(text)) is not None:
        return f"{where}expected {expected.group(1)}, got {expected.group(2).strip()!r}"
    innermost = next((m for m in reversed(messages) if m.strip()), str(error))
    return one_line(f"{where}{innermost}")
