"""The LightningModules and LightningDataModules of this project, one line each, read from the source.

``--help`` lists them without importing them (importing all would pull in the face stack and the GAN code for
every command): each file of ``lightning_modules/`` and ``datamodules/`` is parsed, and a class counts when it
derives, directly or through another class of the same package, from ``LightningModule``/``LightningDataModule``.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"lightning_modules": "LightningModule", "datamodules": "LightningDataModule"}


def base_name(node: ast.expr) -> str:
    """``L.LightningModule`` -> ``LightningModule``; ``NodeClassifier`` -> itself."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


@cache
def classes(package: str) -> dict[str, str]:
    """``{class path: first docstring line}`` of the ``package`` classes that derive from its Lightning base (read once
    per process: every parser's ``--help`` lists them)."""
    found: dict[str, tuple[str, list[str], str]] = {}
    for source in sorted((ROOT / package).glob("*.py")):
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                summary = (ast.get_docstring(node) or "").strip().split("\n")[0]
                found[node.name] = (f"{package}.{source.stem}.{node.name}", [base_name(b) for b in node.bases], summary)
    known = {FAMILIES[package]}
    while True:
        grown = known | {name for name, (_, bases, _) in found.items() if known & set(bases)}
        if grown == known:
            break
        known = grown
    return {path: summary for name, (path, _, summary) in sorted(found.items(), key=lambda kv: kv[1][0])
            if name in known and name != FAMILIES[package]}


@cache
def catalog_text() -> str:
    """The ``--help`` epilog: the model and data classes, one per line with their summary."""
    lines = []
    for package, flag in (("lightning_modules", "--model"), ("datamodules", "--data")):
        lines.append(f"{flag} classes (a config's class_path, or {flag} CLASS_PATH; {flag}.help CLASS_PATH "
                     "lists its options):")
        lines += [f"  {path:<52} {summary}" for path, summary in classes(package).items()]
    return "\n".join(lines)
