"""Tiny generated graphs shared by the graph tests (seconds, not minutes)."""
from __future__ import annotations

from graphkd.synthetic_mag import SyntheticMAGConfig

TINY_MAG = SyntheticMAGConfig(num_papers=300, num_authors=150, num_institutions=8, num_fields=24, num_classes=4,
                              feature_dim=16, citations_per_paper=4, seed=1)
