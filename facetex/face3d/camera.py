"""Head pose and weak-perspective projection: the camera conventions face3d shares.

Model space: x to the viewer's right for a frontal face, y up, z toward the viewer.
Screen space: pixel coordinates, x right, y down (pixel ``(i, j)`` has its centre at
``(j + 0.5, i + 0.5)``), and a depth where smaller means nearer.

Euler angles are in degrees and compose as ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``
acting on column vectors: positive yaw turns the nose (+z) toward +x (the image's
right), positive pitch turns it toward -y (down), positive roll turns +x toward +y.

A pose is also written as one affine ``(3, 4)`` matrix ``P`` with ``screen = P @ [X; 1]``
(:func:`pose_matrix`, the map of :func:`project`), the form 3DDFA_V2's regressor outputs;
:func:`pose_to_scale_rotation` is its ``P2sRt`` and :func:`pose_to_euler` reads the angles back.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Below this |cos(yaw)| the decomposition is in gimbal lock: roll is set to 0.
_GIMBAL_EPS = 1e-6


def _axis_rotations(yaw: Tensor, pitch: Tensor, roll: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rx(pitch), Ry(yaw), Rz(roll) as ``(..., 3, 3)`` from angles in degrees."""
    def build(angle: Tensor, axis: int) -> Tensor:
        radians = torch.deg2rad(angle)
        c, s = torch.cos(radians), torch.sin(radians)
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        if axis == 0:
            rows = [one, zero, zero, zero, c, -s, zero, s, c]
        elif axis == 1:
            rows = [c, zero, s, zero, one, zero, -s, zero, c]
        else:
            rows = [c, -s, zero, s, c, zero, zero, zero, one]
        return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)

    return build(pitch, 0), build(yaw, 1), build(roll, 2)


def euler_to_rotation(yaw: Tensor | float, pitch: Tensor | float, roll: Tensor | float) -> Tensor:
    """Rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` of shape ``(..., 3, 3)`` from degrees.

    The three angles broadcast against each other; Python floats give a ``(3, 3)`` matrix.
    """
    yaw, pitch, roll = torch.broadcast_tensors(*(torch.as_tensor(a) for a in (yaw, pitch, roll)))
    if not yaw.is_floating_point():
        yaw, pitch, roll = yaw.float(), pitch.float(), roll.float()
    rx, ry, rz = _axis_rotations(yaw, pitch, roll)
    return rz @ ry @ rx


def rotation_to_euler(rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`euler_to_rotation`: ``(yaw, pitch, roll)`` in degrees, each ``(...)``.

    Yaw is in [-90, 90]. At |yaw| = 90 (gimbal lock) only pitch - roll (or pitch + roll)
    is defined; roll is then reported as 0. Yaw is ``-asin(R[2, 0])`` and pitch, roll are
    ``atan2``s of row 2 and column 0 as in 3DDFA_V2's ``matrix2angle``, so the nearly-orthonormal
    matrices of its ``P2sRt`` give its angles exactly (yaw negated, see ``regressor``).
    """
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {tuple(rotation.shape)}")
    r = rotation
    cos_yaw = torch.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2)
    yaw = -torch.asin(r[..., 2, 0].clamp(-1.0, 1.0))
    locked = cos_yaw < _GIMBAL_EPS
    pitch_free = torch.atan2(r[..., 2, 1], r[..., 2, 2])
    roll_free = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    # With cos(yaw) = 0 and roll = 0: R[0, 1] = sin(yaw) sin(pitch), R[1, 1] = cos(pitch).
    pitch_locked = torch.atan2(torch.sign(-r[..., 2, 0]) * r[..., 0, 1], r[..., 1, 1])
    pitch = torch.where(locked, pitch_locked, pitch_free)
    roll = torch.where(locked, torch.zeros_like(roll_free), roll_free)
    return torch.rad2deg(yaw), torch.rad2deg(pitch), torch.rad2deg(roll)


def project(vertices: Tensor, rotation: Tensor, scale: Tensor, translation: Tensor) -> Tensor:
    """Weak-perspective (scaled orthographic) projection of model space into screen space.

    Args:
        vertices: ``(B, V, 3)`` model-space points.
        rotation: ``(B, 3, 3)`` head rotation.
        scale: ``(B,)`` pixels per model unit.
        translation: ``(B, 2)`` screen position ``(tx, ty)`` of the model origin, in pixels.

    Returns:
        ``(B, V, 3)`` screen points ``(s (RX)_x + tx, -s (RX)_y + ty, -s (RX)_z)``: y flips
        because screen y points down; depth flips so that nearer (larger z) is smaller.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, V, 3), got {tuple(vertices.shape)}")
    rotated = vertices @ rotation.transpose(-1, -2)
    flip = rotated.new_tensor([1.0, -1.0, -1.0])
    offset = torch.cat([translation, translation.new_zeros(translation.shape[0], 1)], dim=-1)
    return rotated * flip * scale[:, None, None] + offset[:, None, :]



def pose_matrix(rotation: Tensor, scale: Tensor, translation: Tensor) -> Tensor:
    """The affine map of :func:`project`: ``(B, 3, 3)``, ``(B,)``, ``(B, 2)`` -> ``(B, 3, 4)``.

    Rows ``s R_0 | t_x``, ``-s R_1 | t_y``, ``-s R_2 | 0``: screen y points down and depth away from the viewer.
    """
    linear = scale[:, None, None] * rotation * rotation.new_tensor([1.0, -1.0, -1.0])[:, None]
    offset = torch.cat([translation, translation.new_zeros(translation.shape[0], 1)], dim=1)
    return torch.cat([linear, offset[:, :, None]], dim=2)


def pose_to_scale_rotation(pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """3DDFA_V2's ``P2sRt``: pose ``(B, 3, 4)`` -> scale ``(B,)``, rotation ``(B, 3, 3)``, translation ``(B, 3)``.

    The scale is the mean norm of the first two rows; the rotation's rows are those two rows
    normalised and their cross product.
    """
    row1, row2 = pose[:, 0, :3], pose[:, 1, :3]
    norm1, norm2 = row1.norm(dim=-1), row2.norm(dim=-1)
    r1, r2 = row1 / norm1[:, None], row2 / norm2[:, None]
    rotation = torch.stack([r1, r2, torch.linalg.cross(r1, r2, dim=-1)], dim=1)
    return (norm1 + norm2) / 2, rotation, pose[:, :, 3]


def pose_to_euler(pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(B, 3, 4)`` affine pose of :func:`pose_matrix` -> ``(yaw, pitch, roll)`` degrees ``(B,)``.

    Row 1 is un-flipped (``-s R_1`` here, ``s R_1`` in 3DDFA_V2's crop pose) and the rotation read as
    ``P2sRt`` reads it (row 2 is not used), so it equals ``regressor.pose_angles`` on the crop pose.
    """
    _, rotation, _ = pose_to_scale_rotation(pose.float() * pose.new_tensor([1.0, -1.0, 1.0])[:, None].float())
    return rotation_to_euler(rotation)
