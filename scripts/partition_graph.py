"""Cut a node-classification dataset into METIS partitions for PyG's distributed engine (one per machine).

    python scripts/partition_graph.py --config configs/abkd_mag.yaml --num-parts 4 --out data/partitions/ogbn_mag_4

The dataset is the ``data`` section of a ``main.py`` config (any ``datamodules.graph.NodeDataModule``:
real or generated ogbn-mag, homogeneous or heterogeneous, arxiv, products, Planetoid). PyG's
``Partitioner`` writes its layout; labels, per-partition split seeds and the dataset facts are added
(``datamodules/partitioned.py``), and ``configs/abkd_mag_partitioned.yaml`` trains on the result.
Needs METIS: ``make setup-sampling`` installs pyg-lib (or torch-sparse with METIS).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb would otherwise ask PyPI for a newer version

from jsonargparse import ArgumentParser  # noqa: E402

from datamodules.graph import DatasetNotFoundError, NodeDataModule  # noqa: E402
from datamodules.partitioned import PartitionError, write_partitions  # noqa: E402


def datamodule_from_config(path: Path) -> NodeDataModule:
    """Instantiate the ``data`` section (``class_path`` + ``init_args``) of a ``main.py`` YAML config."""
    config = yaml.safe_load(path.read_text()) or {}
    if "data" not in config:
        raise ValueError(f"{path} has no `data:` section; pass a main.py config of a graph experiment")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(NodeDataModule, "data")
    try:
        parsed = parser.parse_object({"data": config["data"]})
    except Exception as error:  # jsonargparse reports unknown classes and arguments with its own types
        raise ValueError(f"{path}: `data` must be a datamodules.graph.NodeDataModule subclass with valid "
                         f"init_args ({error})") from error
    return parser.instantiate_classes(parsed).data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="main.py YAML whose `data` section is partitioned")
    parser.add_argument("--num-parts", required=True, type=int, help="partitions = machines (DDP processes) to train on")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    parser.add_argument("--recursive", action="store_true", help="METIS recursive bisection instead of k-way")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # PyG's Partitioner logs each part

    try:
        datamodule = datamodule_from_config(args.config)
        start = time.perf_counter()
        graph = datamodule.graph
        logging.getLogger(__name__).info("loaded %s in %.1f s: %s", datamodule.graph_info.dataset, time.perf_counter() - start, graph)
        start = time.perf_counter()
        info = write_partitions(graph, datamodule.graph_info, datamodule.num_classes, args.out, args.num_parts,
                                args.recursive)
    except (DatasetNotFoundError, FileExistsError, ImportError, PartitionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(f"wrote {args.num_parts} partitions to {args.out} in {seconds:.1f} s; edge cut {info['edge_cut']:.3f}")
    for split, sizes in info["split_sizes"].items():
        print(f"  {split} seeds per partition: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
