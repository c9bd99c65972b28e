"""A small heterogeneous academic graph written in the exact ``ogbn-mag`` file layout.

No OGB dataset can be downloaded on an offline machine, so this writes a graph
that the real ``ogb`` loader (``PygNodePropPredDataset('ogbn-mag')``) reads
exactly as it reads the official release: the same folder names, the same
gzipped CSV files (relations, paper features, labels, years, the time split)
and the ``RELEASE_v2.txt`` marker.

The graph is built so that a GNN can learn it and a feature-only model cannot
learn it as well: each paper has a class; its 128-d feature is a weak class
centroid plus noise; it cites, is written by and is tagged with nodes that
mostly share its class (homophily). Papers of years < 2018 train, 2018
validates, 2019 tests, as in the real time split.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from foundation.files import staged_folder

FOLDER = "ogbn_mag"
RELEASE_FILE = "RELEASE_v2.txt"
MARKER_FILE = "SYNTHETIC.json"
TRIPLETS = [
    ("author", "affiliated_with", "institution"),
    ("author", "writes", "paper"),
    ("paper", "cites", "paper"),
    ("paper", "has_topic", "field_of_study"),
]
NODE_TYPES = ["author", "field_of_study", "institution", "paper"]


@dataclass
class SyntheticMAGConfig:
    """Size and difficulty of the generated graph.

    Args:
        num_papers: paper nodes (the classified type).
        num_authors: author nodes.
        num_institutions: institution nodes.
        num_fields: field-of-study nodes.
        num_classes: venues (labels).
        feature_dim: paper feature width (128 as in ogbn-mag).
        citations_per_paper: outgoing citations of each paper.
        authors_per_paper: authors of each paper.
        fields_per_paper: topics of each paper.
        homophily: probability that a citation/author/topic shares the paper's class.
        feature_signal: length of the class centroid relative to unit feature noise.
        seed: random seed; the same config writes the same files.
    """

    num_papers: int = 3000
    num_authors: int = 1500
    num_institutions: int = 40
    num_fields: int = 120
    num_classes: int = 8
    feature_dim: int = 128
    citations_per_paper: int = 6
    authors_per_paper: int = 3
    fields_per_paper: int = 3
    homophily: float = 0.35
    feature_signal: float = 0.5
    seed: int = 0


def _pick(rng: np.random.Generator, own: np.ndarray, pools: list[np.ndarray], count: int, homophily: float, size: int) -> np.ndarray:
    """For each item of class ``own[i]`` draw ``count`` ids: same-class pool w.p. homophily, else uniform."""
    n = len(own)
    same = rng.random((n, count)) < homophily
    uniform = rng.integers(0, size, (n, count))
    picks = uniform.copy()
    for c, pool in enumerate(pools):
        rows = own == c
        picks[rows] = np.where(same[rows], rng.choice(pool, (rows.sum(), count)), uniform[rows])
    return picks


def _write_csv(path: Path, rows: np.ndarray | list, header: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=header) if header else pd.DataFrame(rows)
    frame.to_csv(path, header=header is not None, index=False, compression="gzip")


def generate(config: SyntheticMAGConfig) -> dict:
    """Sample the graph in memory: counts, edges per triplet, features, labels, years."""
    rng = np.random.default_rng(config.seed)
    c = config.num_classes
    paper_class = rng.integers(0, c, config.num_papers)
    author_class = rng.integers(0, c, config.num_authors)
    field_class = np.arange(config.num_fields) % c
    institution_class = np.arange(config.num_institutions) % c

    def pools(classes: np.ndarray) -> list[np.ndarray]:
        return [np.flatnonzero(classes == k) if (classes == k).any() else np.arange(len(classes)) for k in range(c)]

    cites = _pick(rng, paper_class, pools(paper_class), config.citations_per_paper, config.homophily, config.num_papers)
    writes = _pick(rng, paper_class, pools(author_class), config.authors_per_paper, config.homophily, config.num_authors)
    topics = _pick(rng, paper_class, pools(field_class), config.fields_per_paper, config.homophily, config.num_fields)
    affiliation = _pick(rng, author_class, pools(institution_class), 1, config.homophily, config.num_institutions)

    papers = np.arange(config.num_papers)
    edges = {
        TRIPLETS[0]: np.stack([np.arange(config.num_authors), affiliation[:, 0]]),
        TRIPLETS[1]: np.unique(np.stack([writes.ravel(), np.repeat(papers, config.authors_per_paper)]), axis=1),
        TRIPLETS[2]: np.unique(np.stack([np.repeat(papers, config.citations_per_paper), cites.ravel()]), axis=1),
        TRIPLETS[3]: np.unique(np.stack([np.repeat(papers, config.fields_per_paper), topics.ravel()]), axis=1),
    }
    edges[TRIPLETS[2]] = edges[TRIPLETS[2]][:, edges[TRIPLETS[2]][0] != edges[TRIPLETS[2]][1]]

    centroids = rng.standard_normal((c, config.feature_dim))
    centroids *= config.feature_signal / np.linalg.norm(centroids, axis=1, keepdims=True) * np.sqrt(config.feature_dim) / 4
    features = centroids[paper_class] + rng.standard_normal((config.num_papers, config.feature_dim))
    years = rng.choice([2014, 2015, 2016, 2017, 2018, 2019], config.num_papers, p=[0.15, 0.15, 0.2, 0.3, 0.1, 0.1])
    return {
        "num_nodes": {"author": config.num_authors, "field_of_study": config.num_fields,
                      "institution": config.num_institutions, "paper": config.num_papers},
        "edges": edges,
        "features": features.astype(np.float32),
        "labels": paper_class,
        "years": years,
    }


def write_synthetic_mag(root: str | os.PathLike, config: SyntheticMAGConfig | None = None) -> Path:
    """Write ``root/ogbn_mag`` in the official layout and return that folder.

    The folder is assembled in a temporary sibling and renamed into place, so an
    interrupted run never leaves a half-written dataset that ``ogb`` would load; when
    another process (e.g. another DDP rank) put the same graph there first, its copy is kept.
    """
    config = config or SyntheticMAGConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / FOLDER
    if target.exists():
        raise FileExistsError(f"{target} already exists; delete it to generate a new synthetic graph")
    graph = generate(config)
    try:
        with staged_folder(target, replace=False) as staging:
            raw = staging / "raw"
            _write_csv(raw / "num-node-dict.csv.gz", [[graph["num_nodes"][t] for t in NODE_TYPES]], NODE_TYPES)
            _write_csv(raw / "triplet-type-list.csv.gz", [list(t) for t in TRIPLETS])
            for rel_id, triplet in enumerate(TRIPLETS):
                folder = raw / "relations" / "___".join(triplet)
                edge_index = graph["edges"][triplet]
                _write_csv(folder / "edge.csv.gz", edge_index.T)
                _write_csv(folder / "num-edge-list.csv.gz", [[edge_index.shape[1]]])
                _write_csv(folder / "edge_reltype.csv.gz", np.full((edge_index.shape[1], 1), rel_id))
            _write_csv(raw / "node-feat" / "paper" / "node-feat.csv.gz", graph["features"])
            _write_csv(raw / "node-feat" / "paper" / "node_year.csv.gz", graph["years"][:, None])
            _write_csv(raw / "node-label" / "paper" / "node-label.csv.gz", graph["labels"][:, None])
            has_label = [[t == "paper" for t in NODE_TYPES]]
            _write_csv(raw / "nodetype-has-label.csv.gz", has_label, NODE_TYPES)
            split = staging / "split" / "time"
            _write_csv(split / "nodetype-has-split.csv.gz", has_label, NODE_TYPES)
            years = graph["years"]
            for name, ids in (("train", years < 2018), ("valid", years == 2018), ("test", years == 2019)):
                _write_csv(split / "paper" / f"{name}.csv.gz", np.flatnonzero(ids)[:, None])
            (staging / RELEASE_FILE).write_text("ogbn-mag layout, synthetic graph written by graphkd.synthetic_mag\n")
            (staging / MARKER_FILE).write_text(json.dumps(asdict(config), indent=2))
    except OSError:  # the rename failed: fine when a concurrent writer (e.g. another DDP rank) put the same graph there
        if read_marker(target) != config:
            raise
    return target


def read_marker(folder: str | os.PathLike) -> SyntheticMAGConfig | None:
    """The generator config of a synthetic folder, or None for a real ogbn-mag download."""
    marker = Path(folder) / MARKER_FILE
    return SyntheticMAGConfig(**json.loads(marker.read_text())) if marker.is_file() else None
