"""3DDFA_V2's regressor: a MobileNetV1 that reads a 120x120 face crop and outputs 62 3DMM parameters.

The 62 numbers (de-normalised as ``out * std + mean``) are a 3x4 affine pose ``P = [sR | t]``
(row-major), 40 BFM shape and 10 expression coefficients. Applied to BFM points ``v`` (model space:
x to the viewer's right, y up, z toward the viewer), ``P @ [v; 1]`` lands in the 120x120 crop with
3DDFA's conventions, and the official weights were trained so that 3DDFA_V2's ``recon_vers`` +
``similar_transform`` put it on the face: ``x -= 1``, ``y = 120 - y``, then x, y scaled by the
(unrounded) roi box's width / 120 and height / 120 plus its top-left corner, in 3DDFA_V2's pixel
coordinates (pixel centres on integers). In the project's screen space (centres at +0.5, y down,
depth growing away from the viewer) that is

    x = sx + (ex - sx) / 120 * ((P v)_x - 1) + 0.5,   y = sy + (ey - sy) / 120 * (120 - (P v)_y) + 0.5,
    depth = -(mean scale) (P v)_z

(3DDFA_V2's z is the same scaled z minus its minimum). Note that this is not the exact inverse of
the crop (``crop.crop_to_image``), which would sit ``0.5 * roi / 120 - 0.5`` px right of and below
it; the parameters mean what the official mapping says. Because the y flip happens after ``P``,
``R`` is a rotation of our model space in our convention, and ``camera.rotation_to_euler(R)`` gives
yaw, pitch and roll directly. 3DDFA_V2's ``matrix2angle`` returns ``yaw = asin(R[2, 0])``, the
opposite sign of ours (positive yaw turns the nose to the image's right), and the same pitch and roll.

The network is fed the crop in BGR order: 3DDFA_V2 read images with OpenCV and trained on them so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from facetex.face3d.camera import pose_to_scale_rotation, rotation_to_euler
from facetex.face3d.crop import (
    CROP_SIZE,
    crop_image,
    roi_box_from_bbox,
    roi_box_from_landmarks,
)
from foundation.checkpoints import CheckpointError, load_pickle, load_strictly, read_state_dict

NUM_POSE, NUM_SHAPE, NUM_EXPRESSION = 12, 40, 10
NUM_PARAMS = NUM_POSE + NUM_SHAPE + NUM_EXPRESSION
NUM_LANDMARKS = 68
_BASE_WIDTH = 32  # conv1's output channels at widen_factor 1
_HEAD_RENAMES = {"fc_param.weight": "fc.weight", "fc_param.bias": "fc.bias"}  # 3DDFA_V2's saved head name


class DepthWiseBlock(nn.Module):
    """Depthwise 3x3 conv -> BN -> ReLU -> pointwise 1x1 conv -> BN -> ReLU (MobileNetV1's unit)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False)
        self.bn_dw = nn.BatchNorm2d(in_channels)
        self.conv_sep = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al. 2017) with 3DDFA_V2's heads, module names as in its checkpoints.

    ``fc`` regresses the 62 normalised parameters. ``fc_lm`` is the auxiliary head 3DDFA_V2 trained
    beside it (136 = 68 x 2 outputs); its inference never reads it, and neither does ``forward``,
    but it is part of the published weights, so it is kept for strict loading.
    """

    # (name, output width at widen_factor 1, stride), the 13 depthwise-separable blocks in order
    _BLOCKS = (
        ("dw2_1", 64, 1), ("dw2_2", 128, 2), ("dw3_1", 128, 1), ("dw3_2", 256, 2),
        ("dw4_1", 256, 1), ("dw4_2", 512, 2), ("dw5_1", 512, 1), ("dw5_2", 512, 1),
        ("dw5_3", 512, 1), ("dw5_4", 512, 1), ("dw5_5", 512, 1), ("dw5_6", 1024, 2),
        ("dw6", 1024, 1),
    )

    def __init__(self, widen_factor: float = 1.0, num_params: int = NUM_PARAMS, landmark_head: bool = True) -> None:
        super().__init__()
        self.widen_factor = widen_factor
        width = int(_BASE_WIDTH * widen_factor)
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        for name, channels, stride in self._BLOCKS:
            out_width = int(channels * widen_factor)
            self.add_module(name, DepthWiseBlock(width, out_width, stride))
            width = out_width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_params)
        self.fc_lm = nn.Linear(width, 2 * NUM_LANDMARKS) if landmark_head else None

    def features(self, x: Tensor) -> Tensor:
        """``(B, 3, 120, 120)`` normalised BGR crops -> ``(B, 1024 * widen_factor)`` pooled features."""
        x = self.relu(self.bn1(self.conv1(x)))
        for name, _, _ in self._BLOCKS:
            x = getattr(self, name)(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 120, 120)`` normalised BGR crops -> ``(B, num_params)`` normalised parameters."""
        return self.fc(self.features(x))


def load_3ddfa_checkpoint(path: str | Path, widen_factor: float | None = None) -> MobileNetV1:
    """Build the MobileNetV1 a 3DDFA_V2 checkpoint was trained as, load it strictly, set eval mode.

    The width multiplier is read from ``conv1``'s output channels (``32 * widen_factor``); when
    ``widen_factor`` is given it must agree. The regression head is saved as ``fc_param`` and loaded
    into ``fc`` (3DDFA_V2's ``load_model`` does the same renaming).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable file, or weights of another architecture or width.
    """
    path = Path(path)
    state = {_HEAD_RENAMES.get(key, key): value for key, value in read_state_dict(path, "3DDFA_V2 checkpoint", "download e.g. weights/mb05_120x120.pth from github.com/cleardusk/3DDFA_V2").items()}
    if "conv1.weight" not in state or "fc.weight" not in state:
        sample = ", ".join(sorted(state)[:5])
        raise CheckpointError(
            f"{str(path)!r} is not a 3DDFA_V2 MobileNetV1 checkpoint: it has no conv1.weight/fc_param.weight "
            f"(its first keys: {sample}); pass a MobileNetV1 checkpoint such as mb05_120x120.pth or mb1_120x120.pth"
        )
    inferred = state["conv1.weight"].shape[0] / _BASE_WIDTH
    if widen_factor is not None and int(_BASE_WIDTH * widen_factor) != state["conv1.weight"].shape[0]:
        raise CheckpointError(
            f"{str(path)!r} holds a MobileNetV1 of widen_factor {inferred:g}, not {widen_factor:g}; "
            "drop the widen_factor argument to use the checkpoint's width"
        )
    model = MobileNetV1(
        widen_factor=inferred if widen_factor is None else widen_factor,
        num_params=state["fc.weight"].shape[0],
        landmark_head="fc_lm.weight" in state,
    )
    load_strictly(model, state, path, f"does not match 3DDFA_V2's MobileNetV1 (widen_factor {inferred:g})", "MobileNetV1")
    return model.eval()


def load_param_stats(path: str | Path) -> tuple[Tensor, Tensor]:
    """``param_mean_std_62d_120x120.pkl`` -> ``(mean, std)``, each ``(62,)`` float32, to de-normalise the output."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"parameter statistics {str(path)!r} not found; it is configs/param_mean_std_62d_120x120.pkl "
            "in github.com/cleardusk/3DDFA_V2"
        )
    stats = load_pickle(path, CheckpointError, "3DDFA_V2's param_mean_std pickle")
    if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
        raise CheckpointError(
            f"{str(path)!r} is not a dict with 'mean' and 'std'; expected 3DDFA_V2's param_mean_std pickle"
        )
    mean, std = (torch.as_tensor(np.asarray(stats[key], dtype=np.float32)) for key in ("mean", "std"))
    if mean.shape != (NUM_PARAMS,) or std.shape != (NUM_PARAMS,):
        raise CheckpointError(
            f"{str(path)!r} has mean {tuple(mean.shape)} and std {tuple(std.shape)}; expected (62,) each"
        )
    return mean, std


@dataclass
class DecodedParams:
    """3DMM parameters, de-normalised: ``[pose 12 | shape S | expression E]`` split.

    ``pose (B, 3, 4)`` = ``[sR | t]`` (rotation times scale, then translation), ``shape (B, S)``,
    ``expression (B, E)`` (3DDFA_V2: S = 40, E = 10).
    """

    pose: Tensor
    shape: Tensor
    expression: Tensor


def split_params(params: Tensor, num_shape: int = NUM_SHAPE, num_expression: int = NUM_EXPRESSION) -> DecodedParams:
    """De-normalised ``(B, 12 + S + E)`` parameters -> :class:`DecodedParams` (views, no copy, dtype kept)."""
    if params.dim() != 2 or params.shape[1] != NUM_POSE + num_shape + num_expression:
        raise ValueError(f"expected parameters of shape (B, {NUM_POSE + num_shape + num_expression}) = 12 pose + "
                         f"{num_shape} shape + {num_expression} expression, got {tuple(params.shape)}")
    return DecodedParams(
        pose=params[:, :NUM_POSE].reshape(-1, 3, 4),
        shape=params[:, NUM_POSE : NUM_POSE + num_shape],
        expression=params[:, NUM_POSE + num_shape :],
    )


def decode_params(raw: Tensor, mean: Tensor, std: Tensor, num_shape: int = NUM_SHAPE,
                  num_expression: int = NUM_EXPRESSION) -> DecodedParams:
    """Network output ``(B, 12 + S + E)`` -> :class:`DecodedParams` via ``raw * std + mean`` (in fp32)."""
    return split_params(raw.float() * std.to(raw.device, torch.float32) + mean.to(raw.device, torch.float32),
                        num_shape, num_expression)


def pose_angles(pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(B, 3, 4)`` pose -> ``(yaw, pitch, roll)`` in degrees, each ``(B,)``, in the project's convention.

    Equal to 3DDFA_V2's ``calc_pose`` angles with the yaw negated (see the module docstring).
    """
    _, rotation, _ = pose_to_scale_rotation(pose.float())
    return rotation_to_euler(rotation)


def crop_pose_to_image(pose: Tensor, roi_boxes: Tensor, size: int = CROP_SIZE) -> Tensor:
    """3DDFA_V2's ``similar_transform`` composed with the crop pose, in the project's screen convention.

    Args:
        pose: ``(B, 3, 4)`` ``P`` from :func:`decode_params`.
        roi_boxes: ``(B, 4)`` boxes the crops were cut from, unrounded (as 3DDFA_V2 passes them).
    Returns:
        ``(B, 3, 4)`` affine map from model space to screen space: ``screen = A @ [v; 1]`` gives image
        ``(x, y)`` (pixel centres at +0.5: 3DDFA_V2's ``recon_vers`` coordinates + 0.5) and a depth
        (smaller = nearer, in image pixels, no offset).
    """
    start_x, start_y, end_x, end_y = roi_boxes.to(pose.device, pose.dtype).unbind(-1)
    scale_x, scale_y = (end_x - start_x) / size, (end_y - start_y) / size
    linear, offset = pose[:, :, :3], pose[:, :, 3]
    image_linear = torch.stack([
        scale_x[:, None] * linear[:, 0],
        -scale_y[:, None] * linear[:, 1],
        -(scale_x + scale_y)[:, None] / 2 * linear[:, 2],
    ], dim=1)
    image_offset = torch.stack([
        scale_x * (offset[:, 0] - 1) + start_x + 0.5,
        scale_y * (size - offset[:, 1]) + start_y + 0.5,
        torch.zeros_like(start_x),
    ], dim=1)
    return torch.cat([image_linear, image_offset[:, :, None]], dim=2)


def apply_pose(image_pose: Tensor, points: Tensor) -> Tensor:
    """``(B, 3, 4)`` affine map applied to ``(B, V, 3)`` model points -> ``(B, V, 3)`` screen points."""
    return points @ image_pose[:, :, :3].transpose(1, 2) + image_pose[:, None, :, 3]


class LandmarkBasis(nn.Module):
    """The 68 iBUG landmarks of the BFM as a function of 3DDFA's 40 shape and 10 expression coefficients.

    Buffers: ``mean (68, 3)``, ``shape_basis (68, 3, 40)``, ``expression_basis (68, 3, 10)``, in the
    BFM's model space and units (those ``P`` was trained on).
    """

    def __init__(self, mean: Tensor, shape_basis: Tensor, expression_basis: Tensor) -> None:
        super().__init__()
        expected = ((NUM_LANDMARKS, 3), (NUM_LANDMARKS, 3, NUM_SHAPE), (NUM_LANDMARKS, 3, NUM_EXPRESSION))
        got = (tuple(mean.shape), tuple(shape_basis.shape), tuple(expression_basis.shape))
        if got != expected:
            raise ValueError(f"landmark bases must have shapes {expected}, got {got}")
        self.register_buffer("mean", mean.float())
        self.register_buffer("shape_basis", shape_basis.float())
        self.register_buffer("expression_basis", expression_basis.float())

    @classmethod
    def from_npz(cls, path: str | Path) -> LandmarkBasis:
        """Read ``u_base (204, 1)``, ``w_shp_base (204, 40)``, ``w_exp_base (204, 10)`` (xyz per landmark)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"landmark bases {str(path)!r} not found; pass bfm_noneck_mean.npz (or any .npz with "
                "u_base, w_shp_base, w_exp_base as in 3DDFA_V2's BFMModel)"
            )
        try:
            with np.load(path) as data:
                arrays = {key: torch.from_numpy(np.asarray(data[key], dtype=np.float32))
                          for key in ("u_base", "w_shp_base", "w_exp_base")}
        except KeyError as error:
            raise ValueError(f"{str(path)!r} lacks {error}; it needs u_base, w_shp_base and w_exp_base") from error
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {str(path)!r} as an .npz archive ({error})") from error
        try:
            return cls(
                arrays["u_base"].reshape(NUM_LANDMARKS, 3),
                arrays["w_shp_base"].reshape(NUM_LANDMARKS, 3, NUM_SHAPE),
                arrays["w_exp_base"].reshape(NUM_LANDMARKS, 3, NUM_EXPRESSION),
            )
        except RuntimeError as error:
            raise ValueError(
                f"{str(path)!r} has bases of the wrong size ({error}); expected 204 rows, 40 and 10 columns"
            ) from error

    @classmethod
    def from_morphable_model(cls, model: nn.Module) -> LandmarkBasis:
        """The landmark rows of a dense BFM ``MorphableModel`` (``from_bfm``), its first 40 / 10 modes."""
        ids = model.landmark_ids.tolist()
        if sorted(ids) != list(range(NUM_LANDMARKS)):
            raise ValueError(
                f"the model's landmarks cover iBUG ids {sorted(ids)}; 3DDFA needs all 68 (a BFM from from_bfm)"
            )
        if model.num_shape < NUM_SHAPE or model.num_expression < NUM_EXPRESSION:
            raise ValueError(
                f"the model has {model.num_shape} shape and {model.num_expression} expression modes; 3DDFA's "
                f"parameters need {NUM_SHAPE} and {NUM_EXPRESSION} (the dense bfm_noneck_v3.pkl, "
                "MorphableModel.from_bfm)"
            )
        vertices = model.landmark_vertices[torch.argsort(model.landmark_ids)]
        return cls(
            model.mean[vertices],
            model.shape_basis[vertices, :, :NUM_SHAPE],
            model.expression_basis[vertices, :, :NUM_EXPRESSION],
        )

    def forward(self, shape: Tensor, expression: Tensor) -> Tensor:
        """``(B, 40)`` shape and ``(B, 10)`` expression coefficients -> ``(B, 68, 3)`` model-space landmarks."""
        return (
            self.mean
            + torch.einsum("lcs,bs->blc", self.shape_basis, shape.to(self.mean.dtype))
            + torch.einsum("lce,be->blc", self.expression_basis, expression.to(self.mean.dtype))
        )


@dataclass
class FaceRegression:
    """3DDFA_V2's answer for N faces of one image.

    ``raw (N, 62)`` network output; ``params`` de-normalised; ``yaw``, ``pitch``, ``roll`` ``(N,)``
    degrees in the project's convention; ``landmarks (N, 68, 3)`` screen coordinates (image pixels,
    depth smaller = nearer); ``roi_boxes (N, 4)`` the crops; ``image_pose (N, 3, 4)`` the exact affine
    map from BFM model space to screen space (use :func:`apply_pose` for dense vertices);
    ``rotation (N, 3, 3)``, ``scale (N,)``, ``translation (N, 2)`` the same pose as the weak-perspective
    camera of ``camera.project`` (``P2sRt``'s rotation, the roi box's mean scale).
    """

    raw: Tensor
    params: DecodedParams
    yaw: Tensor
    pitch: Tensor
    roll: Tensor
    landmarks: Tensor
    roi_boxes: Tensor
    image_pose: Tensor
    rotation: Tensor
    scale: Tensor
    translation: Tensor


class FaceRegressor(nn.Module):
    """Photo + face boxes (or 68 landmarks) -> 3DMM parameters, head pose and 68 landmarks (3DDFA_V2's ``TDDFA``)."""

    def __init__(
        self, network: MobileNetV1, param_mean: Tensor, param_std: Tensor, landmark_basis: LandmarkBasis
    ) -> None:
        super().__init__()
        if network.fc.out_features != NUM_PARAMS:
            raise ValueError(
                f"the network regresses {network.fc.out_features} parameters; FaceRegressor decodes 3DDFA_V2's "
                f"{NUM_PARAMS} (12 pose + 40 shape + 10 expression), e.g. mb05_120x120.pth or mb1_120x120.pth"
            )
        self.network = network.eval()
        self.landmark_basis = landmark_basis
        self.register_buffer("param_mean", param_mean.float())
        self.register_buffer("param_std", param_std.float())

    @classmethod
    def from_files(cls, checkpoint: str | Path, param_stats: str | Path, landmark_bases: str | Path) -> FaceRegressor:
        """Load ``mb05_120x120.pth``-like weights, ``param_mean_std_62d_120x120.pkl`` and ``bfm_noneck_mean.npz``."""
        mean, std = load_param_stats(param_stats)
        return cls(load_3ddfa_checkpoint(checkpoint), mean, std, LandmarkBasis.from_npz(landmark_bases))

    @torch.no_grad()
    def forward(self, image: Tensor, roi_boxes: Tensor) -> FaceRegression:
        """Regress the faces in the given square regions of interest.

        Args:
            image: ``(3, H, W)`` RGB, uint8 or floating in [0, 1].
            roi_boxes: ``(N, 4)`` ``[sx, sy, ex, ey]`` from :func:`roi_box_from_bbox` / :func:`roi_box_from_landmarks`.
        """
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an RGB image of shape (3, H, W), got {tuple(image.shape)}")
        if roi_boxes.dim() != 2 or roi_boxes.shape[1] != 4 or roi_boxes.shape[0] == 0:
            raise ValueError(f"expected roi boxes of shape (N, 4) with N >= 1, got {tuple(roi_boxes.shape)}")
        device = self.param_mean.device
        crops = torch.stack([crop_image(image, box) for box in roi_boxes.cpu()]).flip(1)  # RGB -> BGR
        raw = self.network(crops.to(device)).float()
        params = decode_params(raw, self.param_mean, self.param_std)
        scale, rotation, _ = pose_to_scale_rotation(params.pose)
        yaw, pitch, roll = rotation_to_euler(rotation)
        roi_boxes = roi_boxes.to(device, torch.float32)
        image_pose = crop_pose_to_image(params.pose, roi_boxes)
        landmarks = apply_pose(image_pose, self.landmark_basis(params.shape, params.expression))
        crop_scales = ((roi_boxes[:, 2] - roi_boxes[:, 0]) + (roi_boxes[:, 3] - roi_boxes[:, 1])) / (2 * CROP_SIZE)
        return FaceRegression(
            raw=raw, params=params, yaw=yaw, pitch=pitch, roll=roll, landmarks=landmarks, roi_boxes=roi_boxes,
            image_pose=image_pose, rotation=rotation, scale=scale * crop_scales, translation=image_pose[:, :2, 3],
        )

    def from_boxes(self, image: Tensor, boxes: Tensor, refine: bool = False) -> FaceRegression:
        """Regress from detector boxes ``(N, 4+)`` ``[x1, y1, x2, y2, ...]``.

        With ``refine`` the faces are cropped again around the first pass's landmarks and regressed
        once more (3DDFA_V2's ``crop_policy='landmark'`` second pass), which centres the crop better.
        """
        result = self(image, roi_box_from_bbox(boxes[:, :4].float()))
        if refine:
            result = self.from_landmarks(image, result.landmarks)
        return result

    def from_landmarks(self, image: Tensor, landmarks: Tensor) -> FaceRegression:
        """Regress from 68 landmarks ``(N, 68, 2+)`` in image pixels (a previous frame's or view's)."""
        return self(image, roi_box_from_landmarks(landmarks.float()))
