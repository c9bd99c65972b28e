"""Tiny generated graphs shared by the graph tests (seconds, not minutes), and real Planetoid files in place."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch_geometric.typing

from graphkd.synthetic_mag import SyntheticMAGConfig

TINY_MAG = SyntheticMAGConfig(num_papers=300, num_authors=150, num_institutions=8, num_fields=24, num_classes=4,
                              feature_dim=16, citations_per_paper=4, seed=1)


def require_neighbor_sampler() -> None:
    """Skip the calling test where PyG's ``NeighborLoader`` has no sampler (neither pyg-lib nor torch-sparse)."""
    if not (torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE):
        pytest.skip("NeighborLoader needs pyg-lib or torch-sparse: run `make setup-sampling`")


def copy_planetoid(shared_assets: Path, root: Path, name: str) -> Path:
    """The shared raw files of Planetoid graph ``name`` copied into ``root/<name>/raw`` (the loaders' layout)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    for file in (shared_assets / "graphs" / "planetoid").glob(f"ind.{name.lower()}.*"):
        shutil.copy(file, raw)
    return root
