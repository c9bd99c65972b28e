"""What the face pipeline is built from: its asset files, the face model, and the detection glue.

* :class:`AssetPaths` and :func:`load_face_model`: the weights and face models it reads;
* :func:`regress_landmarks`: one photo -> FaceBoxes detection -> 3DDFA_V2 landmarks of the best face
  (the official demo's single crop from the detector box by default); :func:`regress_face` also returns
  which face that was (:class:`FaceChoice`: its box, score and how many faces were found).

The steps after the landmarks are ``reconstruction`` (fit + texture) and ``render`` (re-render +
score, turntable); the photo -> files job that chains them is ``app.photo_to_mesh``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


@dataclass(frozen=True)
class FaceChoice:
    """The face the pipeline used: the most confident of the ``count`` the detector found.

    box: ``(x1, y1, x2, y2)`` pixels in the photo; score: its detector confidence in (0, 1].
    """

    box: tuple[float, float, float, float]
    score: float
    count: int

    @classmethod
    def from_boxes(cls, boxes: Tensor) -> FaceChoice:
        """The first row of ``detect_faces``'s ``(N, 5)`` ``[x1, y1, x2, y2, score]`` (highest score first)."""
        x1, y1, x2, y2, score = (float(value) for value in boxes[0])
        return cls((x1, y1, x2, y2), score, int(boxes.shape[0]))

    def metrics(self) -> dict[str, Any]:
        """JSON-ready: ``{"faces_found", "used_box", "used_score", "note"}`` (``note``: :meth:`note`)."""
        return {"faces_found": self.count, "used_box": [round(v, 1) for v in self.box],
                "used_score": round(self.score, 4), "note": self.note()}

    def note(self) -> str | None:
        """A sentence saying which face was used when the photo holds several; ``None`` for one face."""
        if self.count == 1:
            return None
        box = ", ".join(f"{v:.0f}" for v in self.box)
        return (f"{self.count} faces found; used the most confident one (score {self.score:.3f}, box x1,y1,x2,y2 = "
                f"{box} px); crop the photo to choose another")


def regress_face(
    image: Tensor, detector: FaceDetector, regressor: FaceRegressor, crop_policy: CropPolicy = "box"
) -> tuple[FaceRegression, FaceChoice]:
    """68 landmarks and pose of the most confident face in ``image`` ``(3, H, W)``, and which face it was.

    Raises ``NoFaceError`` if there is none. ``crop_policy``: ``"box"`` crops once from the detector box
    (3DDFA_V2's image demo, so the numbers are the official ones); ``"landmark"`` crops again around those
    landmarks and regresses once more (its video demo's tracking crop), which moves pose by a few degrees
    (see docs/face3d.md).
    """
    if crop_policy not in ("box", "landmark"):
        raise ValueError(f"crop_policy must be 'box' or 'landmark', got {crop_policy!r}")
    boxes = detector.detect_faces(image)
    return regressor.from_boxes(image, boxes[:1], refine=crop_policy == "landmark"), FaceChoice.from_boxes(boxes)


def regress_landmarks(
    image: Tensor, detector: FaceDetector, regressor: FaceRegressor, crop_policy: CropPolicy = "box"
) -> FaceRegression:
    """:func:`regress_face` without the choice: the landmarks and pose of the most confident face."""
    return regress_face(image, detector, regressor, crop_policy)[0]
