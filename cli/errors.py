"""One line ``error: <what is wrong and how to fix it>`` for an error a user caused, or None for a bug.

A user's error is a :class:`foundation.errors.InputError` anywhere in the exception's cause chain (jsonargparse
wraps the ones raised while it instantiates the model and datamodule in a "Union subtypes" error), a missing or
unwritable file (``FileNotFoundError``, ``PermissionError``, ... name the path), a full file system (named with
its folder and the space left), a plain ``ValueError`` a class raised on a config value while jsonargparse
instantiated it, Lightning's ``MisconfigurationException`` (its name for a setting it refuses), a checkpoint whose
weights do not load into the model, or a jsonargparse parse error (unknown key, wrong type, a class_path that does
not import: the innermost one, with the nearest class of its module), reduced to its innermost reason with the
nearest valid key for a typo.
"""
from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import re
from argparse import ArgumentError
from collections.abc import Iterable, Iterator
from pathlib import Path

from foundation.errors import InputError
from foundation.files import NO_SPACE, write_failure

FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
UNION_FAILED = "Does not validate against any of the Union subtypes"
PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
UNKNOWN_KEY = re.compile(r"(?:Option|Key) '([^']+)' is not (?:accepted|expected)")
UNRECOGNIZED = re.compile(r"Unrecognized arguments: (\S+)", re.IGNORECASE)
CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
EXPECTED_TYPE = re.compile(r"Expected a <class '([^']+)'>\. Got value: (.*)")
IMPORT_FAILED = re.compile(r"No module named '([^']+)'|has no attribute '([^']+)'")
MISSING_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
GOT_VALUE = re.compile(r"Got value: ([\w.]+)")
STATE_DICT = "Error(s) in loading state_dict for"
MISCONFIGURED = "MisconfigurationException"


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
        if isinstance(link, InputError):
            return one_line(str(link))
    for link in chain:
        if isinstance(link, OSError) and link.errno in NO_SPACE | {errno.EROFS}:  # a write's (EACCES may be a read's)
            if notes := getattr(link, "__notes__", None):  # the folder, added by whoever knew it
                return one_line(str(notes[-1]))
            if link.filename and (full := write_failure(
                    link, Path(str(link.filename)).parent, Path(str(link.filename)).name)) is not None:
                return one_line(str(full))
            return one_line(f"{link.strerror} while writing the run's outputs (logs, checkpoints or the files it "
                            "writes); free space or choose other output folders")
        if isinstance(link, FILE_ERRORS):
            return one_line(str(link))
        if type(link).__name__ == MISCONFIGURED:
            return one_line(str(link))
        if isinstance(link, RuntimeError) and str(link).startswith(STATE_DICT):
            return one_line(f"the checkpoint's weights do not fit this model: {str(link)[:400]}; run it with the "
                            "model options it was trained with")
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
    if (failed := failed_import(messages)) is not None:
        return failed
    if (owner := CLASS_PATH.search(text)) is not None and IMPORT_FAILED.search(text):
        family = {"data": "datamodules.", "model": "lightning_modules."}.get(key.group(1) if key else "", "")
        listed = sorted(c for c in classes if c.startswith(family))
        hint = f"use one of {', '.join(listed)}" if listed else "check the module and class name"
        return f"{where}class_path {owner.group(1)!r} does not import; {hint}"
    if (expected := EXPECTED_TYPE.search(text)) is not None:
        return f"{where}expected {expected.group(1)}, got {expected.group(2).strip()!r}"
    innermost = next((m for m in reversed(messages) if m.strip()), str(error))
    return one_line(f"{where}{innermost}")


def failed_import(messages: list[str]) -> str | None:
    """The message for a class given inside another class's options (``--model.init_args.distiller X``) that does not
    import: it names that class and option, not the outer class that could not be built because of it."""
    text = "\n".join(messages)
    missing, module = MISSING_ATTRIBUTE.search(text), MISSING_MODULE.search(text)
    keys = list(dict.fromkeys(PARSER_KEY.findall(text)))
    if (missing is None and module is None) or len(keys) < 2:
        return None
    option = ".init_args.".join(keys)
    if missing is not None:
        path = f"{missing.group(1)}.{missing.group(2)}"
        try:
            names = [name for name in vars(importlib.import_module(missing.group(1))) if not name.startswith("_")]
        except ImportError:
            names = []
        hint = nearest(missing.group(2), names).replace("(did you mean ", f"(did you mean {missing.group(1)}.")
        return f"{option}: {path!r} does not import: module {missing.group(1)!r} has no {missing.group(2)!r}{hint}"
    assert module is not None
    given = GOT_VALUE.search(text)
    shown = f"{given.group(1)!r}" if given else "the class"
    return f"{option}: {shown} does not import: no module named {module.group(1)!r}; check the module and class name"
