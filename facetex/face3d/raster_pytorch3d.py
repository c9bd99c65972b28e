"""The rasteriser's optional pytorch3d backend: which triangle each pixel sees, found by
pytorch3d's ``rasterize_meshes`` in the rasteriser's screen convention."""
from __future__ import annotations

import torch
from torch import Tensor


def pytorch3d_available() -> bool:
    """Whether pytorch3d's renderer imports."""
    try:
        import pytorch3d.renderer  # noqa: F401
    except ImportError:
        return False
    return True


@torch.no_grad()
def visible_triangles_pytorch3d(xy: Tensor, z: Tensor | None, faces: Tensor, height: int, width: int,
                                cull_backfaces: bool) -> Tensor:
    """``(B, H, W)`` long id of the nearest triangle covering each pixel centre, -1 if none,
    found by pytorch3d's rasteriser (the contract of ``rasterizer._visible_triangles_torch``).

    pytorch3d's NDC has +x left, +y up, the shorter image side spanning [-1, 1], and skips
    triangles with depth <= 0, so x, y are mapped as ``(W - 2x) / s``, ``(H - 2y) / s`` with
    ``s = min(H, W)`` and depth is shifted to start at 1.
    """
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    scale = float(min(height, width))
    ndc_x = (width - 2.0 * xy[..., 0]) / scale
    ndc_y = (height - 2.0 * xy[..., 1]) / scale
    depth = torch.ones_like(ndc_x) if z is None else z - z.amin() + 1.0
    verts = torch.stack([ndc_x, ndc_y, depth], dim=-1).float()
    faces = faces.long()
    kept = []
    for item in range(xy.shape[0]):
        keep = torch.ones(len(faces), dtype=torch.bool, device=xy.device)
        if cull_backfaces:
            a, b, c = (xy[item, faces[:, k]] for k in range(3))
            area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
            keep = area < 0
        kept.append(keep.nonzero().squeeze(1))
    meshes = Meshes(verts=list(verts), faces=[faces[k] for k in kept])
    pix_to_face, _, _, _ = rasterize_meshes(meshes, image_size=(height, width), blur_radius=0.0,
                                            faces_per_pixel=1, perspective_correct=False)
    packed = pix_to_face[..., 0]
    original = torch.cat(kept)
    return torch.where(packed >= 0, original[packed.clamp_min(0)], -1)
