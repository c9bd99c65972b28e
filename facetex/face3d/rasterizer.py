"""Z-buffer triangle rasterisation in screen space and in UV space.

Screen space (see ``camera.py``): x right, y down in pixels, pixel ``(i, j)`` sampled at
its centre ``(j + 0.5, i + 0.5)``, third coordinate a depth where smaller is nearer.
Barycentrics are screen-space (affine, no perspective correction), which is exact for
the weak-perspective camera face3d uses.

The pure-PyTorch backend works on CPU and GPU, batched:

1. triangles are bucketed by the size of their pixel bounding box (rounded up to a few
   window shapes); each bucket tests a ``(T, rows, cols)`` block of candidate pixels, in
   chunks of at most ``max_candidates`` (triangle, pixel) pairs so memory stays bounded;
2. a pixel is inside when all three edge functions are positive, or zero on a top or
   left edge (the top-left rule). Each edge function is evaluated from the edge's
   endpoints taken in a canonical order, so two triangles sharing an edge compute
   exactly opposite values: shared edges are covered once, with no cracks;
3. the z-test is a ``scatter_reduce(amin)`` (one per chunk, into one buffer) on a 64-bit
   key packing the fp32 depth (made non-negative, so its bits sort as integers) above
   the triangle id: the nearest triangle wins and equal depths go to the smaller id,
   deterministically.

Visibility is discrete and runs without gradients; barycentrics and depth are then
recomputed for the winning triangles from the input vertices, so they carry gradients
with respect to ``screen_vertices``.

The C++ backend (``backend="cpp"``, ``csrc/raster.cpp``, compiled on first use by
``raster_extension.py``) runs the same arithmetic one triangle's bounding box at a time
on CPU tensors: the same winning triangle at every pixel (bit-identical inside tests and
depth keys), with barycentrics and depth computed once per pixel for the winner. When
gradients are needed, those two are recomputed by PyTorch from the winning ids.

When ``pytorch3d`` is importable it can find the visible triangles instead
(``backend="pytorch3d"``); barycentrics and depth are computed the same way for all
backends. ``"auto"`` picks the C++ backend for CPU tensors when it builds, else pytorch3d
when importable, else the pure-PyTorch one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from facetex.face3d import raster_extension
from facetex.face3d.raster_pytorch3d import pytorch3d_available, visible_triangles_pytorch3d

Backend = Literal["auto", "torch", "cpp", "pytorch3d"]

_EMPTY_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
DEFAULT_MAX_CANDIDATES = 1 << 20


@dataclass
class Fragments:
    """What each pixel sees.

    Attributes:
        triangle_id: ``(B, H, W)`` long, index into ``faces`` of the visible triangle, -1 if empty.
        barycentric: ``(B, H, W, 3)`` weights of that triangle's three vertices (zero if empty).
        depth: ``(B, H, W)`` interpolated depth, ``+inf`` where empty.
    """

    triangle_id: Tensor
    barycentric: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:
        """``(B, H, W)`` bool, True where a triangle covers the pixel."""
        return self.triangle_id >= 0


def active_backend(backend: Backend = "auto", device: torch.device | str = "cpu") -> str:
    """The backend ``backend`` resolves to for tensors on ``device``: as asked, or (auto) ``"cpp"``
    for CPU tensors when the C++ kernels build, else ``"pytorch3d"`` if importable, else ``"torch"``."""
    is_cpu = torch.device(device).type == "cpu"
    if backend == "torch":
        return "torch"
    if backend == "cpp":
        if not is_cpu:
            raise ValueError(f"backend='cpp' runs on CPU tensors, got tensors on {device}; "
                             "use backend='auto', 'torch' or 'pytorch3d'")
        if not raster_extension.available():
            raise RuntimeError("backend='cpp' was asked for but the C++ rasteriser could not be built "
                               "(see the warning above); install g++ and ninja or use backend='torch'")
        return "cpp"
    if backend == "pytorch3d":
        if not pytorch3d_available():
            raise RuntimeError("backend='pytorch3d' was asked for but pytorch3d is not importable; "
                               "install pytorch3d or use backend='torch'")
        return "pytorch3d"
    if backend == "auto":
        if is_cpu and raster_extension.available():
            return "cpp"
        return "pytorch3d" if pytorch3d_available() else "torch"
    raise ValueError(f"backend must be 'auto', 'torch', 'cpp' or 'pytorch3d', got {backend!r}")


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    return int(height), int(width)


def _check_mesh(vertices: Tensor, faces: Tensor, name: str, dims: int) -> None:
    if vertices.dim() != 3 or vertices.shape[-1] != dims:
        raise ValueError(f"{name} must have shape (B, V, {dims}), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces must be an integer tensor of shape (F, 3), got {tuple(faces.shape)} {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[1]):
        raise ValueError(f"faces index vertices 0..{vertices.shape[1] - 1} but hold "
                         f"{int(faces.min())}..{int(faces.max())}")


def _padded(extent: Tensor) -> Tensor:
    """Round box sides up to ``m * 2^e`` with m in {2, 3} (exact up to 3, at most 1/2 larger),
    so triangles fall into few buckets of equal padded window shape (fewer, larger tensor
    ops beat tighter windows on CPU)."""
    step = 2 ** (torch.floor(torch.log2(extent.clamp_min(1).double())) - 1).clamp_min(0).long()
    return (extent + step - 1) // step * step


@dataclass
class _TriangleTable:
    """What the inside and depth tests need, per rasterisable triangle (N of them).

    Edge ``k`` (opposite vertex ``k``) has the edge function
    ``w_k = dx_k (py - uy_k) - dy_k (px - ux_k)``, positive inside. A pixel is inside when
    ``w_k > threshold_k`` for all k; the threshold is the largest negative float on top and
    left edges (so ``w = 0`` counts, exactly like ``w >= 0``) and 0 on the others.
    Depth is the plane ``z_a + gx (px - ax) + gy (py - ay)``, relative to the batch minimum.
    Each triangle tests a window of ``rows x cols`` pixels (its padded bounding box).
    """

    edges: Tensor  # (N, 3, 5) float: dx, dy, ux, uy, threshold
    plane: Tensor | None  # (N, 5) float: z_a, gx, gy, ax, ay
    origin: Tensor  # (N, 2) float: x, y of the window's top-left pixel centre
    base: Tensor  # (N,) long: flat index of the window's top-left pixel in the (B, H, W) buffer
    face: Tensor  # (N,) long: index into faces
    window: Tensor  # (N, 2) long: rows, cols


def _triangle_table(xy: Tensor, z: Tensor | None, faces: Tensor, height: int, width: int,
                    cull_backfaces: bool) -> _TriangleTable:
    """Edge functions, depth planes and pixel windows of the triangles that can cover a pixel."""
    tri = xy[:, faces]  # (B, F, 3, 2)
    a, b, c = tri[:, :, 0], tri[:, :, 1], tri[:, :, 2]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    lo, hi = tri.amin(dim=2), tri.amax(dim=2)  # (B, F, 2)
    first = torch.ceil(lo - 0.5).clamp_min(0)
    last = torch.minimum(torch.floor(hi - 0.5), hi.new_tensor([width - 1, height - 1]))
    valid = (last >= first).all(dim=-1) & (area != 0) & torch.isfinite(tri).all(dim=-1).all(dim=-1)
    if z is not None:
        valid &= torch.isfinite(z[:, faces]).all(dim=-1)
    if cull_backfaces:
        valid &= area < 0  # counter-clockwise in model space (y up) is clockwise on screen (y down)
    batch, face = valid.nonzero(as_tuple=True)
    tri, area = tri[batch, face], area[batch, face]
    orientation = torch.sign(area)[:, None]
    below_zero = torch.nextafter(tri.new_zeros(()), tri.new_tensor(-1.0))
    edges = []
    for k in range(3):
        u, v = tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]
        # Canonical endpoint order (lexicographic in x, then y) makes shared edges bit-identical.
        swap = (v[:, 0] < u[:, 0]) | ((v[:, 0] == u[:, 0]) & (v[:, 1] < u[:, 1]))
        start, end = torch.where(swap[:, None], v, u), torch.where(swap[:, None], u, v)
        sign = torch.where(swap[:, None], -orientation, orientation)
        direction = (v - u) * orientation  # this edge, walked around the triangle made positive
        top_left = (direction[:, 1] < 0) | ((direction[:, 1] == 0) & (direction[:, 0] > 0))
        threshold = torch.where(top_left, below_zero, 0.0)
        edges.append(torch.cat([(end - start) * sign, start, threshold[:, None]], dim=1))
    plane = None
    if z is not None:
        tz = z[:, faces][batch, face] - z.amin(dim=1)[batch, None]  # (N, 3), >= 0: fp32 bits sort as integers
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        dz1, dz2 = tz[:, 1] - tz[:, 0], tz[:, 2] - tz[:, 0]
        gx = (dz1 * (c[:, 1] - a[:, 1]) - dz2 * (b[:, 1] - a[:, 1])) / area
        gy = (dz2 * (b[:, 0] - a[:, 0]) - dz1 * (c[:, 0] - a[:, 0])) / area
        plane = torch.stack([tz[:, 0], gx, gy, a[:, 0], a[:, 1]], dim=1)
    first, last = first[batch, face].long(), last[batch, face].long()
    window = torch.stack([_padded(last[:, 1] - first[:, 1] + 1).clamp_max(height),
                          _padded(last[:, 0] - first[:, 0] + 1).clamp_max(width)], dim=1)
    # Windows that would leave the image are shifted back inside it: the extra pixels lie
    # outside the triangle's bounding box, so the edge test rejects them.
    col0 = torch.minimum(first[:, 0], width - window[:, 1])
    row0 = torch.minimum(first[:, 1], height - window[:, 0])
    origin = torch.stack([col0, row0], dim=1).to(xy.dtype) + 0.5
    base = (batch * height + row0) * width + col0
    return _TriangleTable(torch.stack(edges, dim=1), plane, origin, base, face, window)


def _buckets(window: Tensor, max_candidates: int) -> list[tuple[Tensor, int, int]]:
    """Triangle indices grouped by window shape ``(rows, cols)``, at most ``max_candidates``
    pixels per group (one triangle per group if its window alone is bigger)."""
    shape_key = window[:, 0] * (int(window[:, 1].max()) + 1 if len(window) else 1) + window[:, 1]
    order = torch.argsort(shape_key)
    sorted_window = window[order]
    _, counts = torch.unique_consecutive(shape_key[order], return_counts=True)
    groups, begin = [], 0
    for count in counts.tolist():
        rows, cols = sorted_window[begin].tolist()
        per_group = max(1, max_candidates // (rows * cols))
        for group in range(begin, begin + count, per_group):
            groups.append((order[group:min(group + per_group, begin + count)], rows, cols))
        begin += count
    return groups


@torch.no_grad()
def _visible_triangles_torch(xy: Tensor, z: Tensor | None, faces: Tensor, height: int, width: int,
                             cull_backfaces: bool, max_candidates: int) -> Tensor:
    """``(B, H, W)`` long id of the nearest triangle covering each pixel centre, -1 if none.

    A group of T triangles with equal windows tests a ``(T, rows, cols)`` block of pixels;
    each edge function splits into a ``(T, rows, 1)`` and a ``(T, 1, cols)`` part, so only
    their difference and the comparisons run at full size.
    """
    batch_size = xy.shape[0]
    table = _triangle_table(xy, z, faces, height, width, cull_backfaces)
    zbuffer = torch.full((batch_size * height * width,), _EMPTY_KEY, dtype=torch.int64, device=xy.device)
    for index, rows, cols in _buckets(table.window, max_candidates):
        steps_x = torch.arange(cols, device=xy.device, dtype=xy.dtype)
        steps_y = torch.arange(rows, device=xy.device, dtype=xy.dtype)[:, None]
        origin = table.origin[index]
        px = origin[:, 0, None, None] + steps_x  # (T, 1, cols)
        py = origin[:, 1, None, None] + steps_y  # (T, rows, 1)
        edges = table.edges[index][..., None, None]  # (T, 3, 5, 1, 1)
        inside = None
        for k in range(3):
            dx, dy, ux, uy, threshold = edges[:, k].unbind(dim=1)
            passed = dx * (py - uy) - dy * (px - ux) > threshold
            inside = passed if inside is None else inside & passed
        face = table.face[index][:, None, None]
        if table.plane is None:
            key = face
        else:
            z_a, gx, gy, ax, ay = table.plane[index][..., None, None].unbind(dim=1)
            depth = ((z_a + gy * (py - ay)) + gx * (px - ax)).clamp_min(0).float()
            key = (depth.view(torch.int32).long() << 32) | face
        key = torch.where(inside, key, _EMPTY_KEY)
        offsets = torch.arange(rows, device=xy.device)[:, None] * width + torch.arange(cols, device=xy.device)
        pixel = table.base[index][:, None, None] + offsets
        zbuffer.scatter_reduce_(0, pixel.reshape(-1), key.reshape(-1), reduce="amin")
    triangle_id = torch.where(zbuffer == _EMPTY_KEY, -1, zbuffer & _LOW32)
    return triangle_id.view(batch_size, height, width)


def _fragments(xy: Tensor, z: Tensor | None, faces: Tensor, triangle_id: Tensor) -> Fragments:
    """Barycentrics and depth of the visible triangles at the pixel centres (differentiable).

    Per face, barycentrics are affine in the pixel position relative to vertex a:
    ``b1 = beta1 . (p - a)``, ``b2 = beta2 . (p - a)``, ``b0 = 1 - b1 - b2``, with
    ``beta1 = (c - a)^perp / area`` and ``beta2 = -(b - a)^perp / area``.
    """
    batch_size, height, width = triangle_id.shape
    tri = xy[:, faces.long()]  # (B, F, 3, 2)
    a, ab, ac = tri[:, :, 0], tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    area = ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0]
    area = torch.where(area == 0, 1.0, area)  # degenerate faces are never visible
    columns = [a, torch.stack([ac[..., 1], -ac[..., 0]], dim=-1) / area[..., None],
               torch.stack([-ab[..., 1], ab[..., 0]], dim=-1) / area[..., None]]
    if z is not None:
        columns.append(z[:, faces.long()])
    per_face = torch.cat(columns, dim=-1)  # (B, F, 6 or 9)
    if per_face.shape[1] == 0:  # no faces: every pixel is empty, gather needs one row to point at
        per_face = per_face.new_zeros(batch_size, 1, per_face.shape[-1])
    covered = triangle_id >= 0
    num_rows = per_face.shape[1]
    flat_id = triangle_id.clamp_min(0) + num_rows * torch.arange(batch_size, device=xy.device)[:, None, None]
    per_pixel = per_face.reshape(batch_size * num_rows, -1).index_select(0, flat_id.view(-1))
    per_pixel = per_pixel.view(batch_size, height, width, -1)
    px = torch.arange(width, device=xy.device, dtype=xy.dtype) + 0.5
    py = torch.arange(height, device=xy.device, dtype=xy.dtype)[:, None] + 0.5
    dx, dy = px - per_pixel[..., 0], py - per_pixel[..., 1]
    b1 = per_pixel[..., 2] * dx + per_pixel[..., 3] * dy
    b2 = per_pixel[..., 4] * dx + per_pixel[..., 5] * dy
    barycentric = torch.stack([1.0 - b1 - b2, b1, b2], dim=-1) * covered[..., None]
    if z is None:
        depth = torch.zeros_like(b1)
    else:
        depth = (barycentric * per_pixel[..., 6:9]).sum(dim=-1)
    depth = torch.where(covered, depth, float("inf"))
    return Fragments(triangle_id=triangle_id, barycentric=barycentric, depth=depth)


def _rasterize(xy: Tensor, z: Tensor | None, faces: Tensor, image_size: tuple[int, int], cull_backfaces: bool,
               backend: Backend, max_candidates: int) -> Fragments:
    height, width = image_size
    compute_dtype = torch.promote_types(xy.dtype, torch.float32)
    xy = xy.to(compute_dtype)
    z = None if z is None else z.to(compute_dtype)
    resolved = active_backend(backend, xy.device)
    if resolved == "cpp":
        triangle_id, barycentric, depth = raster_extension.kernels().rasterize(
            xy.detach(), xy.new_empty(0) if z is None else z.detach(), faces, height, width, cull_backfaces)
        needs_grad = torch.is_grad_enabled() and (xy.requires_grad or (z is not None and z.requires_grad))
        if not needs_grad:
            return Fragments(triangle_id=triangle_id, barycentric=barycentric, depth=depth)
    elif resolved == "pytorch3d":
        triangle_id = visible_triangles_pytorch3d(xy, z, faces, height, width, cull_backfaces)
    else:
        triangle_id = _visible_triangles_torch(xy, z, faces.long(), height, width, cull_backfaces, max_candidates)
    return _fragments(xy, z, faces, triangle_id)


def rasterize(screen_vertices: Tensor, faces: Tensor, image_size: int | tuple[int, int], *,
              cull_backfaces: bool = False, backend: Backend = "auto",
              max_candidates: int = DEFAULT_MAX_CANDIDATES) -> Fragments:
    """Rasterise a batch of meshes given in screen space.

    Args:
        screen_vertices: ``(B, V, 3)`` pixel x, pixel y, depth (smaller = nearer).
        faces: ``(F, 3)`` vertex indices, shared by the batch; both windings are drawn.
        image_size: ``H`` or ``(H, W)``.
        cull_backfaces: drop triangles facing away, i.e. clockwise in model space
            (counter-clockwise, outward-facing triangles seen from the front are kept).
        backend: ``"torch"``, ``"cpp"``, ``"pytorch3d"`` or ``"auto"`` (see :func:`active_backend`).
        max_candidates: (triangle, pixel) pairs tested at once by the torch backend;
            bounds its memory (a few tens of bytes per pair).

    Returns:
        :class:`Fragments` of shape ``(B, H, W)``, computed in at least fp32.
    """
    _check_mesh(screen_vertices, faces, "screen_vertices", 3)
    return _rasterize(screen_vertices[..., :2], screen_vertices[..., 2], faces, _image_size(image_size),
                      cull_backfaces, backend, max_candidates)


def uv_to_pixels(uv: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Texture coordinates ``(..., 2)`` (u right, v up, OBJ style) -> texel-space pixel
    coordinates ``(..., 2)``: ``x = u W``, ``y = (1 - v) H``, so texel row 0 is v = 1."""
    height, width = _image_size(size)
    return torch.stack([uv[..., 0] * width, (1.0 - uv[..., 1]) * height], dim=-1)


def rasterize_uv(uv: Tensor, faces: Tensor, size: int | tuple[int, int], *, backend: Backend = "auto",
                 max_candidates: int = DEFAULT_MAX_CANDIDATES) -> Fragments:
    """Rasterise a mesh's UV layout into a texture of ``size`` texels (batch 1).

    ``uv`` is ``(V, 2)`` in [0, 1] with v up (as in OBJ); texel row 0 is the top of the
    image (v = 1). All triangles lie at depth 0; where UV triangles overlap, the one with
    the smaller index wins. ``depth`` is 0 on covered texels.
    """
    if uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must have shape (V, 2), got {tuple(uv.shape)}")
    _check_mesh(uv[None], faces, "uv", 2)
    hw = _image_size(size)
    return _rasterize(uv_to_pixels(uv, hw)[None], None, faces, hw, False, backend, max_candidates)


def interpolate(attributes: Tensor, faces: Tensor, fragments: Fragments, *, backend: Backend = "auto") -> Tensor:
    """Barycentric interpolation of per-vertex attributes at every pixel.

    Args:
        attributes: ``(B, V, C)``. A batch of 1 on either side broadcasts: e.g. the
            colours of B views ``(B, V, C)`` over one UV raster give ``(B, H, W, C)``.
        faces: ``(F, 3)`` the faces that were rasterised.
        fragments: from :func:`rasterize` or :func:`rasterize_uv`.
        backend: ``"cpp"`` (or ``"auto"`` on CPU without gradients) runs the C++ kernel;
            otherwise PyTorch gathers each face's three attribute rows per pixel.

    Returns:
        ``(B, H, W, C)``, zero on empty pixels.
    """
    if attributes.dim() != 3:
        raise ValueError(f"attributes must have shape (B, V, C), got {tuple(attributes.shape)}")
    triangle_id, barycentric = fragments.triangle_id, fragments.barycentric
    batch_size = max(attributes.shape[0], triangle_id.shape[0])
    if attributes.shape[0] not in (1, batch_size) or triangle_id.shape[0] not in (1, batch_size):
        raise ValueError(f"attributes batch {attributes.shape[0]} does not match fragments batch "
                         f"{triangle_id.shape[0]} (one of them may be 1)")
    needs_grad = torch.is_grad_enabled() and (attributes.requires_grad or barycentric.requires_grad)
    if (not needs_grad and attributes.is_floating_point() and backend in ("auto", "cpp")
            and active_backend(backend, attributes.device) == "cpp"):
        return raster_extension.kernels().interpolate(attributes, faces, triangle_id, barycentric)
    _, height, width = triangle_id.shape
    per_face = attributes[:, faces.long()]  # (B'', F, 3, C)
    item = torch.arange(attributes.shape[0], device=attributes.device)[:, None]
    values = per_face[item, triangle_id.clamp_min(0).reshape(triangle_id.shape[0], -1)]  # (B, H W, 3, C)
    weights = (barycentric * (triangle_id >= 0)[..., None]).to(values.dtype)
    weights = weights.reshape(triangle_id.shape[0], -1, 3, 1)
    return (values * weights).sum(dim=2).view(batch_size, height, width, -1)
