"""Texture fusion: occlusion, mirror filling and push-pull on exact toy meshes; recovery of a known
texture of the real Surrey Face Model from its renders, and of the real BFM mean face rendered in
3DDFA_V2's conventions from 62-parameter poses (the ground-truth proofs), also over a magenta background
with a hair band over the forehead (only skin may reach the map)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.inpaint import push_pull
from facetex.face3d.morphable_model import MorphableModel, mirror_vertices
from facetex.face3d.reconstruction import skin_masks
from facetex.face3d.regressor import apply_pose, crop_pose_to_image
from facetex.face3d.synthetic import checkerboard_texture, render_textured
from facetex.face3d.texture import (
    FusionConfig,
    TexelSource,
    build_uv_chart,
    fuse_texture,
    layout_uv,
    mirror_blend,
    sample_at_mirror,
    sample_view,
    silhouette_falloff,
    texture_to_vertex_colors,
)


def _quad(
    x0: float, x1: float, y0: float, y1: float, z: float, u0: float, u1: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A quad facing +z: vertices (4, 3) bottom-left, bottom-right, top-right, top-left; faces CCW; uv (4, 2)."""
    vertices = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    uv = torch.tensor([[u0, 0.0], [u1, 0.0], [u1, 1.0], [u0, 1.0]])
    return vertices, torch.tensor([[0, 1, 2], [0, 2, 3]]), uv


def _two_quads() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small quad 1 unit in front of a big one; UV: front in u [0, 0.5], back in u [0.5, 1]."""
    front_v, front_f, front_uv = _quad(-0.5, 0.5, -0.5, 0.5, 1.0, 0.0, 0.5)
    back_v, back_f, back_uv = _quad(-1.0, 1.0, -1.0, 1.0, 0.0, 0.5, 1.0)
    return torch.cat([front_v, back_v]), torch.cat([front_f, back_f + 4]), torch.cat([front_uv, back_uv])


def _frontal(vertices: torch.Tensor, size: int = 128, scale: float = 50.0) -> torch.Tensor:
    """(V, 3) model space -> (V, 3) screen space of a frontal view centred in a size x size image."""
    rotation = euler_to_rotation(0.0, 0.0, 0.0)[None]
    return project(vertices[None], rotation, torch.tensor([scale]), torch.tensor([[size / 2, size / 2]]))[0]


def test_occluded_texels_get_zero_weight() -> None:
    vertices, faces, uv = _two_quads()
    chart = build_uv_chart(uv, faces, 256)
    image = torch.rand(3, 128, 128)
    _, visibility, weight = sample_view(image, _frontal(vertices), faces, chart,
                                     FusionConfig(cos_power=3.0, silhouette_margin=0.0))

    texel_u = (torch.arange(256) + 0.5) / 256
    texel_v = 1.0 - (torch.arange(256) + 0.5) / 256
    back_x = (4.0 * texel_u - 3.0)[None, :].expand(256, 256)  # model x of back-quad texels
    back_y = (2.0 * texel_v - 1.0)[:, None].expand(256, 256)
    on_back = texel_u[None, :].expand(256, 256) > 0.5
    behind_front = on_back & (back_x.abs() < 0.45) & (back_y.abs() < 0.45)
    in_back_interior = on_back & (back_x.abs() < 0.95) & (back_y.abs() < 0.95)
    clear_of_front = in_back_interior & ((back_x.abs() > 0.55) | (back_y.abs() > 0.55))
    on_front = texel_u[None, :].expand(256, 256) < 0.5

    assert behind_front.sum() > 1000 and clear_of_front.sum() > 1000
    assert not visibility[behind_front].any() and (weight[behind_front] == 0).all()
    assert visibility[clear_of_front].all() and torch.allclose(weight[clear_of_front], torch.tensor(1.0))
    assert visibility[on_front & chart.mask].all()


def test_fusion_never_uses_an_occluded_view() -> None:
    vertices, faces, uv = _two_quads()
    screen = _frontal(vertices)
    # view 0 sees both quads; view 1 is the same camera but its image is pure red and only its back quad
    # is reported (front quad moved far behind), so in view 1 the back-quad centre is visible
    moved = vertices.clone()
    moved[:4, 2] = -5.0
    images = torch.stack([torch.zeros(3, 128, 128), torch.zeros(3, 128, 128)])
    images[1, 0] = 1.0
    screens = torch.stack([screen, _frontal(moved)])
    fused = fuse_texture(images, screens, faces, uv, 256, config=FusionConfig(seam_sigma=0.0))
    centre = (128, 128 + 64)  # texel at back-quad model (0, 0): hidden in view 0, seen in view 1
    assert not fused.visibility[0][centre] and fused.visibility[1][centre]
    assert fused.view_weight[0][centre] == 0 and fused.view_weight[1][centre] == 1
    assert fused.blend_weight[0][centre] == 0 and fused.blend_weight[1][centre] == 1
    assert torch.allclose(fused.texture[:, centre[0], centre[1]], torch.tensor([1.0, 0.0, 0.0]))


def _symmetric_sheet(n: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A flat n x n grid over [-1, 1]^2 with uv = (x + 1) / 2, (y + 1) / 2: mirror of u is 1 - u."""
    coords = torch.linspace(-1, 1, n)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    vertices = torch.stack([x.flatten(), y.flatten(), torch.zeros(n * n)], dim=1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, b, e], [a, e, d]]
    return vertices, torch.tensor(faces), (vertices[:, :2] + 1) / 2


def test_mirror_texels_are_found_exactly() -> None:
    vertices, faces, uv = _symmetric_sheet()
    symmetry = mirror_vertices(vertices)
    assert torch.equal(vertices[symmetry, 0], -vertices[:, 0])
    chart = build_uv_chart(uv, faces, 256, symmetry)
    texture = torch.rand(3, 256, 256)
    known = torch.zeros(256, 256, dtype=torch.bool)
    known[:, :128] = True
    mirrored, available = sample_at_mirror(texture, known, chart)
    assert available[:, 128:].all() and not available[:, :127].any()
    torch.testing.assert_close(mirrored[:, :, 128:], texture[:, :, :128].flip(-1), atol=1e-5, rtol=0)


def test_mirror_blend_only_replaces_poorly_seen_texels() -> None:
    config = FusionConfig(cos_power=1.0, mirror_angle=60.0, seam_sigma=0.0)  # trusted from weight 0.5 up
    best = torch.tensor([[0.0, 0.1, 0.25, 0.5, 0.9, 0.1, 0.2]])
    mirror_best = torch.tensor([[0.2, 0.9, 0.9, 0.9, 0.95, 0.05, 0.25]])
    available = torch.ones(1, 7, dtype=torch.bool)
    share = mirror_blend(best, mirror_best, available, available, config)
    # unseen -> all mirror; seen at trust 0.2 / 0.5 with a trusted mirror -> (0.8 - 0.25) / 0.75 and
    # (0.5 - 0.25) / 0.75; trusted -> own; mirror seen worse -> own; both oblique and alike -> own
    torch.testing.assert_close(share, torch.tensor([[1.0, 0.55 / 0.75, 0.25 / 0.75, 0.0, 0.0, 0.0, 0.0]]))
    assert (mirror_blend(best, mirror_best, ~available, available, config) == 0).all()


def test_push_pull_keeps_known_texels_and_reproduces_a_constant() -> None:
    known = torch.rand(256, 256) < 0.05
    texture = torch.rand(3, 256, 256)
    filled = push_pull(texture, known)
    assert torch.equal(filled[:, known], texture[:, known])
    assert filled.min() >= texture[:, known].min() - 1e-6 and filled.max() <= texture[:, known].max() + 1e-6
    constant = torch.tensor([0.2, 0.5, 0.7])[:, None, None].expand(3, 256, 256)
    torch.testing.assert_close(push_pull(constant * known, known), constant)
    with pytest.raises(ValueError, match="known texel"):
        push_pull(texture, torch.zeros(256, 256, dtype=torch.bool))


def test_vertex_colours_read_the_texture_at_their_uv() -> None:
    texture = torch.zeros(3, 256, 256)
    texture[0, :128] = 1.0  # top half (v > 0.5) red
    colours = texture_to_vertex_colors(texture, torch.tensor([[0.3, 0.8], [0.3, 0.2]]))
    torch.testing.assert_close(colours, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_layout_uv_is_3ddfa_v2_process_uv() -> None:
    # process_uv: (u, v) -> column u (S - 1), row S - v (S - 1) - 1, texel centres on integers
    uv = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.3, 0.8]])
    laid = layout_uv(uv, 256)
    column, row = laid[:, 0] * 256 - 0.5, (1 - laid[:, 1]) * 256 - 0.5  # OBJ-style -> texel index coordinates
    torch.testing.assert_close(column, uv[:, 0] * 255)
    torch.testing.assert_close(row, 256 - uv[:, 1] * 255 - 1)
    torch.testing.assert_close(layout_uv(uv, (128, 256))[:, 1], (uv[:, 1] * 127 + 0.5) / 128)


def test_a_known_vertex_lands_on_the_texel_process_uv_gives_it() -> None:
    """A vertex at uv (100/255, 55/255) must be texel (row 200, col 100) of a 256 map, as 3DDFA_V2 lays it."""
    size, (column, row) = 256, (100, 200)
    centre = torch.tensor([column / (size - 1), 1 - row / (size - 1)])
    ring = torch.tensor([[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0],
                         [-1.0, 0.0]])
    uv = torch.cat([centre[None], centre + 0.04 * ring])
    vertices = torch.cat([torch.zeros(1, 2), ring], dim=0)
    vertices = torch.cat([vertices, torch.zeros(9, 1)], dim=1)
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % 8] for i in range(8)])  # a fan around the centre vertex, CCW
    screen = _frontal(vertices, size=128, scale=40.0)
    ys, xs = torch.meshgrid(torch.arange(128.0) + 0.5, torch.arange(128.0) + 0.5, indexing="ij")
    image = torch.stack([xs / 128, ys / 128, torch.zeros_like(xs)])  # a linear ramp: bilinear reads are exact
    fused = fuse_texture(image[None], screen[None], faces, uv, size, config=FusionConfig(silhouette_margin=0.0))
    expected = torch.tensor([screen[0, 0] / 128, screen[0, 1] / 128, 0.0])
    torch.testing.assert_close(fused.texture[:, row, column], expected, atol=1e-5, rtol=0)
    # one texel over is a different colour: the centre vertex is not a texel off
    assert (fused.texture[:, row, column + 1] - expected).abs().max() > 1e-3
    torch.testing.assert_close(texture_to_vertex_colors(fused.texture, uv[:1])[0], expected, atol=1e-5, rtol=0)


def test_bad_inputs_raise_clear_errors() -> None:
    vertices, faces, uv = _two_quads()
    with pytest.raises(ValueError, match=r"\[256, 2048\]"):
        build_uv_chart(uv, faces, 128)
    with pytest.raises(ValueError, match="one projection per image"):
        fuse_texture(torch.rand(2, 3, 64, 64), _frontal(vertices)[None], faces, uv, 256)


# --- the ground-truth proof on the real Surrey Face Model -------------------------------------------------

IMAGE_SIZE, TEXTURE_SIZE = 512, 256
YAWS = (-45.0, -20.0, 0.0, 20.0, 45.0)


@pytest.fixture(scope="module")
def sfm(shared_assets: Path) -> MorphableModel:
    return MorphableModel.from_sfm(shared_assets / "sfm" / "sfm_3448.npz")


def _render_sfm_mean(
    model: MorphableModel, texture: torch.Tensor, yaws: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SFM mean face rendered with ``texture`` at ``yaws``: images (K, 3, S, S) and screen vertices (K, V, 3)."""
    count = len(yaws)
    rotation = euler_to_rotation(torch.tensor(yaws), torch.zeros(count), torch.zeros(count))
    height = float(model.mean[:, 1].amax() - model.mean[:, 1].amin())
    scale = torch.full((count,), 0.8 * IMAGE_SIZE / height)
    centre = (model.mean.amax(dim=0) + model.mean.amin(dim=0)) / 2
    screen = project((model.mean - centre)[None].expand(count, -1, -1), rotation, scale,
                     torch.full((count, 2), IMAGE_SIZE / 2))
    # the truth is a map in process_uv layout, as fusion makes them
    uv = layout_uv(model.uv, tuple(texture.shape[-2:]))
    images, _ = render_textured(screen, model.triangles, uv, texture[None], IMAGE_SIZE)
    return images, screen


def _psnr(estimate: torch.Tensor, truth: torch.Tensor, where: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (estimate - truth).square().mean(dim=0)[where].mean()))


def test_recovers_a_known_texture_from_five_views(sfm: MorphableModel) -> None:
    truth = checkerboard_texture(TEXTURE_SIZE)
    images, screen = _render_sfm_mean(sfm, truth, YAWS)
    fused = fuse_texture(images, screen, sfm.triangles, sfm.uv, TEXTURE_SIZE, sfm.symmetry)
    psnr = _psnr(fused.texture, truth, fused.coverage)
    print(f"\nfive views: PSNR {psnr:.2f} dB on the {fused.fraction(TexelSource.VIEW):.1%} of the chart seen")
    assert psnr >= 30.0
    assert fused.fraction(TexelSource.VIEW) > 0.95
    torch.testing.assert_close(fused.blend_weight.sum(dim=0)[fused.coverage], torch.ones(int(fused.coverage.sum())))
    # the frontal view dominates the nose tip; the +x cheek is best seen with the nose turned to -x (yaw -45)
    nose = tuple(int(i) for i in _texel_of(sfm, int(sfm.mean[:, 2].argmax())))
    assert fused.view_weight[:, nose[0], nose[1]].argmax() == YAWS.index(0.0)
    cheek_vertex = int((sfm.mean - torch.tensor([60.0, 0.0, -40.0])).norm(dim=1).argmin())
    cheek = tuple(int(i) for i in _texel_of(sfm, cheek_vertex))
    assert fused.view_weight[:, cheek[0], cheek[1]].argmax() == YAWS.index(-45.0)


def _texel_of(model: MorphableModel, vertex: int) -> torch.Tensor:
    """(row, col) of the texel nearest a vertex in process_uv layout."""
    u, v = model.uv[vertex]
    return torch.tensor([round(float((1 - v) * (TEXTURE_SIZE - 1))), round(float(u * (TEXTURE_SIZE - 1)))])


def _symmetric_skin(size: int) -> torch.Tensor:
    """A known ``(3, size, size)`` skin-like map, mirror-symmetric under u -> 1 - u: smooth shading and fine,
    low-contrast detail (as skin has), so an unseen texel's mirror looks like what its own side shows."""
    index = torch.arange(size, dtype=torch.float64) / (size - 1)
    v, u = (1 - index[:, None]).expand(size, size), (index[None, :] - 0.5).abs().expand(size, size)
    detail = 0.03 * torch.sin(2 * math.pi * 20 * u) * torch.sin(2 * math.pi * 20 * v)
    return torch.stack([0.72 - 0.2 * u + detail, 0.52 - 0.1 * v - 0.1 * u + detail, 0.42 + 0.05 * v + detail]).float()


def test_one_view_fills_the_hidden_side_by_symmetry(sfm: MorphableModel) -> None:
    truth = _symmetric_skin(TEXTURE_SIZE)
    # near-frontal (a frontal view hides both sides alike, so mirroring has nothing to add there)
    images, screen = _render_sfm_mean(sfm, truth, (30.0,))
    fused = fuse_texture(images, screen, sfm.triangles, sfm.uv, TEXTURE_SIZE, sfm.symmetry)
    without = fuse_texture(images, screen, sfm.triangles, sfm.uv, TEXTURE_SIZE, None)
    seen = fused.fraction(TexelSource.VIEW)
    seen_or_mirrored = seen + fused.fraction(TexelSource.SYMMETRY)
    mirrored = fused.source == TexelSource.SYMMETRY
    psnr_mirrored = _psnr(fused.texture, truth, mirrored)
    print(f"\none view at yaw 30: {seen:.1%} of the chart seen, {seen_or_mirrored:.1%} seen or mirrored; "
          f"PSNR {_psnr(fused.texture, truth, fused.coverage):.2f} dB seen, {psnr_mirrored:.2f} dB mirrored, "
          f"{_psnr(fused.texture, truth, fused.source == TexelSource.INPAINTED):.2f} dB inpainted "
          f"({_psnr(without.texture, truth, mirrored):.2f} dB there without symmetry)")
    assert seen_or_mirrored >= seen + 0.20
    assert psnr_mirrored >= 30.0 and psnr_mirrored > _psnr(without.texture, truth, mirrored)
    assert without.fraction(TexelSource.SYMMETRY) == 0.0
    assert torch.equal(without.coverage, fused.coverage)
    # every chart texel ends up coloured, and nothing outside the chart and its gutter is
    assert (fused.source[fused.chart] != TexelSource.OUTSIDE).all()
    assert (fused.texture[:, fused.source == TexelSource.OUTSIDE] == 0).all()


def test_a_mirror_that_disagrees_never_replaces_what_a_view_saw(sfm: MorphableModel) -> None:
    """One view at yaw 45 of a face whose two halves differ in colour (u < 0.5 red-brown, u > 0.5 blue-grey):
    every texel the view sees keeps its own half's colour, though the far side is seen obliquely and its mirror
    well; the texels no view saw do not take the mirror's colour either: near the seen ones it is not what their side
    shows, deeper in the hole only the mirror's detail (here none) is copied, at the level of their own side."""
    truth = torch.empty(3, TEXTURE_SIZE, TEXTURE_SIZE)
    truth[:, :, : TEXTURE_SIZE // 2] = torch.tensor([0.7, 0.45, 0.35])[:, None, None]
    truth[:, :, TEXTURE_SIZE // 2:] = torch.tensor([0.35, 0.45, 0.7])[:, None, None]
    images, screen = _render_sfm_mean(sfm, truth, (45.0,))
    fused = fuse_texture(images, screen, sfm.triangles, sfm.uv, TEXTURE_SIZE, sfm.symmetry)
    away_from_midline = torch.zeros_like(fused.coverage)
    away_from_midline[:, : TEXTURE_SIZE // 2 - 4] = True
    away_from_midline[:, TEXTURE_SIZE // 2 + 4:] = True
    seen = fused.coverage & away_from_midline
    unseen = fused.chart & ~fused.coverage & away_from_midline
    error = (fused.texture - truth).abs().amax(dim=0)
    print(f"\nasymmetric face at yaw 45: {float((error[seen] < 0.05).float().mean()):.2%} of seen texels and "
          f"{float((error[unseen] < 0.05).float().mean()):.2%} of unseen ones keep their side's colour; "
          f"{fused.fraction(TexelSource.SYMMETRY):.1%} of the chart mirrored")
    assert (error[seen] < 0.05).float().mean() > 0.99
    assert unseen.sum() > 1000 and (error[unseen] < 0.05).float().mean() > 0.99


def test_silhouette_falloff_is_the_box_filtered_mask_ramp_at_pixel_centres() -> None:
    """At pixel centres the falloff is clamp(2 * (box mean of the mask, zero outside) - 1, 0, 1), brute force."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[8:33, 10:44] = True
    mask[20:24, 30:36] = False
    mask |= torch.rand(40, 50, generator=generator) > 0.97
    rows, cols = torch.meshgrid(torch.arange(40), torch.arange(50), indexing="ij")
    points = torch.stack([cols + 0.5, rows + 0.5], -1).float()
    radius = 3  # round(0.06 * 50)
    padded = torch.nn.functional.pad(mask.float(), (radius, radius, radius, radius))
    expected = torch.stack([torch.stack([padded[i:i + 2 * radius + 1, j:j + 2 * radius + 1].mean() for j in range(50)])
                            for i in range(40)])
    torch.testing.assert_close(silhouette_falloff(mask, points, 0.06), ((expected - 0.5) * 2).clamp(0, 1),
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------- known texture on the real BFM mean face

BFM_IMAGE, BFM_TEXTURE = 448, 256
# (yaw, pitch) in the project's convention (3DDFA_V2's yaw is the negative), the frontal view first
BFM_VIEWS = ((0.0, 0.0), (-75.0, 0.0), (-60.0, 15.0), (-45.0, -20.0), (-30.0, 10.0), (-15.0, -10.0), (0.0, 20.0),
             (0.0, -20.0), (15.0, 10.0), (30.0, -10.0), (45.0, 20.0), (60.0, -15.0), (75.0, 0.0))


def _smooth_skin(size: int) -> torch.Tensor:
    """A known ``(3, size, size)`` map in process_uv layout: skin-like colours and a 6 x 6 sinusoidal pattern."""
    index = torch.arange(size, dtype=torch.float64) / (size - 1)
    v, u = (1 - index[:, None]).expand(size, size), index[None, :].expand(size, size)
    pattern = 0.5 + 0.5 * torch.sin(2 * math.pi * 6 * u) * torch.sin(2 * math.pi * 6 * v)
    return torch.stack([0.55 + 0.3 * u * pattern, 0.35 + 0.3 * v * (1 - pattern), 0.25 + 0.35 * pattern * (1 - u)]).float()


def _official_image_points(poses: torch.Tensor, roi: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """3DDFA_V2's recon_vers + similar_transform written out, + 0.5 for our pixel centres; depth = -scaled z."""
    crop = points @ poses[:, :, :3].transpose(1, 2) + poses[:, None, :, 3]
    sx, sy, ex, ey = roi
    return torch.stack([(crop[..., 0] - 1) * (ex - sx) / 120 + sx + 0.5, (120 - crop[..., 1]) * (ey - sy) / 120 + sy + 0.5,
                        -crop[..., 2] * ((ex - sx) + (ey - sy)) / 240], dim=-1)


@dataclass
class BfmScene:
    """The BFM mean face in BFM_VIEWS, posed by 3DDFA_V2 62-parameter poses + one roi box, with a known texture."""

    model: MorphableModel
    poses: torch.Tensor  # (K, 3, 4) [s R | t]
    roi: torch.Tensor  # (4,)
    truth: torch.Tensor  # (3, T, T)
    screen: torch.Tensor  # (K, V, 3) official image points

    def render(self, background: torch.Tensor | None = None) -> torch.Tensor:
        """(K, 3, S, S) images of the scene over ``background`` (3,) (black if None)."""
        uv = (self.model.uv.double() * (BFM_TEXTURE - 1) + 0.5) / BFM_TEXTURE  # process_uv positions, OBJ-style
        backdrop = None if background is None else background[None, :, None, None].expand(
            len(BFM_VIEWS), 3, BFM_IMAGE, BFM_IMAGE)
        return render_textured(self.screen.float(), self.model.triangles, uv.float(), self.truth[None], BFM_IMAGE,
                               background=backdrop)[0]


@pytest.fixture(scope="module")
def bfm_scene(shared_assets: Path) -> BfmScene:
    bfm = shared_assets / "bfm"
    model = MorphableModel.from_bfm_mean(bfm / "bfm_noneck_mean.npz", bfm / "BFM_UV.mat", bfm / "indices.npy")
    mean = model.mean.double()
    centre = (mean.amax(dim=0) + mean.amin(dim=0)) / 2
    scale = 0.75 * 120 / float(mean[:, 1].amax() - mean[:, 1].amin())
    poses = []  # the 12 pose parameters of 3DDFA_V2, [s R | t], putting the face in the middle of the crop
    for yaw, pitch in BFM_VIEWS:
        rotation = euler_to_rotation(yaw, pitch, 0.0).double()
        offset = torch.tensor([61.0, 58.0, 40.0], dtype=torch.float64) - scale * rotation @ centre
        poses.append(torch.cat([scale * rotation, offset[:, None]], dim=1))
    roi = torch.tensor([49.3, 35.6, 399.3, 385.6], dtype=torch.float64)  # a 350 px roi box, unrounded
    stacked = torch.stack(poses)
    return BfmScene(model, stacked, roi, _smooth_skin(BFM_TEXTURE), _official_image_points(stacked, roi, mean))


def _recovered_vertices(scene: BfmScene) -> torch.Tensor:
    """(K, V, 3) the mesh placed in each image through the public API from the 62-parameter poses and the roi."""
    return apply_pose(crop_pose_to_image(scene.poses, scene.roi.expand(len(BFM_VIEWS), 4)), scene.model.mean.double())


@pytest.mark.slow
def test_known_texture_on_the_bfm_mean_face_from_official_poses(bfm_scene: BfmScene) -> None:
    model, truth, screen = bfm_scene.model, bfm_scene.truth, bfm_scene.screen
    images = bfm_scene.render()

    # recovered through the public API from the images, the 62-parameter poses and the roi boxes
    recovered = _recovered_vertices(bfm_scene)
    torch.testing.assert_close(recovered[..., :2], screen[..., :2], atol=1e-9, rtol=0)
    fused = fuse_texture(images, recovered.float(), model.triangles, model.uv, BFM_TEXTURE, model.symmetry)
    seen = fused.visibility.any(dim=0) & fused.chart
    frontal = fuse_texture(images[:1], recovered[:1].float(), model.triangles, model.uv, BFM_TEXTURE, model.symmetry)
    frontal_seen = frontal.visibility[0] & frontal.chart
    psnr, frontal_psnr = _psnr(fused.texture, truth, seen), _psnr(frontal.texture, truth, frontal_seen)
    print(f"\nBFM mean face, {len(BFM_VIEWS)} views: PSNR {psnr:.2f} dB on texels any view sees "
          f"({_psnr(fused.texture, truth, fused.coverage):.2f} dB where weighted); frontal alone {frontal_psnr:.2f} dB "
          f"on the texels it sees ({_psnr(frontal.texture, truth, frontal.coverage):.2f} dB where weighted)")
    assert psnr >= 40.0 and frontal_psnr >= 30.0


MAGENTA, HAIR = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.08, 0.06, 0.05])


def _tainted(texture: torch.Tensor, truth: torch.Tensor, colour: torch.Tensor, where: torch.Tensor) -> float:
    """Share of the ``where`` texels that took ``colour``: the least-squares share ``a`` of it in
    ``texture = (1 - a) truth + a colour + error`` is 10% or more."""
    towards = colour[:, None, None] - truth
    share = ((texture - truth) * towards).sum(dim=0) / towards.square().sum(dim=0)
    return float((share[where] >= 0.1).float().mean())


def _grown(screen: torch.Tensor, factor: float) -> torch.Tensor:
    """(K, V, 3) each view's mesh scaled by ``factor`` in x, y about its centroid: a fit whose outline overhangs."""
    centre = screen[..., :2].mean(dim=1, keepdim=True)
    return torch.cat([centre + factor * (screen[..., :2] - centre), screen[..., 2:]], dim=-1)


@pytest.mark.slow
def test_only_skin_feeds_the_bfm_texture_over_magenta_with_hair(bfm_scene: BfmScene) -> None:
    """Magenta background and a dark "hair" band over the forehead in every other view (the frontal one too):
    under 0.5% of the texels any view sees take either colour, with an exact fit and with one whose outline
    overhangs the face by 2%; without masks and outlier rejection far more do. On the clean scene the
    known-texture targets still hold with skin masks."""
    model, truth = bfm_scene.model, bfm_scene.truth
    recovered = _recovered_vertices(bfm_scene).float()
    images = bfm_scene.render(MAGENTA)
    landmarks = recovered[:, model.landmark_vertices[model.landmark_ids.argsort()], :2]
    for view in range(0, len(BFM_VIEWS), 2):
        top, brow = float(recovered[view, :, 1].min()), float(landmarks[view, 17:27, 1].min())
        images[view, :, int(top) - 5: int(top + 0.8 * (brow - top))] = HAIR[:, None, None]
    plain = FusionConfig(outlier_z=0.0)
    for growth in (1.0, 1.02):
        screen = _grown(recovered, growth)
        masks = skin_masks(model, images, screen, FusionConfig())
        assert masks is not None
        fused = fuse_texture(images, screen, model.triangles, model.uv, BFM_TEXTURE, model.symmetry, FusionConfig(),
                             masks)
        before = fuse_texture(images, screen, model.triangles, model.uv, BFM_TEXTURE, model.symmetry, plain)
        seen = fused.visibility.any(dim=0) & fused.chart
        after = [_tainted(fused.texture, truth, colour, seen) for colour in (MAGENTA, HAIR)]
        unmasked = [_tainted(before.texture, truth, colour, seen) for colour in (MAGENTA, HAIR)]
        print(f"\nmesh grown {growth:.2f}: texels taking magenta / hair {after[0]:.2%} / {after[1]:.2%} "
              f"(without masks or outlier rejection {unmasked[0]:.2%} / {unmasked[1]:.2%}); PSNR "
              f"{_psnr(fused.texture, truth, seen):.2f} dB (without {_psnr(before.texture, truth, seen):.2f} dB)")
        assert max(after) < 0.005 and unmasked[1] > 0.05

    clean = bfm_scene.render()
    masks = skin_masks(model, clean, recovered, FusionConfig())
    assert masks is not None
    fused = fuse_texture(clean, recovered, model.triangles, model.uv, BFM_TEXTURE, model.symmetry, FusionConfig(), masks)
    frontal = fuse_texture(clean[:1], recovered[:1], model.triangles, model.uv, BFM_TEXTURE, model.symmetry,
                           FusionConfig(), masks[:1])
    psnr = _psnr(fused.texture, truth, fused.visibility.any(dim=0) & fused.chart)
    frontal_psnr = _psnr(frontal.texture, truth, frontal.visibility[0] & frontal.chart)
    print(f"clean scene with skin masks: {psnr:.2f} dB any view, {frontal_psnr:.2f} dB frontal alone")
    assert psnr >= 40.0 and frontal_psnr >= 30.0


def _temple_letters(model: MorphableModel, size: int, side: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(size, size)`` bool: the word "PORSCHE DESIGN" (Pillow's own font) written on the temple at model x of sign
    ``side``, in process_uv layout; and the texel (row, col) of that temple's centre."""
    from PIL import Image, ImageDraw, ImageFont

    mean = model.mean
    eyes = mean[model.landmark_vertices[(model.landmark_ids >= 36) & (model.landmark_ids < 48)]]
    half_width = float(mean[:, 0].abs().max())
    target = torch.tensor([side * 0.72 * half_width, float(eyes[:, 1].mean()) + 0.25 * half_width,
                           float(mean[:, 2].max())])
    front = mean[:, 2] > float(mean[:, 2].min() + 0.3 * (mean[:, 2].max() - mean[:, 2].min()))
    vertex = int(torch.where(front, (mean[:, :2] - target[:2]).norm(dim=1), float("inf")).argmin())
    u, v = (float(c) for c in model.uv[vertex])
    row, col = round((1 - v) * (size - 1)), round(u * (size - 1))
    canvas = Image.new("L", (size, size), 0)
    font = ImageFont.load_default(size=max(8, size // 16))
    draw = ImageDraw.Draw(canvas)
    for line, text in enumerate(("PORSCHE", "DESIGN")):
        box = draw.textbbox((0, 0), text, font=font)
        draw.text((col - (box[2] - box[0]) // 2, row - (box[3] - box[1]) + line * (box[3] - box[1] + 2)), text,
                  fill=255, font=font)
    import numpy as np

    return torch.from_numpy(np.asarray(canvas) > 127), (row, col)


@pytest.mark.slow
def test_letters_on_one_temple_are_not_copied_to_the_hidden_one(bfm_scene: BfmScene) -> None:
    """A symmetric skin map with dark letters (0.5 darker than the skin) on one temple, one view turned so that this
    temple is seen and the other hidden: the other temple gets no mirrored copy of the letters, not even a faint rim
    (within 0.1 of the plain skin, whose own detail is +-0.03, there and two texels around), while the rest of the
    hidden side, whose mirror looks like skin, is still mirrored."""
    model = bfm_scene.model
    skin = _symmetric_skin(BFM_TEXTURE)
    letters, (row, col) = _temple_letters(model, BFM_TEXTURE, side=-1.0)
    truth = torch.where(letters, torch.tensor([0.12, 0.1, 0.1])[:, None, None], skin)
    mean = model.mean.double()
    centre = (mean.amax(dim=0) + mean.amin(dim=0)) / 2
    scale = 0.75 * 120 / float(mean[:, 1].amax() - mean[:, 1].amin())
    rotation = euler_to_rotation(60.0, 0.0, 0.0).double()  # the -x temple faces the camera, the +x one is hidden
    pose = torch.cat([scale * rotation, (torch.tensor([61.0, 58.0, 40.0], dtype=torch.float64)
                                         - scale * rotation @ centre)[:, None]], dim=1)[None]
    screen = _official_image_points(pose, bfm_scene.roi, mean).float()
    uv = (model.uv.double() * (BFM_TEXTURE - 1) + 0.5) / BFM_TEXTURE
    image = render_textured(screen, model.triangles, uv.float(), truth[None], BFM_IMAGE)[0]
    fused = fuse_texture(image, screen, model.triangles, model.uv, BFM_TEXTURE, model.symmetry)

    mirror_letters = letters.flip(-1)  # BFM_UV is symmetric about u = 0.5 up to a texel
    grown = torch.nn.functional.max_pool2d(mirror_letters[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
    other_temple = grown & fused.chart
    hidden_temple = other_temple & ~fused.coverage
    seen_letters = letters & fused.coverage
    error = (fused.texture - skin).abs().amax(dim=0)
    hidden_side = fused.chart & ~fused.coverage
    print(f"\nletters on one temple: {int(seen_letters.sum())} letter texels seen; the other temple's "
          f"{int(other_temple.sum())} texels under their mirror image ({int(hidden_temple.sum())} hidden) differ from "
          f"plain skin by at most {float(error[other_temple].max()):.3f}; "
          f"{float((fused.source[hidden_side] == TexelSource.SYMMETRY).float().mean()):.1%} of the hidden side mirrored")
    assert seen_letters.sum() > 0.8 * letters.sum()  # the letters are seen on their temple ...
    assert hidden_temple.sum() > 0.8 * mirror_letters.sum()  # ... and their mirror image is hidden
    assert float(error[other_temple].max()) < 0.1
    assert (fused.source[hidden_side] == TexelSource.SYMMETRY).float().mean() > 0.5
