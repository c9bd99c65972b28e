"""Write tiny homogeneous OGB folders in the official raw layout (arxiv- and proteins-like)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _csv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, header=False, index=False, compression="gzip")


def write_homogeneous_ogb(root: Path, name: str, num_nodes: int = 60, seed: int = 0) -> dict:
    """``ogbn-arxiv`` (features, 40 classes, years, time split) or ``ogbn-proteins`` (edge features, 112 tasks)."""
    rng = np.random.default_rng(seed)
    folder = root / name.replace("-", "_")
    edges = rng.integers(0, num_nodes, (3 * num_nodes, 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    raw = folder / "raw"
    _csv(raw / "edge.csv.gz", edges)
    _csv(raw / "num-node-list.csv.gz", [[num_nodes]])
    _csv(raw / "num-edge-list.csv.gz", [[len(edges)]])
    if name == "ogbn-arxiv":
        labels = rng.integers(0, 40, (num_nodes, 1))
        _csv(raw / "node-feat.csv.gz", rng.standard_normal((num_nodes, 8)).astype(np.float32))
        _csv(raw / "node_year.csv.gz", rng.integers(2010, 2021, (num_nodes, 1)))
        split = "time"
    else:
        labels = rng.integers(0, 2, (num_nodes, 112))
        _csv(raw / "edge-feat.csv.gz", rng.random((len(edges), 8)).astype(np.float32))
        _csv(raw / "node_species.csv.gz", np.full((num_nodes, 1), 3702))
        split = "species"
    _csv(raw / "node-label.csv.gz", labels)
    order = rng.permutation(num_nodes)
    parts = {"train": order[: num_nodes // 2], "valid": order[num_nodes // 2: 3 * num_nodes // 4], "test": order[3 * num_nodes // 4:]}
    for part, ids in parts.items():
        _csv(folder / "split" / split / f"{part}.csv.gz", ids[:, None])
    (folder / "RELEASE_v1.txt").write_text("tiny test folder\n")
    return {"edges": edges, "labels": labels, "split": parts}
