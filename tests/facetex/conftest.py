"""Fixtures of the face tests: 3DDFA_V2's official regressor, loaded once from the real assets."""
from __future__ import annotations

from pathlib import Path

import pytest

from facetex.face3d.regressor import FaceRegressor


@pytest.fixture(scope="session")
def regressor(shared_assets: Path) -> FaceRegressor:
    """``mb05_120x120.pth`` with its parameter statistics and the no-neck BFM's landmark bases."""
    return FaceRegressor.from_files(
        shared_assets / "3ddfa_v2" / "mb05_120x120.pth",
        shared_assets / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl",
        shared_assets / "bfm" / "bfm_noneck_mean.npz",
    )
