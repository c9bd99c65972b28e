"""Multi-view UV texture fusion: per-view sampling, visibility, view weights, blending, symmetry, inpainting.

For one mesh seen in K images (the same vertices, K screen-space projections):

1. UV chart. The mesh is rasterised in UV space once: every texel inside the chart knows its
   triangle and barycentrics, hence (per view) its screen position, depth and normal.
2. Visibility. A texel is visible in a view when its depth is within a tolerance of that view's
   z-buffer at the pixel it lands on. The tolerance is ``depth_tolerance`` pixels plus the depth
   change across half a pixel on the texel's own surface (from its normal), so sloped but visible
   surfaces pass while surfaces behind another one (by more than that) fail.
3. View weight. ``cos(theta)^cos_power`` where ``theta`` is the angle between the outward normal and
   the direction to the viewer (weak perspective: the same for every pixel): it falls smoothly to 0 at
   grazing angles, with no cut-off, so a view alone keeps every texel it sees while, where several views see
   a texel, the best-facing ones dominate (at 75 deg a view weighs 1.7% of a frontal one, at 85 deg 0.07%).
   Next to the view's mesh silhouette the weight ramps down over ``silhouette_margin`` of the face's size to
   ``edge_floor`` of itself: the margin is the outline's uncertainty (3DDFA_V2's landmark error, NME 3.5% of
   the face box on AFLW2000-3D), where pixels may be background; the floor keeps a texel no other view sees.
4. Sampling. The image is read bilinearly at the texel's screen position with ``grid_sample``;
   screen x maps to ``2 x / W - 1`` with ``align_corners=False``, which puts pixel ``j``'s centre at
   ``x = j + 0.5`` as the rasteriser does. Only pixels the mesh covers in that view enter the
   bilinear average (weights renormalised), so texels at the silhouette do not take background colour;
   with per-view masks (``face_mask``: face skin only), only masked pixels enter it, and texels whose
   footprint is mostly outside the mask lose their weight (hair, background, mouth interior feed nothing).
   Outliers: where three or more views see a texel, a sample far (robust z-score) from the views'
   weighted median is dropped (``view_outliers.reject_outliers``), so an occluder one view shows does not bleed in.
5. Seam-free blending: each view's weight is feathered (:func:`feather`) so that it rises from
   ``edge_floor`` at the border of where the view is usable (occlusion, mask, image edge: the places where a
   weight would jump) over ``feather_width`` of the map; then (the OSTeC idea, soft) the per-view weights are
   normalised to sum to 1, blurred (``seam_sigma``), cut back to where each view is valid and renormalised.
   The blend then changes smoothly across the border between two views instead of switching at a texel,
   while a view never contributes where it is occluded.
   The map is laid out as 3DDFA_V2's ``process_uv`` lays it (:func:`layout_uv`): a vertex with
   texture coordinates ``(u, v)`` sits on texel column ``u (T - 1)``, row ``(1 - v)(T - 1)``, so a BFM
   map is interchangeable with 3DDFA_V2's ``uv_tex`` (and 3D-GANTex's) without resampling.
6. Symmetry. Each texel's mirror texel is found by interpolating the UVs of the mirror vertices
   (``symmetry``) of its triangle with its barycentrics. Texels seen only obliquely (beyond
   ``mirror_angle``) whose mirror was seen more frontally blend toward it smoothly (:func:`mirror_blend`)
   where the mirror's colour agrees with their own (within ``mirror_tolerance``). A texel no view saw
   copies its mirror only where that is *confirmed* (:func:`confirmed_mirror`): the mirror was seen, and
   it looks like what this side's neighbourhood shows (its shading, blurred, within
   ``symmetry_shading_tolerance`` of the smooth fill from this side's seen texels, and, outside the
   anatomically symmetric features (eyes, brows, nose, lips: ``symmetric_features``), each texel within
   ``symmetry_tolerance`` of it), so text, logos, a parting or a one-sided shadow are never copied across.
7. Inpainting. Chart texels still empty (and a thin gutter outside the chart, so bilinear and mipmapped
   lookups at the chart border stay clean) are filled by a guided membrane (``inpaint.membrane_fill``):
   smooth where nothing is confirmed, the mirror's gradients where it is, and in both cases starting exactly
   at the colours of the seen texels around the hole, so neither the mirror nor the fill leaves a step.

Everything numerically delicate (depth test, weights) runs in fp32 whatever the inputs' dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from facetex.face3d.geometry import vertex_normals
from facetex.face3d.inpaint import membrane_fill
from facetex.face3d.rasterizer import Fragments, interpolate, rasterize, rasterize_uv
from facetex.face3d.view_outliers import reject_outliers

MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE = 256, 2048
MIRROR_TRUST_MARGIN = 0.25  # a mirror must be trusted this much more than the texel before it is used
MIN_COSINE = math.cos(math.radians(89.0))  # the visibility test's slope term is bounded there


class TexelSource(IntEnum):
    """Where a texel's colour came from (values of :attr:`FusedTexture.source`)."""

    OUTSIDE = 0  # outside the UV chart (and its gutter): left black
    VIEW = 1  # blended from the views that see it
    SYMMETRY = 2  # taken (more than half) from its mirror texel
    INPAINTED = 3  # filled smoothly from the seen texels around (chart holes and the gutter)


@dataclass
class FusionConfig:
    """Knobs of :func:`fuse_texture`; the defaults suit 256-2048 texel maps of a face seen at 256-1024 px.

    Attributes:
        cos_power: exponent p of the view weight cos(theta)^p (higher = trust frontal views more).
        depth_tolerance: screen-depth slack in pixels of the visibility test (plus the texel's own slope).
        seam_sigma: Gaussian sigma in texels for blurring the normalised weight maps, as a fraction of T.
        silhouette_margin: width of the weight ramp inside each view's mesh silhouette, fraction of the face's
            size in that view (the square root of the pixels its mesh covers).
        edge_floor: the weight factor at a view's silhouette and at the border of where it is usable (occlusion,
            mask): > 0, so a texel only that view sees keeps its colour.
        feather_width: width of the weight ramp from the border of where a view is usable, fraction of T.
        mirror_angle: degrees; texels no view sees more frontally than this lean on their mirror texel
            when that one is seen better (see :func:`mirror_blend`).
        gutter: texels of inpainted padding around the chart.
        mirror_tolerance: colour difference (largest channel, [0, 1]) up to which a texel seen obliquely may lean
            on its mirror; the lean fades out by twice this, so a mirror that disagrees (asymmetric lighting, text,
            a one-sided occluder) never replaces what a view saw.
        symmetry_tolerance: largest-channel difference up to which an unseen texel's mirror counts as what this
            side's neighbourhood shows (:func:`confirmed_mirror`), outside the symmetric features.
        symmetry_shading_tolerance: the same for the mirror's blurred colour (shading), everywhere.
        skin_mask: in ``reconstruction.texture_views``, feed only each view's face-skin pixels to the texture
            (``face_mask.face_skin_mask``: mesh coverage minus mouth interior minus pixels far from skin colour).
        skin_threshold: Mahalanobis distance to the view's skin-colour model beyond which a pixel is not skin.
        skin_erosion: pixels eroded off every border of the skin mask (drops pixels mixing skin and the rest).
        outlier_z: a texel's view sample farther than this many robust deviations from the weighted median of
            its views is dropped (``view_outliers.reject_outliers``; needs 3 or more views; 0 = keep every sample).
        outlier_floor: the smallest robust deviation, colour units in [0, 1] (views that agree closely do
            not drop each other for tiny shading differences).
    """

    cos_power: float = 3.0
    silhouette_margin: float = 0.035
    edge_floor: float = 1e-3
    feather_width: float = 1.0 / 64.0
    mirror_angle: float = 60.0
    depth_tolerance: float = 1.0
    seam_sigma: float = 1.0 / 128.0
    gutter: int = 2
    mirror_tolerance: float = 0.1
    symmetry_tolerance: float = 0.1
    symmetry_shading_tolerance: float = 0.06
    skin_mask: bool = True
    skin_threshold: float = 5.0
    skin_erosion: int = 1
    outlier_z: float = 3.0
    outlier_floor: float = 0.05


@dataclass
class FusedTexture:
    """Result of :func:`fuse_texture` for a ``T x T`` map seen in K views.

    texture: ``(3, T, T)`` float in [0, 1] in 3DDFA_V2's ``process_uv`` layout (:func:`layout_uv`; row 0 = v = 1).
    chart: ``(T, T)`` bool, texels inside the UV chart.
    coverage: ``(T, T)`` bool, texels seen by at least one view.
    view_weight: ``(K, T, T)`` each view's weight (cos^p, silhouette falloff; 0 where not visible).
    blend_weight: ``(K, T, T)`` the share of each view after seam smoothing (sums to 1 where covered).
    visibility: ``(K, T, T)`` bool, texel inside the view's image and not occluded in it.
    source: ``(T, T)`` uint8 :class:`TexelSource` of each texel.
    """

    texture: Tensor
    chart: Tensor
    coverage: Tensor
    view_weight: Tensor
    blend_weight: Tensor
    visibility: Tensor
    source: Tensor

    def fraction(self, source: TexelSource) -> float:
        """Share of the chart's texels whose colour came from ``source``."""
        return float((self.source[self.chart] == source).float().mean())


@dataclass
class UVChart:
    """A mesh's UV layout rasterised at ``T x T``: what every texel lies on.

    fragments: :class:`Fragments` of batch 1 from ``rasterize_uv``.
    mirror_uv: ``(T, T, 2)`` UV of each texel's mirror point (NaN where no symmetry is given or off-chart).
    """

    fragments: Fragments
    mirror_uv: Tensor

    @property
    def mask(self) -> Tensor:
        """``(T, T)`` bool, texels inside the chart."""
        return self.fragments.mask[0]


def layout_uv(uv: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Texture coordinates ``(..., 2)`` (v up) -> where 3DDFA_V2's ``process_uv`` puts them in a map of ``size``.

    ``process_uv`` scales u, v by ``S - 1`` and flips v, with texel centres on integers: ``(u, v)`` lands on
    column ``u (W - 1)``, row ``(1 - v)(H - 1)``. Returned as OBJ/OpenGL-style coordinates (texel ``j``'s
    centre at ``(j + 0.5) / W``), i.e. ``(u (W - 1) + 0.5) / W``, so every sampler and rasteriser of the
    project (and any OBJ viewer given them as ``vt``) reads such a map where 3DDFA_V2 wrote it.
    ``size`` is ``T`` for a square map or ``(H, W)``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    scale = uv.new_tensor([(width - 1) / width, (height - 1) / height])
    return uv * scale + uv.new_tensor([0.5 / width, 0.5 / height])


def build_uv_chart(uv: Tensor, faces: Tensor, size: int, symmetry: Tensor | None = None) -> UVChart:
    """Rasterise ``uv`` ``(V, 2)`` (v up, OBJ-style, e.g. from :func:`layout_uv`) over ``faces`` ``(F, 3)`` at ``size x size`` texels.

    With ``symmetry`` ``(V,)`` (mirror vertex of each vertex), also finds every texel's mirror UV.
    """
    if not MIN_TEXTURE_SIZE <= size <= MAX_TEXTURE_SIZE:
        raise ValueError(f"texture size must be in [{MIN_TEXTURE_SIZE}, {MAX_TEXTURE_SIZE}], got {size}")
    uv = uv.float()
    fragments = rasterize_uv(uv, faces, size)
    if symmetry is None:
        mirror_uv = uv.new_full((size, size, 2), float("nan"))
    else:
        if symmetry.shape != (uv.shape[0],):
            raise ValueError(
                f"symmetry must list one mirror vertex per vertex, shape ({uv.shape[0]},), got {tuple(symmetry.shape)}"
            )
        mirror_uv = interpolate(uv[symmetry.long()][None], faces, fragments)[0]
        mirror_uv[~fragments.mask[0]] = float("nan")
    return UVChart(fragments=fragments, mirror_uv=mirror_uv)


def _screen_to_grid(points: Tensor, height: int, width: int) -> Tensor:
    """Screen x, y (pixels, centres at +0.5) -> grid_sample coordinates for ``align_corners=False``."""
    return torch.stack([2.0 * points[..., 0] / width - 1.0, 2.0 * points[..., 1] / height - 1.0], dim=-1)


def _uv_to_grid(uv: Tensor) -> Tensor:
    """UV (v up) -> grid_sample coordinates over a texture whose row 0 is v = 1 (``align_corners=False``)."""
    return torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1)


def sample_view(
    image: Tensor, screen_vertices: Tensor, faces: Tensor, chart: UVChart, config: FusionConfig = FusionConfig(),
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """What one view tells about every texel.

    image: ``(3, H, W)`` float in [0, 1]; screen_vertices: ``(V, 3)`` this view's projection
    (``camera.project``: x right, y down, depth smaller = nearer); faces: ``(F, 3)``; mask: ``(H, W)`` bool,
    the pixels allowed to feed the texture (e.g. ``face_mask.face_skin_mask``), None = every pixel.
    Returns colour ``(3, T, T)``, visibility ``(T, T)`` bool and view weight ``(T, T)`` (0 where not visible;
    with a mask, ramped to 0 where the mask allows under half of the mesh pixels of the texel's bilinear footprint).
    """
    height, width = image.shape[-2:]
    screen = screen_vertices.float()[None]  # (1, V, 3)
    texel_points = interpolate(screen, faces, chart.fragments)[0]  # (T, T, 3)
    normals = interpolate(vertex_normals(screen, faces), faces, chart.fragments)[0]
    normals = F.normalize(normals, dim=-1)
    # outward normals facing the viewer point to smaller depth: cos(theta) = -n_depth
    cosine = -normals[..., 2]

    zbuffer = rasterize(screen, faces, (height, width)).depth[0]  # (H, W), +inf where empty
    col = texel_points[..., 0].floor().long()
    row = texel_points[..., 1].floor().long()
    inside = chart.mask & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    surface_depth = zbuffer[row.clamp(0, height - 1), col.clamp(0, width - 1)]
    slope = (normals[..., 0].abs() + normals[..., 1].abs()) / cosine.abs().clamp_min(MIN_COSINE)
    tolerance = config.depth_tolerance + 0.5 * slope
    visibility = inside & torch.isfinite(surface_depth) & (texel_points[..., 2] <= surface_depth + tolerance)

    weight = torch.where(visibility & (cosine > 0), cosine.clamp_min(0.0) ** config.cos_power, 0.0)
    covered = torch.isfinite(zbuffer)
    margin = config.silhouette_margin * float(covered.sum()) ** 0.5 / max(height, width)
    weight = weight * silhouette_falloff(covered, texel_points[..., :2], margin).clamp_min(config.edge_floor)
    grid = _screen_to_grid(texel_points[..., :2], height, width)[None]
    # bilinear over the pixels the mesh covers only: at the silhouette the background does not bleed in
    allowed = covered
    if mask is not None:
        if mask.shape != covered.shape:
            raise ValueError(f"mask must be (H, W) = {tuple(covered.shape)} like its image, got {tuple(mask.shape)}")
        allowed = covered & mask.bool()
    stacked = torch.cat([image.float() * allowed, allowed[None], covered[None]])[None]
    sampled = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    colour = sampled[:3] / sampled[3:4].clamp_min(1e-6)
    if mask is not None:  # the share of the footprint's mesh pixels the mask allows
        share = sampled[3] / sampled[4].clamp_min(1e-6)
        weight = weight * ((share - 0.5) * 2.0).clamp(0.0, 1.0)
    return colour, visibility, weight


def silhouette_falloff(mask: Tensor, points: Tensor, margin: float) -> Tensor:
    """Weight factor ``(T, T)`` rising linearly from 0 on the mesh's silhouette to 1 at ``margin`` inside.

    mask: ``(H, W)`` bool, pixels the mesh covers in this view; points: ``(T, T, 2)`` screen x, y of the
    texels; margin: the ramp's width as a fraction of the image's larger side (0 = no falloff). Pixels at
    the silhouette mix face and background, and a fitted mesh rarely matches the real outline, so views
    are trusted less there (other views, or the mirror, take over).
    """
    radius = round(margin * max(mask.shape))
    if radius < 1:
        return torch.ones(points.shape[:-1], dtype=points.dtype, device=points.device)
    window = 2 * radius + 1  # a box filter, as a row pass then a column pass (33x faster than one 2-D pool)
    inside = F.avg_pool2d(mask[None, None].to(points.dtype), (1, window), stride=1, padding=(0, radius),
                          count_include_pad=True)
    inside = F.avg_pool2d(inside, (window, 1), stride=1, padding=(radius, 0), count_include_pad=True)
    grid = _screen_to_grid(points, *mask.shape)[None]
    fraction = F.grid_sample(inside, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
    return ((fraction - 0.5) * 2.0).clamp(0.0, 1.0)


def blend_views(colours: Tensor, weights: Tensor, seam_sigma: float) -> tuple[Tensor, Tensor]:
    """Blend K views with seam smoothing.

    colours: ``(K, 3, T, T)``; weights: ``(K, T, T)`` raw view weights (0 = view unusable there);
    seam_sigma: blur of the normalised weight maps in texels (0 = no smoothing).
    Returns the blended texture ``(3, T, T)`` (0 where no view) and blend weights ``(K, T, T)``.
    """
    total = weights.sum(dim=0, keepdim=True)
    normalised = torch.where(total > 0, weights / total.clamp_min(1e-12), 0.0)
    if seam_sigma > 0:
        radius = max(1, math.ceil(3.0 * seam_sigma))
        blurred = kornia.filters.gaussian_blur2d(
            normalised[:, None], 2 * radius + 1, (seam_sigma, seam_sigma), border_type="constant"
        )[:, 0]
        normalised = torch.where(weights > 0, blurred, 0.0)
    blend_total = normalised.sum(dim=0, keepdim=True)
    blend = torch.where(blend_total > 0, normalised / blend_total.clamp_min(1e-12), 0.0)
    return (colours * blend[:, None]).sum(dim=0), blend


def sample_at_mirror(maps: Tensor, known: Tensor, chart: UVChart, min_support: float = 0.5) -> tuple[Tensor, Tensor]:
    """Read ``maps`` ``(C, T, T)`` at every texel's mirror point, using only ``known`` ``(T, T)`` texels.

    The value is the known-weighted bilinear average around the mirror point; it is ``available``
    where at least ``min_support`` of that bilinear footprint is known and the texel has a mirror.
    Returns ``(C, T, T)`` mirrored values and ``(T, T)`` bool availability.
    """
    has_mirror = chart.mask & torch.isfinite(chart.mirror_uv).all(dim=-1)
    grid = _uv_to_grid(torch.nan_to_num(chart.mirror_uv))[None]
    weighted = torch.cat([maps * known, known[None].to(maps.dtype)])[None]
    sampled = F.grid_sample(weighted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    support = sampled[-1]
    return sampled[:-1] / support.clamp_min(1e-12), has_mirror & (support >= min_support)


def mirror_blend(
    best_weight: Tensor, mirror_best_weight: Tensor, available: Tensor, chart_mask: Tensor, config: FusionConfig
) -> Tensor:
    """Share ``(T, T)`` in [0, 1] of each texel's colour to take from its mirror texel.

    best_weight, mirror_best_weight: ``(T, T)`` the largest view weight of the texel and of its mirror point;
    available: ``(T, T)`` bool, the mirror point was seen; chart_mask: ``(T, T)`` bool.
    A view is trusted fully at weights of at least ``cos(mirror_angle)^p``, less below (``trust = weight / that``,
    then the minimum with its Gaussian blur of ``seam_sigma`` inside the chart, so occlusion borders do not leave
    a hard seam). The share is 1 on texels no view saw and ``(trust(mirror) - trust(texel) - m) / (1 - m)``
    (clamped at 0, ``m = MIRROR_TRUST_MARGIN``) on the others: a texel leans on its mirror only as far as the
    mirror is clearly seen better, so two sides seen alike keep their own, possibly asymmetric, colours (and
    mirror maps that are off by a texel or two do no harm there).
    """
    confident = math.cos(math.radians(config.mirror_angle)) ** config.cos_power
    trust = (best_weight / confident).clamp(0.0, 1.0)
    sigma = config.seam_sigma * best_weight.shape[-1]
    if sigma > 0:  # blurred inside the chart only, so its outer border does not count as an occlusion
        radius = max(1, math.ceil(3.0 * sigma))
        inside = chart_mask[None, None].to(trust.dtype)
        stack = torch.cat([trust[None, None] * inside, inside], dim=1)
        smoothed = kornia.filters.gaussian_blur2d(stack, 2 * radius + 1, (sigma, sigma), border_type="constant")[0]
        trust = torch.minimum(trust, smoothed[0] / smoothed[1].clamp_min(1e-12))
    mirror_trust = (mirror_best_weight / confident).clamp(0.0, 1.0)
    lean = ((mirror_trust - trust - MIRROR_TRUST_MARGIN) / (1.0 - MIRROR_TRUST_MARGIN)).clamp_min(0.0)
    share = torch.where(best_weight > 0, lean, 1.0)
    return torch.where(available, share, 0.0)


def _masked_blur(values: Tensor, inside: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``values`` ``(C, T, T)`` averaged over the ``inside`` ``(T, T)`` texels only (normalised
    convolution), so the border of ``inside`` (the UV chart's edge) does not darken what is near it."""
    radius = max(1, math.ceil(3.0 * sigma))
    weight = inside.to(values.dtype)[None]
    stacked = torch.cat([values * weight, weight])[None]
    blurred = kornia.filters.gaussian_blur2d(stacked, 2 * radius + 1, (sigma, sigma), border_type="constant")[0]
    return blurred[:-1] / blurred[-1:].clamp_min(1e-12)


def feather(weights: Tensor, chart_mask: Tensor, config: FusionConfig) -> Tensor:
    """View weights ``(K, T, T)`` ramped from ``edge_floor`` at the border of where each view is usable (weight > 0)
    to 1 at ``feather_width`` of the map inside it, so no view's share jumps at an occlusion or mask border.

    The ramp is ``2 b - 1`` (clamped to [edge_floor, 1]) of the view's usable area blurred within the chart
    (sigma = half the width): 0 on a straight border, 1 from about one width in. The chart's own edge is no border.
    """
    sigma = config.feather_width * weights.shape[-1] / 2.0
    if sigma <= 0:
        return weights
    usable = (weights > 0).to(weights.dtype)
    share = _masked_blur(usable, chart_mask, sigma)
    return weights * ((share - 0.5) * 2.0).clamp(config.edge_floor, 1.0)


def confirmed_mirror(texture: Tensor, mirrored: Tensor, available: Tensor, seen: Tensor, region: Tensor,
                     features: Tensor, config: FusionConfig) -> Tensor:
    """``(T, T)`` bool: the unseen texels whose mirror's detail may be copied (as gradients, ``inpaint.membrane_fill``
    then sets their level from the seen texels around the hole), because the mirror side is seen and looks like what
    this side shows.

    texture: ``(3, T, T)`` the views' blend (read where ``seen``); mirrored: ``(3, T, T)`` each texel's mirror colour,
    ``available`` ``(T, T)`` where the mirror point was seen; seen: ``(T, T)`` texels some view saw; region: ``(T, T)``
    the chart (and gutter); features: ``(T, T)`` texels of the anatomically symmetric features (eyes, brows, nose,
    lips). Near this side's seen texels (within T / 32) the reference is what they show: the smooth membrane fill from
    them; the mirror is confirmed where its blurred colour (sigma T / 64: the shading) is within
    ``symmetry_shading_tolerance`` of it and, outside the features, each texel within ``symmetry_tolerance``. Deeper in
    a hole (half a profile) this side shows nothing to compare with; there, outside the features, each mirror texel
    must be within ``symmetry_tolerance`` of the mirror's own surroundings (its blur at sigma T / 128): skin detail
    passes, letters, a logo or a parting, which stand out from the skin around them, do not; a soft one-sided shadow
    deep inside a hole is the one thing this cannot tell from shading. Rejected texels grow by T / 128 (at least 2) so
    the soft rim of a letter stays behind too.
    """
    size = texture.shape[-1]
    holes = region & ~seen & available
    if not holes.any():
        return holes
    # the references are smooth: computed on a map of at most 256 texels and upsampled
    factor = max(1, size // 256)

    def coarse(values: Tensor, where: Tensor) -> tuple[Tensor, Tensor]:
        share = F.avg_pool2d(where[None, None].float(), factor)[0, 0]
        return F.avg_pool2d((values * where)[None], factor)[0] / share.clamp_min(1e-6), share >= 0.5

    def fine(values: Tensor) -> Tensor:
        return F.interpolate(values[None], size=texture.shape[-2:], mode="bilinear", align_corners=False)[0]

    seen_values, seen_coarse = coarse(texture, seen)
    coarse_region = F.avg_pool2d(region[None, None].float(), factor)[0, 0] > 0
    smooth = fine(membrane_fill(seen_values, seen_coarse, coarse_region))
    mirror_values, mirror_coarse = coarse(mirrored, available)
    shading = fine(_masked_blur(mirror_values, mirror_coarse, size / 64.0 / factor))
    surroundings = fine(_masked_blur(mirror_values, mirror_coarse, size / 128.0 / factor))
    reach = max(1, size // 32)
    near = F.max_pool2d(seen[None, None].float(), 2 * reach + 1, stride=1, padding=reach)[0, 0] > 0
    shading_ok = (shading - smooth).abs().amax(dim=0) <= config.symmetry_shading_tolerance
    detail_near = (mirrored - smooth).abs().amax(dim=0) <= config.symmetry_tolerance
    detail_deep = (mirrored - surroundings).abs().amax(dim=0) <= config.symmetry_tolerance
    plausible = holes & torch.where(near, shading_ok & (features | detail_near), features | detail_deep)
    grow = max(2, round(size / 128))
    rejected = F.max_pool2d((holes & ~plausible)[None, None].float(), 2 * grow + 1, stride=1, padding=grow)[0, 0] > 0
    return plausible & ~rejected


def fuse_texture(
    images: Tensor,
    screen_vertices: Tensor,
    faces: Tensor,
    uv: Tensor,
    texture_size: int,
    symmetry: Tensor | None = None,
    config: FusionConfig = FusionConfig(),
    masks: Tensor | None = None,
    symmetric_features: Tensor | None = None,
) -> FusedTexture:
    """Fuse K views of one mesh into a ``T x T`` UV texture.

    images: ``(K, 3, H, W)`` float in [0, 1] (or uint8); screen_vertices: ``(K, V, 3)`` the mesh in each
    view's screen space; faces: ``(F, 3)``; uv: ``(V, 2)`` the model's texture coordinates in [0, 1], v up
    (the map is laid out from them as 3DDFA_V2's ``process_uv`` does, :func:`layout_uv`); texture_size: T
    in 256..2048; symmetry: ``(V,)`` mirror vertex of each vertex, or None to skip mirror filling;
    masks: ``(K, H, W)`` bool, the pixels of each view allowed to feed the texture (``face_mask``), None = all;
    symmetric_features: ``(V,)`` bool, vertices of the features a face has on both sides (eyes, brows, nose, lips;
    ``face_mask.symmetric_feature_vertices``) whose detail an unseen texel may copy from its mirror
    (:func:`confirmed_mirror`); None = none (only detail that matches the skin around a hole is copied).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (K, 3, H, W), got {tuple(images.shape)}")
    expected = (images.shape[0], uv.shape[0], 3)
    if tuple(screen_vertices.shape) != expected:
        raise ValueError(
            f"screen_vertices must be (K, V, 3) = {expected}, one projection per image "
            f"and per UV vertex, got {tuple(screen_vertices.shape)}"
        )
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    chart = build_uv_chart(layout_uv(uv.float(), texture_size), faces, texture_size, symmetry)
    if masks is not None and masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"masks must be (K, H, W) = {(images.shape[0], *images.shape[-2:])}, one per image, "
                         f"got {tuple(masks.shape)}")
    per_view_masks = [None] * images.shape[0] if masks is None else list(masks)
    samples = [sample_view(image, vertices, faces, chart, config, mask)
               for image, vertices, mask in zip(images, screen_vertices, per_view_masks)]
    colours = torch.stack([s[0] for s in samples])
    visibility = torch.stack([s[1] for s in samples])
    raw_weights = reject_outliers(colours, torch.stack([s[2] for s in samples]), config.outlier_z, config.outlier_floor)
    weights = feather(raw_weights, chart.mask, config)

    texture, blend = blend_views(colours, weights, config.seam_sigma * texture_size)
    coverage = weights.sum(dim=0) > 0
    best_weight = raw_weights.amax(dim=0)
    mirrored, available = sample_at_mirror(torch.cat([texture, best_weight[None]]), coverage, chart)
    share = mirror_blend(best_weight, mirrored[3], available, chart.mask, config)
    disagreement = (texture - mirrored[:3]).abs().amax(dim=0)
    grow = max(2, round(texture_size / 128))  # the worst nearby: the soft rim of a letter leans no more than its core
    disagreement = F.max_pool2d(torch.where(available, disagreement, 0.0)[None, None], 2 * grow + 1, stride=1,
                                padding=grow)[0, 0]
    agreement = (2.0 - disagreement / max(config.mirror_tolerance, 1e-6)).clamp(0.0, 1.0)
    share = torch.where(coverage, share * agreement, 0.0)  # seen texels lean only on a mirror that agrees
    texture = (1.0 - share) * texture + share * mirrored[:3]

    region = chart.mask
    if config.gutter > 0:
        kernel = 2 * config.gutter + 1
        region = F.max_pool2d(region[None, None].float(), kernel, stride=1, padding=config.gutter)[0, 0] > 0
    holes = region & ~coverage
    features = torch.zeros_like(coverage)
    if symmetric_features is not None:
        features = interpolate(symmetric_features.float()[None, :, None], faces, chart.fragments)[0, ..., 0] > 0.5
    confirmed = confirmed_mirror(texture, mirrored[:3], available, coverage, region, features, config)
    texture = torch.where(region, membrane_fill(texture, coverage, region, mirrored[:3], confirmed), 0.0)
    source = torch.full_like(coverage, TexelSource.OUTSIDE, dtype=torch.uint8)
    source[coverage] = TexelSource.VIEW
    source[share > 0.5] = TexelSource.SYMMETRY
    source[holes] = TexelSource.INPAINTED
    source[confirmed] = TexelSource.SYMMETRY
    return FusedTexture(
        texture=texture.clamp(0.0, 1.0), chart=chart.mask, coverage=coverage,
        view_weight=weights, blend_weight=blend, visibility=visibility, source=source,
    )


def texture_to_vertex_colors(texture: Tensor, uv: Tensor) -> Tensor:
    """Per-vertex colours ``(V, 3)`` read bilinearly from ``texture`` ``(3, H, W)`` (``process_uv`` layout) at ``uv`` ``(V, 2)`` (v up)."""
    grid = _uv_to_grid(layout_uv(uv.to(texture.dtype), tuple(texture.shape[-2:])))[None, :, None]  # (1, V, 1, 2)
    colours = F.grid_sample(texture[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return colours[0, :, :, 0].T
