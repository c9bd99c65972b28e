"""What the face pipeline is built from: its asset files, the face model, and the detection glue.

* :class:`AssetPaths` and :func:`load_face_model`: the weights and face models it reads;
* :func:`regress_landmarks`: one photo -> FaceBoxes detection -> 3DDFA_V2 landmarks of the best face
  (the official demo's single crop from the detector box by default).

The steps after the landmarks are ``reconstruction`` (fit + texture) and ``render`` (re-render +
score, turntable); the photo -> files job that chains them is ``app.photo_to_mesh``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor

from facetex.face3d.detector import FaceDetector
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.regressor import FaceRegression, FaceRegressor

FaceModelName = Literal["sfm", "bfm"]
CropPolicy = Literal["box", "landmark"]


@dataclass
class AssetPaths:
    """The files the photo pipeline reads (see ``../shared/assets/README.md`` for their public sources)."""

    detector: Path  # FaceBoxesProd.pth
    regressor: Path  # 3DDFA_V2 mb05_120x120.pth
    param_stats: Path  # param_mean_std_62d_120x120.pkl
    landmark_bases: Path  # bfm_noneck_mean.npz (u_base, w_shp_base, w_exp_base; also the BFM mean mesh)
    sfm: Path  # sfm_3448.npz
    bfm_uv: Path  # BFM_UV.mat
    bfm_indices: Path  # indices.npy

    @classmethod
    def from_folder(cls, root: str | Path) -> AssetPaths:
        """The layout of the shared assets folder: ``3ddfa_v2/``, ``bfm/``, ``sfm/``."""
        root = Path(root)
        paths = cls(
            detector=root / "3ddfa_v2" / "FaceBoxesProd.pth",
            regressor=root / "3ddfa_v2" / "mb05_120x120.pth",
            param_stats=root / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl",
            landmark_bases=root / "bfm" / "bfm_noneck_mean.npz",
            sfm=root / "sfm" / "sfm_3448.npz",
            bfm_uv=root / "bfm" / "BFM_UV.mat",
            bfm_indices=root / "bfm" / "indices.npy",
        )
        missing = [str(path) for path in vars(paths).values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"asset files missing under {root}: {missing}; point --assets at a folder laid out like "
                "shared/assets (3ddfa_v2/, bfm/, sfm/), see its README.md for where each file comes from"
            )
        return paths


def load_face_model(assets: AssetPaths, name: FaceModelName = "sfm") -> MorphableModel:
    """The Surrey Face Model (``"sfm"``, 63 shape + 6 expression modes) or the BFM mean face (``"bfm"``, pose only)."""
    if name == "sfm":
        return MorphableModel.from_sfm(assets.sfm)
    if name == "bfm":
        return MorphableModel.from_bfm_mean(assets.landmark_bases, assets.bfm_uv, assets.bfm_indices)
    raise ValueError(f"face model must be 'sfm' or 'bfm', got {name!r}")


def regress_landmarks(
    image: Tensor, detector: FaceDetector, regressor: FaceRegressor, crop_policy: CropPolicy = "box"
) -> FaceRegression:
    """68 landmarks and pose of the most confident face in ``image`` ``(3, H, W)`` (raises ``NoFaceError`` if none).

    ``crop_policy``: ``"box"`` crops once from the detector box (3DDFA_V2's image demo, so the numbers are
    the official ones); ``"landmark"`` crops again around those landmarks and regresses once more (its
    video demo's tracking crop), which moves pose by a few degrees (see docs/face3d.md).
    """
    if crop_policy not in ("box", "landmark"):
        raise ValueError(f"crop_policy must be 'box' or 'landmark', got {crop_policy!r}")
    boxes = detector.detect_faces(image)
    return regressor.from_boxes(image, boxes[:1], refine=crop_policy == "landmark")
