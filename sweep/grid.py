"""An experiment file and the cells of its grid.

An experiment is a YAML file::

    base: configs/deep_gcn_student.yaml      # the main.py config every cell starts from
    out: outputs/abkd_deep_gcn               # cell run folders: <out>/<label>/<label>/...
    needs: [experiments/deep_gcn_teachers.yaml]   # experiments run (or found finished) first
    set: {trainer.max_epochs: 500}           # overrides of every cell (dotted keys)
    grid:                                    # axes, outermost first; the cells are their product
      dataset:                               # named values: label -> overrides
        Cora: {data.init_args.dataset_args.name: Cora}
      compression: {key: model.init_args.compression, values: [8, 30]}   # one key, several values
      seed: {key: seed_everything, values: [0, 1, 2]}
    exclude:                                 # cells left out: all of a rule's axes match
      - {dataset: Cora, compression: 30}
    report: {table: dataset, rows: method, pairs: [[ABKD, logit KD]]}    # see sweep.report

A named value's overrides are dotted keys into the config (``model.init_args.distiller``) whose values replace
what is there (a mapping replaces a mapping whole, so a swapped ``class_path`` never inherits the old
``init_args``). Relative paths in ``base``, ``out`` and ``needs`` are taken from the working directory, as
``main.py``'s are.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from foundation.errors import InputError

SPEC_KEYS = {"base", "out", "needs", "set", "grid", "exclude", "report"}
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExperimentError(InputError, ValueError):
    """An experiment file that cannot be run as written; the message names the key and the fix."""


@dataclass(frozen=True)
class Axis:
    """One grid axis: its name and, per value, a label and the overrides that value sets."""

    name: str
    values: tuple[tuple[str, dict[str, Any]], ...]

    @classmethod
    def parse(cls, name: str, spec: Any, source: Path) -> Axis:
        """``{key: K, values: [...]}`` (labels ``<name>_<value>``) or ``{label: {dotted key: value}}``."""
        if isinstance(spec, dict) and set(spec) == {"key", "values"}:
            if not isinstance(spec["values"], list) or not spec["values"]:
                raise ExperimentError(f"{source}: grid.{name}.values must be a non-empty list")
            return cls(name, tuple((f"{name}_{value}", {str(spec["key"]): value}) for value in spec["values"]))
        if not isinstance(spec, dict) or not spec or not all(isinstance(v, dict) for v in spec.values()):
            raise ExperimentError(f"{source}: grid.{name} must be {{key: <dotted key>, values: [...]}} or a mapping "
                                  "of labels to overrides ({label: {dotted.key: value}})")
        return cls(name, tuple((str(label), dict(overrides)) for label, overrides in spec.items()))

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.values]


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its label per axis, its folder and the overrides it applies (in axis order)."""

    labels: dict[str, str]
    folder: Path
    overrides: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return "/".join(self.labels.values())


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring)."""

    path: Path
    base: Path
    out: Path
    grid: list[Axis]
    needs: list[Path] = field(default_factory=list)
    common: dict[str, Any] = field(default_factory=dict)
    exclude: list[dict[str, list[str]]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        source = Path(path)
        if not source.is_file():
            raise ExperimentError(f"experiment file {source} does not exist; see experiments/ for examples")
        try:
            raw = yaml.safe_load(source.read_text()) or {}
        except yaml.YAMLError as error:
            raise ExperimentError(f"{source} is not valid YAML: {' '.join(str(error).split())}") from error
        if not isinstance(raw, dict):
            raise ExperimentError(f"{source} must be a mapping with the keys {sorted(SPEC_KEYS)}")
        if unknown := sorted(set(raw) - SPEC_KEYS):
            raise ExperimentError(f"{source}: unknown keys {unknown}; an experiment has {sorted(SPEC_KEYS)}")
        if missing := [key for key in ("base", "out", "grid") if key not in raw]:
            raise ExperimentError(f"{source}: missing {missing} (base: a main.py config, out: a folder, grid: axes)")
        if not isinstance(raw["grid"], dict) or not raw["grid"]:
            raise ExperimentError(f"{source}: grid must map axis names to their values")
        grid = [Axis.parse(str(name), spec, source) for name, spec in raw["grid"].items()]
        experiment = cls(source, Path(raw["base"]), Path(raw["out"]), grid, [Path(p) for p in raw.get("needs") or []],
                         dict(raw.get("set") or {}), [normalise_rule(rule, grid, source) for rule in raw.get("exclude") or []],
                         dict(raw.get("report") or {}))
        if not experiment.base.is_file():
            raise ExperimentError(f"{source}: base config {experiment.base} does not exist")
        return experiment

    def cells(self) -> list[Cell]:
        """Every cell of the grid not excluded, outermost axis first (the last axis, e.g. the seed, varies fastest)."""
        cells = []
        for choice in itertools.product(*(axis.values for axis in self.grid)):
            labels = {axis.name: label for axis, (label, _) in zip(self.grid, choice)}
            if any(all(labels[name] in allowed for name, allowed in rule.items()) for rule in self.exclude):
                continue
            folder = self.out.joinpath(*(UNSAFE.sub("_", label) for label in labels.values()))
            cells.append(Cell(labels, folder, tuple(overrides for _, overrides in choice)))
        return cells

    def config(self, cell: Cell) -> dict[str, Any]:
        """The cell's whole ``main.py`` config: the base, ``set``, then the cell's overrides."""
        config = yaml.safe_load(self.base.read_text()) or {}
        for overrides in (self.common, *cell.overrides):
            for key, value in overrides.items():
                assign(config, key, copy.deepcopy(value))
        return config


def normalise_rule(rule: Any, grid: list[Axis], source: Path) -> dict[str, list[str]]:
    """An ``exclude`` rule as ``{axis: [labels]}``, checked against the grid (a typo would exclude nothing)."""
    axes = {axis.name: axis for axis in grid}
    if not isinstance(rule, dict) or not rule:
        raise ExperimentError(f"{source}: each exclude rule maps axes to a label or a list of labels, got {rule!r}")
    normalised = {}
    for name, labels in rule.items():
        if name not in axes:
            raise ExperimentError(f"{source}: exclude names axis {name!r}; the axes are {list(axes)}")
        labels = [str(label) for label in (labels if isinstance(labels, list) else [labels])]
        if unknown := [label for label in labels if label not in axes[name].labels]:
            raise ExperimentError(f"{source}: exclude: {name} has no {unknown}; its labels are {axes[name].labels}")
        normalised[name] = labels
    return normalised


def assign(config: dict[str, Any], key: str, value: Any) -> None:
    """``config[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    *parents, last = key.split(".")
    node = config
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value
