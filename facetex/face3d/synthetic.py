"""Textured renders with known ground truth: for tests, and to train a 3DDFA-style
regressor for any morphable model.

Everything follows the camera conventions of ``camera.py``; images are in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.geometry import vertex_normals
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.rasterizer import interpolate, rasterize


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of ``texture (B, C, T, T')`` at ``uv (B, H, W, 2)`` (v-up, row 0 at v = 1)
    -> ``(B, C, H, W)``; texel centres sit at ``(j + 0.5) / T'``, coordinates outside clamp to the border."""
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1)
    return F.grid_sample(texture, grid.to(texture.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def lambertian_shading(normals: Tensor, light_direction: Tensor, ambient: Tensor | float = 0.4,
                       diffuse: Tensor | float = 0.6) -> Tensor:
    """Per-vertex intensity ``ambient + diffuse * max(0, n . l)``: ``(B, V, 1)``.

    Args:
        normals: ``(B, V, 3)`` unit normals in camera space (model space after rotation).
        light_direction: ``(B, 3)`` direction toward the light in the same space
            (``(0, 0, 1)`` lights the face from the viewer); normalised here.
        ambient, diffuse: floats or ``(B,)``.
    """
    light = F.normalize(light_direction, dim=-1)
    cosine = (normals * light[:, None, :]).sum(dim=-1, keepdim=True).clamp_min(0.0)
    ambient = torch.as_tensor(ambient, dtype=normals.dtype, device=normals.device).reshape(-1, 1, 1)
    diffuse = torch.as_tensor(diffuse, dtype=normals.dtype, device=normals.device).reshape(-1, 1, 1)
    return ambient + diffuse * cosine


def render_textured(screen_vertices: Tensor, faces: Tensor, uv: Tensor, texture: Tensor,
                    image_size: int | tuple[int, int], background: Tensor | None = None,
                    shading: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Render textured meshes: z-buffer, then the texture sampled at the interpolated UV.

    Args:
        screen_vertices: ``(B, V, 3)`` screen space (see ``camera.project``).
        faces: ``(F, 3)``.
        uv: ``(V, 2)`` in [0, 1], v-up.
        texture: ``(B, 3, T, T)`` (a batch of 1 broadcasts).
        image_size: ``H`` or ``(H, W)``.
        background: ``(B, 3, H, W)`` where no triangle is (zeros if None).
        shading: ``(B, V, 1)`` or ``(B, V, 3)`` per-vertex multiplier (e.g. :func:`lambertian_shading`).

    Returns:
        ``images (B, 3, H, W)`` and ``mask (B, 1, H, W)`` (1 where the mesh covers the pixel).
    """
    fragments = rasterize(screen_vertices, faces, image_size)
    batch_size, height, width = fragments.triangle_id.shape
    texel_uv = interpolate(uv[None].to(screen_vertices.dtype), faces, fragments)  # (B, H, W, 2)
    colour = sample_texture(texture.expand(batch_size, -1, -1, -1), texel_uv)
    if shading is not None:
        colour = colour * interpolate(shading, faces, fragments).permute(0, 3, 1, 2).to(colour.dtype)
    mask = fragments.mask[:, None].to(colour.dtype)
    if background is None:
        background = torch.zeros_like(colour)
    images = colour * mask + background.to(colour.dtype) * (1.0 - mask)
    return images, mask


def checkerboard_texture(size: int, squares: int = 8, low: float = 0.25, high: float = 1.0,
                         dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """A known texture ``(3, size, size)``: a ``squares x squares`` checkerboard (``low``/``high``)
    times a smooth colour gradient (red grows with u, green with v, blue falls with u),
    so both position and orientation can be read back from a render."""
    texel = (torch.arange(size, dtype=dtype, device=device) + 0.5) / size
    v, u = 1.0 - texel[:, None].expand(size, size), texel[None, :].expand(size, size)  # row 0 is v = 1
    board = ((u * squares).floor() + (v * squares).floor()) % 2
    check = low + (high - low) * board
    gradient = torch.stack([0.4 + 0.6 * u, 0.4 + 0.6 * v, 1.0 - 0.6 * u])
    return gradient * check


@dataclass
class SyntheticFaceBatch:
    """Rendered faces and the parameters that made them.

    Attributes:
        images: ``(B, 3, H, W)`` in [0, 1]. masks: ``(B, 1, H, W)`` face coverage.
        shape: ``(B, S)``. expression: ``(B, E)``. yaw, pitch, roll: ``(B,)`` degrees.
        rotation: ``(B, 3, 3)``. scale: ``(B,)``. translation: ``(B, 2)`` pixels.
        screen_vertices: ``(B, V, 3)``. landmarks2d: ``(B, L, 2)`` screen positions of
        ``model.landmark_vertices``. textures: ``(B, 3, T, T)`` the UV textures used.
    """

    images: Tensor
    masks: Tensor
    shape: Tensor
    expression: Tensor
    yaw: Tensor
    pitch: Tensor
    roll: Tensor
    rotation: Tensor
    scale: Tensor
    translation: Tensor
    screen_vertices: Tensor
    landmarks2d: Tensor
    textures: Tensor


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=generator.device)


def _smooth_field(batch_size: int, channels: int, cells: int, size: int, generator: torch.Generator) -> Tensor:
    """Low-frequency random field in [0, 1]: ``(B, C, size, size)`` upsampled from ``cells`` x ``cells``."""
    coarse = torch.rand(batch_size, channels, cells, cells, generator=generator, device=generator.device)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def random_face_batch(model: MorphableModel, batch_size: int, image_size: int, generator: torch.Generator,
                      yaw_range: tuple[float, float] = (-60.0, 60.0), pitch_range: tuple[float, float] = (-20.0, 20.0),
                      roll_range: tuple[float, float] = (-15.0, 15.0), shape_std: Tensor | float = 1.0,
                      expression_std: Tensor | float = 0.5, fill_range: tuple[float, float] = (0.55, 0.8),
                      shift: float = 0.05, texture_size: int = 128) -> SyntheticFaceBatch:
    """Random faces of ``model`` rendered with random pose, texture, lighting and background.

    Coefficients are ``N(0, std^2)``; ``shape_std``/``expression_std`` may be per-coefficient
    ``(S,)``/``(E,)`` for models whose bases are not scaled to unit variance (3DDFA's BFM).
    The face's height fills a fraction in ``fill_range`` of the image; its centre moves by
    up to ``shift`` of the image size. Textures are a random skin tone times smooth
    variation; the light comes from a random direction in front of the face. Random
    numbers come from ``generator`` (its device), results are on the model's device.
    """
    if model.uv is None:
        raise ValueError("random_face_batch needs a model with texture coordinates (model.uv is None); load the "
                         "model with its UV file")
    device, dtype = model.mean.device, model.mean.dtype
    shape = torch.randn(batch_size, model.num_shape, generator=generator, device=generator.device)
    expression = torch.randn(batch_size, model.num_expression, generator=generator, device=generator.device)
    yaw, pitch, roll = (_uniform(*bounds, batch_size, generator) for bounds in (yaw_range, pitch_range, roll_range))
    fill = _uniform(*fill_range, batch_size, generator)
    offset = (torch.rand(batch_size, 2, generator=generator, device=generator.device) * 2 - 1) * shift * image_size
    tone = torch.stack([_uniform(0.45, 0.95, batch_size, generator), _uniform(0.3, 0.75, batch_size, generator),
                        _uniform(0.2, 0.65, batch_size, generator)], dim=1)
    variation = _smooth_field(batch_size, 3, 6, texture_size, generator)
    light = torch.stack([_uniform(-1, 1, batch_size, generator), _uniform(-1, 1, batch_size, generator),
                         _uniform(0.5, 1.5, batch_size, generator)], dim=1)
    ambient = _uniform(0.3, 0.6, batch_size, generator)
    background = _smooth_field(batch_size, 3, 4, image_size, generator)

    shape = shape.to(device, dtype) * torch.as_tensor(shape_std, dtype=dtype, device=device)
    expression = expression.to(device, dtype) * torch.as_tensor(expression_std, dtype=dtype, device=device)
    yaw, pitch, roll = (angle.to(device, dtype) for angle in (yaw, pitch, roll))
    vertices = model(shape, expression)
    rotation = euler_to_rotation(yaw, pitch, roll)
    extent = (model.mean[:, 1].amax() - model.mean[:, 1].amin()).clamp_min(torch.finfo(dtype).eps)
    scale = fill.to(device, dtype) * image_size / extent
    translation = image_size / 2 + offset.to(device, dtype)
    screen = project(vertices, rotation, scale, translation)
    textures = (tone.to(device, dtype)[:, :, None, None] * (0.8 + 0.4 * variation.to(device, dtype))).clamp(0.0, 1.0)
    normals = vertex_normals(vertices @ rotation.transpose(-1, -2), model.triangles)
    ambient = ambient.to(device, dtype)
    shading = lambertian_shading(normals, light.to(device, dtype), ambient, 1.0 - ambient)
    images, masks = render_textured(screen, model.triangles, model.uv, textures, image_size,
                                    background=background.to(device, dtype), shading=shading)
    return SyntheticFaceBatch(images=images.clamp(0.0, 1.0), masks=masks, shape=shape, expression=expression,
                              yaw=yaw, pitch=pitch, roll=roll, rotation=rotation, scale=scale,
                              translation=translation, screen_vertices=screen,
                              landmarks2d=screen[:, model.landmark_vertices, :2], textures=textures)
