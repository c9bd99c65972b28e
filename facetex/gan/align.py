"""FFHQ alignment: the crop StyleGAN's FFHQ faces were made with, and its exact inverse.

The recipe of NVlabs ``ffhq-dataset`` (``recreate_aligned_images``), from 68 iBUG landmarks:
eye centres ``e_l, e_r`` (means of points 36-41 and 42-47), mouth corners 48 and 54,
``eye_to_eye = e_r - e_l``, ``eye_to_mouth = mouth_avg - eye_avg``;
``x = eye_to_eye - rot90(eye_to_mouth)`` normalised and scaled to
``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, ``y = rot90(x)``, centre
``c = eye_avg + 0.1 eye_to_mouth``; the oriented square with corners ``c - x - y`` (top left),
``c - x + y`` (bottom left), ``c + x + y``, ``c + x - y`` is resampled to ``S x S``.

Here that square is an exact similarity: ``aligned_to_original`` ``(3, 3)`` maps aligned pixel
coordinates to photo coordinates (and ``original_to_aligned`` back), so a generated face can be
pasted into the photo (:func:`paste_back`) or its framing handed to StyleGAN3's input transform
(:func:`to_image_units`). Coordinates
follow the project's screen convention (pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``),
which is what ``FaceRegressor`` returns; FFHQ's ``quad + 0.5`` converts dlib's integer-centred
points to the same convention. Like FFHQ, a quad much larger than the output is first shrunk by
an integer factor with antialiasing; outside the photo the crop reflects the image
(FFHQ additionally blurs and fades that padding toward the median colour; not reproduced).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from facetex.face3d.detector import FaceDetector
from facetex.face3d.pipeline import CropPolicy, regress_landmarks
from facetex.face3d.regressor import FaceRegressor
from foundation.errors import InputError

PaddingMode = Literal["reflection", "border", "zeros"]
_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)
_MOUTH_LEFT, _MOUTH_RIGHT = 48, 54


class AlignmentError(InputError, ValueError):
    """Landmarks that cannot define an FFHQ crop (wrong shape, non-finite, or degenerate)."""


@dataclass
class AlignedFace:
    """An FFHQ-aligned crop and its geometry.

    ``image (3, S, S)`` float (uint8 input becomes [0, 1]); ``aligned_to_original (3, 3)`` maps
    homogeneous aligned pixel coordinates to the photo's, ``original_to_aligned`` is its inverse;
    ``quad (4, 2)`` the crop's corners in the photo (top left, bottom left, bottom right, top right).
    """

    image: Tensor
    aligned_to_original: Tensor
    original_to_aligned: Tensor
    quad: Tensor


def _rot90(vector: Tensor) -> Tensor:
    """``(..., 2)`` ``(a, b) -> (-b, a)``: FFHQ's ``flipud(v) * [-1, 1]``."""
    return torch.stack([-vector[..., 1], vector[..., 0]], dim=-1)


def ffhq_quad(landmarks: Tensor) -> Tensor:
    """FFHQ's oriented crop square from iBUG-68 ``landmarks (..., 68, 2+)`` -> corners ``(..., 4, 2)``.

    Corners are top left, bottom left, bottom right, top right in the landmarks' coordinates.
    """
    if landmarks.dim() < 2 or landmarks.shape[-2] != 68 or landmarks.shape[-1] < 2:
        raise AlignmentError(f"expected iBUG-68 landmarks of shape (..., 68, 2), got {tuple(landmarks.shape)}")
    points = landmarks[..., :2].to(torch.promote_types(landmarks.dtype, torch.float32))
    if not torch.isfinite(points).all():
        raise AlignmentError("landmarks contain NaN or infinite values; the landmark detector failed on this face")
    eye_left = points[..., _LEFT_EYE, :].mean(-2)
    eye_right = points[..., _RIGHT_EYE, :].mean(-2)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (points[..., _MOUTH_LEFT, :] + points[..., _MOUTH_RIGHT, :]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    x_norm = x.norm(dim=-1, keepdim=True)
    half_size = torch.maximum(eye_to_eye.norm(dim=-1) * 2.0, eye_to_mouth.norm(dim=-1) * 1.8)[..., None]
    if bool((x_norm == 0).any() | (half_size == 0).any()):
        raise AlignmentError("eyes and mouth coincide in the landmarks; they cannot orient an FFHQ crop")
    x = x / x_norm * half_size
    y = _rot90(x)
    centre = eye_avg + 0.1 * eye_to_mouth
    return torch.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y], dim=-2)


def quad_to_transform(quad: Tensor, output_size: int) -> Tensor:
    """``aligned_to_original (..., 3, 3)`` mapping the ``S x S`` output frame onto ``quad (..., 4, 2)``.

    Aligned ``(u, v)`` goes to ``quad[0] + u / S (quad[3] - quad[0]) + v / S (quad[1] - quad[0])``.
    """
    origin = quad[..., 0, :]
    columns = torch.stack([(quad[..., 3, :] - origin) / output_size, (quad[..., 1, :] - origin) / output_size,
                           origin], dim=-1)  # (..., 2, 3)
    last_row = torch.zeros_like(columns[..., :1, :])
    last_row[..., 0, 2] = 1.0
    return torch.cat([columns, last_row], dim=-2)


def apply_transform(transform: Tensor, points: Tensor) -> Tensor:
    """Map ``points (..., N, 2)`` by a homogeneous ``transform (..., 3, 3)``."""
    return points @ transform[..., :2, :2].mT + transform[..., None, :2, 2]


def to_image_units(pixel_transform: Tensor, size: int) -> Tensor:
    """A ``(..., 3, 3)`` map between two ``size x size`` pixel frames, re-expressed in StyleGAN3's image
    units (the image spans [-0.5, 0.5], so ``u = x / size - 0.5``): ``N M N^-1``.

    Pass the inverse of the wanted content motion to ``stylegan3.Generator.set_input_transform``.
    """
    normalise = pixel_transform.new_tensor([[1.0 / size, 0.0, -0.5], [0.0, 1.0 / size, -0.5], [0.0, 0.0, 1.0]])
    return normalise @ pixel_transform @ torch.linalg.inv(normalise)


def _pixel_centres(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(H, W, 2)`` continuous ``(x, y)`` coordinates of pixel centres."""
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    return torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)


def warp_image(image: Tensor, target_to_source: Tensor, size: tuple[int, int],
               padding_mode: PaddingMode = "reflection") -> Tensor:
    """Bilinear resampling of ``image (C, H, W)`` into ``size = (H', W')``: target pixel ``p``
    takes the source at ``target_to_source @ p`` -> ``(C, H', W')``."""
    height, width = image.shape[-2:]
    centres = _pixel_centres(size[0], size[1], target_to_source.dtype, target_to_source.device)
    source = apply_transform(target_to_source, centres.reshape(-1, 2)).reshape(size[0], size[1], 2)
    scale = source.new_tensor([2.0 / width, 2.0 / height])
    grid = (source * scale - 1.0).to(image.dtype)
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)[0]


def _as_float_image(image: Tensor) -> Tensor:
    """``(3, H, W)`` uint8 or floating -> floating (uint8 scaled to [0, 1])."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image of shape (3, H, W), got {tuple(image.shape)}")
    return image.float() / 255.0 if image.dtype == torch.uint8 else image


def align_face(image: Tensor, landmarks: Tensor, output_size: int = 1024,
               padding_mode: PaddingMode = "reflection") -> AlignedFace:
    """FFHQ-align one face: ``image (3, H, W)`` (uint8 or float), ``landmarks (68, 2+)`` in its pixels.

    Returns the ``(3, S, S)`` crop with ``S = output_size`` and the transforms between the crop's
    and the photo's pixel coordinates.
    """
    if landmarks.dim() != 2:
        raise AlignmentError(f"align_face takes one face's landmarks (68, 2), got {tuple(landmarks.shape)}")
    pixels = _as_float_image(image)
    quad = ffhq_quad(landmarks.to(pixels.device))
    work_dtype = torch.promote_types(quad.dtype, torch.float32)
    aligned_to_original = quad_to_transform(quad.to(work_dtype), output_size)
    original_to_aligned = torch.linalg.inv(aligned_to_original)
    quad_size = float((quad[3] - quad[0]).norm())
    shrink = int(quad_size / output_size * 0.5)
    sampled, aligned_to_sampled = pixels, aligned_to_original
    if shrink > 1:  # FFHQ's antialiased pre-shrink: bilinear sampling alone would alias
        height, width = pixels.shape[-2:]
        shrunk_size = (max(round(height / shrink), 1), max(round(width / shrink), 1))
        sampled = F.interpolate(pixels[None], size=shrunk_size, mode="bilinear", antialias=True,
                                align_corners=False)[0]
        to_shrunk = torch.diag(aligned_to_original.new_tensor([shrunk_size[1] / width, shrunk_size[0] / height, 1.0]))
        aligned_to_sampled = to_shrunk @ aligned_to_original
    crop = warp_image(sampled, aligned_to_sampled, (output_size, output_size), padding_mode)
    return AlignedFace(image=crop, aligned_to_original=aligned_to_original,
                       original_to_aligned=original_to_aligned, quad=quad)


ALIGNMENT_CROP_POLICY: CropPolicy = "landmark"
"""3DDFA_V2 crop policy of FFHQ alignment: the re-crop around the first landmarks (its video demo's tracking
crop). Alignment is a landmark-accuracy task, and on the two shared FFHQ photos (whose true square is the
1024 frame) the re-crop's square is the closer one: corners within 39.1 / 18.5 px of the frame vs 47.0 /
27.2 px with the single crop, side 1042 / 1000 px vs 1046 / 988 px (ffhq_00009 / ffhq_00012)."""


def ffhq_landmarks(image: Tensor, detector: FaceDetector, regressor: FaceRegressor,
                   crop_policy: CropPolicy = ALIGNMENT_CROP_POLICY) -> Tensor:
    """The 68 landmarks ``(68, 2)`` (on the CPU) FFHQ alignment uses: 3DDFA_V2's on the most confident face
    of ``image (3, H, W)``. Raises ``NoFaceError`` when the detector finds no face."""
    return regress_landmarks(image, detector, regressor, crop_policy).landmarks[0, :, :2].cpu()


def align_photo(image: Tensor, detector: FaceDetector, regressor: FaceRegressor, output_size: int = 1024,
                padding_mode: PaddingMode = "reflection",
                crop_policy: CropPolicy = ALIGNMENT_CROP_POLICY) -> AlignedFace:
    """Detect the most confident face, regress its 68 landmarks (3DDFA_V2, :func:`ffhq_landmarks`) and
    FFHQ-align it.

    Raises ``NoFaceError`` when the detector finds no face.
    """
    return align_face(image, ffhq_landmarks(image, detector, regressor, crop_policy), output_size, padding_mode)


def paste_back(aligned: Tensor, aligned_to_original: Tensor, original: Tensor) -> tuple[Tensor, Tensor]:
    """Put an aligned-frame image ``(3, S, S)`` (e.g. a generated view) back into the photo ``(3, H, W)``.

    Returns the composite ``(3, H, W)`` (floating, uint8 photos scaled to [0, 1]) and the
    ``(1, H, W)`` coverage of the aligned square (1 inside, 0 outside, fractional on its edge).
    """
    photo = _as_float_image(original)
    crop = _as_float_image(aligned).to(photo)
    original_to_aligned = torch.linalg.inv(aligned_to_original)
    height, width = photo.shape[-2:]
    warped = warp_image(crop, original_to_aligned, (height, width), padding_mode="border")
    inside = torch.ones_like(crop[:1])
    coverage = warp_image(inside, original_to_aligned, (height, width), padding_mode="zeros")
    return coverage * warped + (1.0 - coverage) * photo, coverage
