"""Euler angles <-> rotation and the weak-perspective projection, on known answers."""
from __future__ import annotations

import torch

from facetex.face3d.camera import euler_to_rotation, project, rotation_to_euler


def test_round_trip_angles_matrix() -> None:
    generator = torch.Generator().manual_seed(0)
    yaw = torch.empty(200).uniform_(-89, 89, generator=generator)
    pitch = torch.empty(200).uniform_(-179, 179, generator=generator)
    roll = torch.empty(200).uniform_(-179, 179, generator=generator)
    rotation = euler_to_rotation(yaw.double(), pitch.double(), roll.double())
    assert torch.allclose(rotation @ rotation.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(200, 3, 3),
                          atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(200, dtype=torch.float64))
    recovered = rotation_to_euler(rotation)
    for got, want in zip(recovered, (yaw, pitch, roll), strict=True):
        assert torch.allclose(got.float(), want, atol=1e-4)


def test_gimbal_lock_rebuilds_the_same_rotation() -> None:
    rotation = euler_to_rotation(torch.tensor(90.0, dtype=torch.float64), torch.tensor(25.0, dtype=torch.float64),
                                 torch.tensor(-10.0, dtype=torch.float64))
    yaw, pitch, roll = rotation_to_euler(rotation)
    assert abs(float(yaw) - 90.0) < 1e-6 and float(roll) == 0.0
    assert torch.allclose(euler_to_rotation(yaw, pitch, roll), rotation, atol=1e-9)


def test_positive_yaw_turns_the_nose_to_the_image_right() -> None:
    nose = torch.tensor([[[0.0, 0.0, 1.0]]])
    rotation = euler_to_rotation(torch.tensor([30.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    screen = project(nose, rotation, torch.tensor([10.0]), torch.tensor([[50.0, 60.0]]))
    # x = 10 sin(30) + 50, y unchanged, depth = -10 cos(30) (the nose is nearer than the origin).
    assert torch.allclose(screen, torch.tensor([[[55.0, 60.0, -10 * 3 ** 0.5 / 2]]]), atol=1e-5)


def test_axes_and_pitch_roll_directions() -> None:
    up = torch.tensor([[[0.0, 1.0, 0.0]]])
    identity = euler_to_rotation(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    # Model y up becomes screen y down (smaller y).
    assert torch.allclose(project(up, identity, torch.tensor([2.0]), torch.tensor([[0.0, 0.0]])),
                          torch.tensor([[[0.0, -2.0, 0.0]]]))
    pitch_down = euler_to_rotation(0.0, 90.0, 0.0)
    assert torch.allclose(pitch_down @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)
    roll = euler_to_rotation(0.0, 0.0, 90.0)
    assert torch.allclose(roll @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_composition_order_is_roll_yaw_pitch() -> None:
    yaw, pitch, roll = torch.tensor(20.0), torch.tensor(-35.0), torch.tensor(50.0)
    composed = (euler_to_rotation(0.0, 0.0, roll) @ euler_to_rotation(yaw, 0.0, 0.0)
                @ euler_to_rotation(0.0, pitch, 0.0))
    assert torch.allclose(euler_to_rotation(yaw, pitch, roll), composed, atol=1e-6)


def test_project_is_differentiable_in_pose() -> None:
    yaw = torch.tensor([10.0], requires_grad=True)
    rotation = euler_to_rotation(yaw, torch.zeros(1), torch.zeros(1))
    screen = project(torch.tensor([[[0.0, 0.0, 1.0]]]), rotation, torch.tensor([1.0]), torch.zeros(1, 2))
    screen[0, 0, 0].backward()
    # d/dyaw sin(yaw) in degrees = cos(yaw) * pi / 180.
    assert torch.allclose(yaw.grad, torch.cos(torch.deg2rad(torch.tensor([10.0]))) * torch.pi / 180)
