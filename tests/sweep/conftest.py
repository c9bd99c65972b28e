"""A tiny experiment over the generated MAG graph: cells that fit in seconds."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from tests.graph_fixtures import TINY_MAG


def write_experiment(folder: Path, out: str = "out", grid: dict | None = None, **keys) -> Path:
    """``folder/experiment.yaml`` over ``folder/base.yaml`` (a 3-epoch GCN on the tiny MAG paper graph)."""
    base = {
        "seed_everything": 0,
        "checkpoint": {"dirpath": str(folder / "unused")},
        "trainer": {"max_epochs": 3, "log_every_n_steps": 1, "num_sanity_val_steps": 0},
        "model": {"class_path": "lightning_modules.node_classifier.NodeClassifier",
                  "init_args": {"arch": "gcn", "hidden_channels": 8, "num_layers": 2}},
        "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                 "init_args": {"root": str(folder / "mag"), "hetero": False, "synthetic": asdict(TINY_MAG)}},
    }
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"base": str(folder / "base.yaml"), "out": str(folder / out),
            "grid": grid or {"width": {"key": "model.init_args.hidden_channels", "values": [8, 16]}}, **keys}
    path = folder / f"{out}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def experiment_file(tmp_path: Path) -> Path:
    return write_experiment(tmp_path)
