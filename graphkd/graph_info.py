"""The facts a node-classification model is built from, as one typed value (the datamodule's ``graph_info``).

``main.py`` links a datamodule's :class:`GraphInfo` into the model. Checkpoints (read with
``weights_only=True``) and ``partition_info.json`` hold its plain form, :meth:`GraphInfo.as_dict`,
which :meth:`GraphInfo.from_dict` reads back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

EdgeType = tuple[str, str, str]


@dataclass(frozen=True)
class HeteroSchema:
    """The node and edge types of a heterogeneous graph (what an R-GCN is built from).

    Attributes:
        node_types: every node type.
        edge_types: every ``(src, relation, dst)`` type.
        featureless_num_nodes: node count of each type without features (rows of its embedding table).
        target: the node type that is classified.
    """

    node_types: tuple[str, ...]
    edge_types: tuple[EdgeType, ...]
    featureless_num_nodes: dict[str, int]
    target: str

    def __post_init__(self) -> None:  # lists (YAML, JSON) become the tuples equality and hashing expect
        object.__setattr__(self, "node_types", tuple(self.node_types))
        object.__setattr__(self, "edge_types", tuple(tuple(e) for e in self.edge_types))
        object.__setattr__(self, "featureless_num_nodes", {t: int(n) for t, n in self.featureless_num_nodes.items()})


class GraphInfo(NamedTuple):
    """What a node-classification dataset is, as far as a model needs to know.

    A ``NamedTuple`` (immutable, compared by value) rather than a dataclass: LightningCLI expands a
    dataclass parameter into sub-arguments that a user must give, while this one is only ever linked
    from the datamodule (``main.py``).

    Attributes:
        dataset: the dataset's name (e.g. ``ogbn-mag``, ``Cora``); picks the evaluator.
        task: ``multiclass`` (one label per node) or ``multilabel`` (one binary task per class).
        num_classes: classes, or tasks of a multi-label dataset.
        hetero: the schema of a heterogeneous graph; None for a homogeneous one.
    """

    dataset: str
    task: str
    num_classes: int
    hetero: HeteroSchema | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, dicts and strings: what checkpoints and JSON files store."""
        hetero = None
        if self.hetero is not None:
            hetero = {**asdict(self.hetero), "node_types": list(self.hetero.node_types),
                      "edge_types": [list(e) for e in self.hetero.edge_types]}
        return {**self._asdict(), "hetero": hetero}

    @classmethod
    def from_dict(cls, plain: dict[str, Any]) -> "GraphInfo":
        """The inverse of :meth:`as_dict` (also reads the dicts of checkpoints written before this type existed)."""
        hetero = plain.get("hetero")
        return cls(dataset=plain["dataset"], task=plain["task"], num_classes=int(plain["num_classes"]),
                   hetero=HeteroSchema(**hetero) if hetero else None)
