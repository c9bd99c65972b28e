"""Shared fixtures: where the real assets are, and a skip when they are absent."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb would otherwise ask PyPI for a newer version

import pytest
import torch

# One intra-op thread: the suite's small tensors run several times faster than with two threads
# fighting over 2 cores, and timings/results do not depend on the machine's core count.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = Path(os.environ.get("SHARED_ASSETS", REPO_ROOT.parent / "shared" / "assets"))


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """``../shared/assets`` (or ``$SHARED_ASSETS``); skips the test when it is absent."""
    if not (SHARED_ASSETS / "README.md").is_file():
        pytest.skip(f"real assets not found at {SHARED_ASSETS} (set SHARED_ASSETS to the shared/assets folder)")
    return SHARED_ASSETS
