"""Per-view face-skin masks from the fitted mesh, its 68 landmarks and robust skin-colour statistics.

Only face skin should feed the UV texture: not the background beside the cheeks (a fitted mesh's outline
is rarely the real one), not hair or a hand in front of the forehead, not the mouth interior. A mask here is

    (pixels the fitted mesh covers)  minus  (the inner-lip polygon, landmarks 60-67)
    minus  (pixels outside the landmark outline whose colour is far from this view's skin colour),

with the non-skin found inside the mesh grown by a pixel or two, so that pixels mixing skin with something
else drop out too. Inside the landmark outline (jaw line 0-16 and the brows, :func:`inner_face_polygon`, found
on the mesh's surface so that it holds in profile too) every pixel but the mouth interior is kept (eyes, brows, lips and a beard are the face, though not skin-coloured)
except in a band along the mesh's outline (``SILHOUETTE_BAND``: a profile's nose or chin meets the background there),
and except where the background shows through a too large mesh deeper inside (:func:`background_through_mesh`:
non-skin pixels within ``BACKGROUND_BAND`` of the outline that look like the background just outside; in a
profile this was a dark strip down the map's midline, the nose ridge and upper lip).

The skin colour is learnt per view from the cheeks-and-nose polygon between the eyes, the jaw and the
upper lip (landmarks, see :data:`SKIN_SAMPLE_POLYGON`), which in a frontal-to-profile photo is skin far
more often than the forehead (hair, hats), the jaw line (beard, collar) or the outline (background).
Its mean and covariance are robust (median, then the covariance of the pixels within 3 MADs of it), and
a pixel is skin when its Mahalanobis distance to that model is at most ``threshold``. The covariance has
a floor (``min_sigma``), so shading inside the face is not cut and a flat synthetic face still works.
When under ``MIN_INLIER_SHARE`` of the sample is near its median (real photos: 85-96%; a checkerboard
"face": 55%), the cheeks are not one colour, the model says nothing about skin, and only the mesh and
the mouth cut the view.

Why this and not a face-parsing network: no face-segmentation model whose weights install from the
package registry is available here (mediapipe's current wheel ships none), and the mesh, the landmarks
and the image are all that is needed to remove the failures seen on real photos (background "wings",
hair streaks, the background through an open mouth). What it cannot do: remove skin-coloured occluders
(a hand, a blond fringe, a beige wall touching the cheek), keep strongly lit or shadowed skin that falls
outside the colour model (it is dropped and filled from other views or the mirror), remove anything in
front of the face inside its landmark outline (a hand, glasses: one view cannot tell them from the face), or
find occluders in a view whose cheeks themselves are hidden (the colour model then learns the occluder; fusion's robust
cross-view vote, ``view_outliers.reject_outliers``, is the second line of defence).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facetex.face3d.rasterizer import interpolate, rasterize

MOUTH_INTERIOR = tuple(range(60, 68))  # iBUG-68 inner lip contour
# cheeks and nose below the eyes and above the mouth: jaw (1-4), upper lip (48-54), jaw (12-15), eyes (46-39)
SKIN_SAMPLE_POLYGON = (1, 2, 3, 4, 48, 50, 51, 52, 54, 12, 13, 14, 15, 46, 47, 42, 28, 39, 40, 41)
MIN_SKIN_SAMPLES = 20
MIN_INLIER_SHARE = 0.6  # below it the skin sample is not one colour cluster and the colour test is skipped
JAW, BROWS, EYES = tuple(range(17)), tuple(range(17, 27)), tuple(range(36, 48))
SILHOUETTE_BAND = 0.03  # the colour test also runs this close to the mesh's outline, share of the face's size
BACKGROUND_BAND = 0.1  # how far inside the mesh's outline background may show through, share of the face's size
BACKGROUND_TOLERANCE = 0.1  # largest-channel colour difference to the background just outside the mesh
BACKGROUND_GROWTH = 3  # pixels by which background seen through the mesh grows into the non-skin pixels beside it
BROW_LIFT = 0.5  # the brows are raised by this share of their height above the eyes, so the whole brow is inside


def convex_hull(points: Tensor) -> Tensor:
    """``(M, 2)`` the convex hull of ``points`` ``(N, 2)``, counter-clockwise in x-right, y-up axes (monotone chain)."""
    ordered = sorted(map(tuple, points.tolist()))

    def half(chain_points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for point in chain_points:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (point[1] - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (point[0] - chain[-2][0])) <= 0:
                chain.pop()
            chain.append(point)
        return chain[:-1]

    return points.new_tensor(half(ordered) + half(ordered[::-1]))


def inner_face_polygon(landmarks: Tensor) -> Tensor:
    """``(M, 2)`` the face inside its landmark outline: jaw 0-16, then the brows 26-17 raised by ``BROW_LIFT``
    (image axes, y down). Landmarks a model lacks are NaN rows; without the whole jaw the outline is the convex
    hull of the landmarks there are (the Surrey model has the chin only: its hull runs from the brows to the chin).

    Inside it the eyes, brows, lips and a beard are the face itself (not skin-coloured, but not to be cut);
    the colour model acts outside it only (forehead, the mesh beyond the jaw line, ears).
    """
    brows = landmarks[list(BROWS)]
    lift = BROW_LIFT * (landmarks[list(EYES), 1].nanmean() - brows[:, 1].nanmean())
    raised = torch.stack([brows[:, 0], brows[:, 1] - lift.clamp_min(0.0)], dim=1)
    jaw = landmarks[list(JAW)]
    if torch.isfinite(jaw).all():  # the outline itself: jaw, then the brows back from 26 to 17
        return torch.cat([jaw, raised.flip(0)])
    points = torch.cat([jaw, raised])
    return convex_hull(points[torch.isfinite(points).all(dim=1)])


def points_in_polygon(points: Tensor, polygon: Tensor) -> Tensor:
    """``(...)`` bool, which of ``points`` ``(..., 2)`` lie inside the closed ``polygon`` ``(N, 2)`` (even-odd rule).

    NaN vertices (landmarks a model lacks) are skipped.
    """
    polygon = polygon[torch.isfinite(polygon).all(dim=1)]  # landmarks a model lacks are NaN rows
    x, y = points[..., 0], points[..., 1]
    inside = torch.zeros(points.shape[:-1], dtype=torch.bool, device=points.device)
    for (x0, y0), (x1, y1) in zip(polygon.tolist(), polygon.roll(-1, dims=0).tolist()):
        if y0 == y1:
            continue
        crosses = (y >= min(y0, y1)) & (y < max(y0, y1))
        inside ^= crosses & (x < x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    return inside


def polygon_mask(polygon: Tensor, height: int, width: int) -> Tensor:
    """``(H, W)`` bool, pixel centres (``j + 0.5``) inside the closed polygon ``(N, 2)`` (x, y pixels), even-odd rule."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=polygon.dtype, device=polygon.device) + 0.5,
                            torch.arange(width, dtype=polygon.dtype, device=polygon.device) + 0.5, indexing="ij")
    return points_in_polygon(torch.stack([xs, ys], dim=-1), polygon)


def erode(mask: Tensor, radius: int) -> Tensor:
    """``(H, W)`` bool mask eroded by a ``(2 radius + 1)`` square (outside the image counts as outside).

    A square's erosion is a row erosion then a column erosion: O(radius) per pixel, not O(radius^2).
    """
    if radius < 1:
        return mask
    outside = F.pad((~mask).float()[None, None], (radius,) * 4, value=1.0)
    rows = F.max_pool2d(outside, (1, 2 * radius + 1), stride=1)
    return F.max_pool2d(rows, (2 * radius + 1, 1), stride=1)[0, 0] == 0


def inner_face_vertices(vertices: Tensor, landmarks: Tensor) -> Tensor:
    """``(V,)`` bool, the mesh's vertices inside its landmark outline (:func:`inner_face_polygon`), seen frontally.

    vertices: ``(V, 3)`` and landmarks: ``(68, 3)`` in model space (x right, y up, z to the viewer), e.g. the mean
    face and its landmark vertices. Found once on the surface, the inner face is right in every pose, where the
    outline of a turned face's 2-D landmarks folds over itself.
    """
    flip = vertices.new_tensor([1.0, -1.0])  # y down, as in the image
    return points_in_polygon(vertices[:, :2] * flip, inner_face_polygon(landmarks[:, :2] * flip))


FEATURE_GROWTH = {"eye": 1.8, "nose": 1.3, "lips": 1.25}  # each feature's hull scaled about its centre by this
SYMMETRIC_FEATURES = {"eye": (tuple(range(36, 42)), tuple(range(42, 48))), "nose": (tuple(range(27, 36)),),
                      "lips": (tuple(range(48, 60)),)}


def _scaled_hull(points: Tensor, factor: float) -> Tensor:
    """The convex hull of the finite ``points`` ``(N, 2)`` scaled by ``factor`` about their mean."""
    points = points[torch.isfinite(points).all(dim=1)]
    centre = points.mean(dim=0)
    return convex_hull(centre + factor * (points - centre))


def symmetric_feature_vertices(vertices: Tensor, landmarks: Tensor) -> Tensor:
    """``(V,)`` bool, the mesh's vertices on the features a face has on both sides: eyes, brows, nose and lips.

    vertices: ``(V, 3)`` and landmarks: ``(68, 3)`` (NaN rows for those a model lacks) in model space, seen frontally
    (e.g. the mean face). Each feature is its landmarks' convex hull grown by :data:`FEATURE_GROWTH` (an eye's hull
    by 1.8 takes in its lids and corners); a brow is the band of half the brow-to-eye distance above and below its
    landmarks. Texture fusion may copy the detail of these from the mirror side into texels no view saw (the other
    eye, nostril or lip corner), never the detail of the skin between them (``texture.confirmed_mirror``).
    """
    flip = vertices.new_tensor([1.0, -1.0])  # y down, as in the image
    points = vertices[:, :2] * flip
    marks = landmarks[:, :2] * flip
    inside = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    for name, groups in SYMMETRIC_FEATURES.items():
        for group in groups:
            if torch.isfinite(marks[list(group)]).all(dim=1).sum() >= 3:
                inside |= points_in_polygon(points, _scaled_hull(marks[list(group)], FEATURE_GROWTH[name]))
    for brow, eye in ((tuple(range(17, 22)), tuple(range(36, 42))), (tuple(range(22, 27)), tuple(range(42, 48)))):
        line = marks[list(brow)]
        if not torch.isfinite(line).all():
            continue
        half = 0.5 * (marks[list(eye), 1].nanmean() - line[:, 1].mean()).abs()
        band = torch.cat([line - line.new_tensor([0.0, 1.0]) * half, line + line.new_tensor([0.0, 1.0]) * half])
        inside |= points_in_polygon(points, convex_hull(band))
    return inside


def skin_colour_model(image: Tensor, sample: Tensor, min_sigma: float = 0.03) -> tuple[Tensor, Tensor, float]:
    """Robust mean ``(3,)``, covariance ``(3, 3)`` and inlier share of ``image`` ``(3, H, W)`` over ``sample`` ``(H, W)``.

    Median first, then mean and covariance of the pixels within 3 scaled MADs of it on every channel
    (hair or background inside the sample polygon does not move them); ``min_sigma`` is added on the diagonal.
    The inlier share is the fraction of the sample within those bounds: low when the sample is not one colour.
    """
    pixels = image[:, sample].T.float()  # (N, 3)
    if pixels.shape[0] < MIN_SKIN_SAMPLES:
        raise ValueError(f"the skin sample region holds {pixels.shape[0]} pixels, fewer than {MIN_SKIN_SAMPLES}; "
                         "is the face inside the image and larger than a few pixels?")
    median = pixels.median(dim=0).values
    mad = 1.4826 * (pixels - median).abs().median(dim=0).values
    inliers = pixels[((pixels - median).abs() <= 3.0 * mad.clamp_min(min_sigma)).all(dim=1)]
    mean = inliers.mean(dim=0)
    centred = inliers - mean
    covariance = centred.T @ centred / max(1, inliers.shape[0] - 1)
    floor = min_sigma**2 * torch.eye(3, dtype=covariance.dtype, device=covariance.device)
    return mean, covariance + floor, inliers.shape[0] / pixels.shape[0]


def skin_colour_mask(image: Tensor, mean: Tensor, covariance: Tensor, threshold: float) -> Tensor:
    """``(H, W)`` bool, pixels of ``image`` ``(3, H, W)`` within Mahalanobis distance ``threshold`` of the skin model."""
    centred = image.float().flatten(1).T - mean  # (H W, 3)
    distance2 = (centred @ torch.linalg.inv(covariance) * centred).sum(dim=1)
    return (distance2 <= threshold**2).reshape(image.shape[-2:])


def box_mean(values: Tensor, weights: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Weighted mean ``(C, H, W)`` of ``values`` ``(C, H, W)`` over each ``(2 radius + 1)^2`` square, and the squares'
    total weight ``(H, W)`` (``weights`` ``(H, W)`` >= 0; outside the image weighs 0). Summed-area tables: O(H W)."""
    stacked = torch.cat([values * weights, weights[None]]).double()
    table = F.pad(stacked, (radius + 1, radius, radius + 1, radius)).cumsum(dim=1).cumsum(dim=2)
    size = 2 * radius + 1
    sums = table[:, size:, size:] - table[:, :-size, size:] - table[:, size:, :-size] + table[:, :-size, :-size]
    total = sums[-1].clamp_min(0.0)
    return (sums[:-1] / total.clamp_min(1e-12)).to(values.dtype), total.to(values.dtype)


def background_through_mesh(image: Tensor, covered: Tensor, not_skin: Tensor, band: int,
                            tolerance: float = BACKGROUND_TOLERANCE) -> Tensor:
    """``(H, W)`` bool, mesh pixels within ``band`` of its outline that are not skin-coloured and look like the
    background just outside the mesh (largest-channel difference to its local mean at most ``tolerance``).

    image: ``(3, H, W)``; covered: ``(H, W)`` bool, the mesh's pixels; not_skin: ``(H, W)`` bool, outside the skin-colour
    model. A fitted mesh is rarely the face's own outline: where it is larger (a profile's nose and upper lip, the
    chin), the background shows through it, *inside* the landmark outline whose dark or coloured parts (brows, eyes,
    lips, a beard) are otherwise kept. The local background is the mean of the uncovered, not skin-coloured pixels
    within ``band`` of the mesh (skin beyond a too small mesh is not background), over a ``4 band + 1`` square.
    Found regions then grow by ``BACKGROUND_GROWTH`` pixels into the non-skin mesh pixels beside them (the blurred
    edge between background and face is neither colour). Only the face's surroundings are examined (fast on big photos).
    """
    result = torch.zeros_like(covered)
    if band < 1 or not covered.any():
        return result
    rows, cols = covered.any(dim=1).nonzero()[:, 0], covered.any(dim=0).nonzero()[:, 0]
    top, left = max(0, int(rows[0]) - 3 * band), max(0, int(cols[0]) - 3 * band)
    bottom, right = int(rows[-1]) + 3 * band + 1, int(cols[-1]) + 3 * band + 1
    mesh = covered[top:bottom, left:right]
    ring = ~mesh & ~erode(~mesh, band) & not_skin[top:bottom, left:right]  # uncovered non-skin next to the mesh
    local, weight = box_mean(image[:, top:bottom, left:right].float(), ring.float(), 2 * band)
    near_outline = mesh & ~erode(mesh, band)
    alike = (image[:, top:bottom, left:right].float() - local).abs().amax(dim=0) <= tolerance
    candidates = mesh & not_skin[top:bottom, left:right]
    through = near_outline & (weight > 0) & alike & candidates
    for _ in range(BACKGROUND_GROWTH):  # the pixels mixing it with the face: neither skin nor background colour
        through = through | (~erode(~through, 1) & candidates)
    result[top:bottom, left:right] = through
    return result


def face_skin_mask(
    image: Tensor, screen_vertices: Tensor, faces: Tensor, landmarks: Tensor, inner_face: Tensor | None = None,
    threshold: float = 5.0, erosion: int = 1, min_sigma: float = 0.03,
) -> Tensor:
    """``(H, W)`` bool mask of the face skin in one view (see the module docstring).

    image: ``(3, H, W)`` in [0, 1]; screen_vertices: ``(V, 3)`` the fitted mesh in this view; faces: ``(F, 3)``;
    landmarks: ``(68, 2)`` iBUG-68 screen x, y of this view (e.g. the mesh's landmark vertices; NaN rows for those
    a model lacks: every polygon is made of the others);
    inner_face: ``(V,)`` bool, vertices inside the landmark outline (:func:`inner_face_vertices`), kept whatever
    their colour; None = the outline polygon of ``landmarks`` (right for near-frontal views only);
    threshold: Mahalanobis distance to the skin-colour model beyond which a pixel is not skin;
    erosion: pixels by which non-skin regions inside the mesh grow; min_sigma: colour-model floor (see :func:`skin_colour_model`).
    """
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must be the (68, 2) iBUG-68 screen positions of this view, got {tuple(landmarks.shape)}")
    height, width = image.shape[-2:]
    fragments = rasterize(screen_vertices.float()[None], faces, (height, width))
    covered = fragments.mask[0]
    landmarks = landmarks.float()
    mouth = polygon_mask(landmarks[list(MOUTH_INTERIOR)], height, width)
    sample = polygon_mask(landmarks[list(SKIN_SAMPLE_POLYGON)], height, width) & covered & ~mouth
    mean, covariance, inlier_share = skin_colour_model(image, sample, min_sigma)
    if inlier_share < MIN_INLIER_SHARE:  # the cheeks are not one colour: no evidence of what skin looks like here
        return covered & ~mouth
    # non-skin inside the mesh grows by ``erosion``; the mesh's own outline is left to fusion's silhouette falloff
    if inner_face is None:
        inner = polygon_mask(inner_face_polygon(landmarks), height, width)
    else:
        inner = interpolate(inner_face.float()[None, :, None], faces, fragments)[0, ..., 0] > 0.5
    # ... but not next to the mesh's outline, where a turned face's nose or chin meets the background
    size = float(covered.sum()) ** 0.5
    inner = inner & erode(covered, round(SILHOUETTE_BAND * size))
    colour = skin_colour_mask(image, mean, covariance, threshold)
    # ... and not where the background shows through the mesh deeper inside its outline (a profile's nose ridge)
    through = background_through_mesh(image, covered, ~colour, round(BACKGROUND_BAND * size))
    skin = erode((colour | ~covered | inner) & ~through, erosion)
    return covered & ~mouth & skin
