"""Linear 3D morphable models (Surrey Face Model, Basel Face Model): coefficients -> mesh.

``vertices = mean + shape_basis @ shape_coeffs + expression_basis @ expression_coeffs``,
in model space (x to the viewer's right on a frontal face, y up, z toward the viewer,
in the model file's units: millimetres for the SFM, micrometres for the BFM). Both
files already use these axes, so no conversion is applied; UVs are stored v-up (OBJ).
Loaders orient triangles counter-clockwise seen from outside (normals toward the
viewer on the face): 3DDFA_V2's BFM triangles come clockwise and are flipped.

Mirror symmetry (used to complete textures) maps each vertex to its mirror image
across the plane x = 0. :func:`mirror_vertices` finds it as the nearest vertex to the
x-reflected mean shape; the SFM also ships a hand-made table for its first 845 vertices.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from foundation.checkpoints import load_pickle
from foundation.errors import InputError

IBUG68 = 68


class ModelFileError(InputError, ValueError):
    """A morphable-model file is unreadable or not in the expected layout."""


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found at {path}: check the path")
    return path


def _load_npz(path: Path, keys: tuple[str, ...], layout: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file, or a :class:`ModelFileError` naming what is wrong."""
    try:
        with np.load(path) as data:
            _require_keys(data, keys, path, layout)
            return {key: np.asarray(data[key]) for key in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, ModelFileError):
            raise
        raise ModelFileError(f"{path} is not a readable .npz archive ({error}); expected {layout}") from error


def _require_keys(data: dict | np.lib.npyio.NpzFile, keys: tuple[str, ...], path: Path, layout: str) -> None:
    missing = [key for key in keys if key not in data]
    if missing:
        raise ModelFileError(f"{path} lacks the key(s) {missing}; expected {layout}")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def mirror_vertices(positions: Tensor) -> Tensor:
    """Mirror vertex of each vertex: the nearest vertex to its reflection across x = 0.

    Args:
        positions: ``(V, 3)`` a symmetric shape (usually the mean), centred on x = 0.

    Returns:
        ``(V,)`` long. On a symmetric mesh this is an involution for nearly all vertices
        (vertices on the midline map to themselves).
    """
    points = positions.detach().double().cpu().numpy()
    _, nearest = cKDTree(points).query(points * np.array([-1.0, 1.0, 1.0]))
    return torch.as_tensor(nearest, dtype=torch.long, device=positions.device)


class MorphableModel(nn.Module):
    """A linear face model with topology, UVs, 68-point landmarks and mirror symmetry.

    Buffers: ``mean (V, 3)``, ``shape_basis (V, 3, S)``, ``expression_basis (V, 3, E)``,
    ``triangles (F, 3)`` long, ``landmark_vertices (L,)`` long with ``landmark_ids (L,)``
    long (their 0-based iBUG-68 ids), optional ``uv (V, 2)`` in [0, 1] v-up and
    ``symmetry (V,)`` long (mirror vertex). S or E may be 0 (a mean-only model).
    """

    mean: Tensor
    shape_basis: Tensor
    expression_basis: Tensor
    triangles: Tensor
    landmark_vertices: Tensor
    landmark_ids: Tensor
    uv: Tensor | None
    symmetry: Tensor | None

    def __init__(self, mean: Tensor, shape_basis: Tensor, expression_basis: Tensor, triangles: Tensor,
                 landmark_vertices: Tensor, landmark_ids: Tensor, uv: Tensor | None = None,
                 symmetry: Tensor | None = None) -> None:
        super().__init__()
        num_vertices = mean.shape[0]
        _expect(mean.dim() == 2 and mean.shape[1] == 3, f"mean must be (V, 3), got {tuple(mean.shape)}")
        for name, basis, width in (("shape_basis", shape_basis, "S"), ("expression_basis", expression_basis, "E")):
            _expect(basis.dim() == 3 and basis.shape[:2] == (num_vertices, 3),
                    f"{name} must be (V={num_vertices}, 3, {width}), got {tuple(basis.shape)}")
        _expect(triangles.dim() == 2 and triangles.shape[1] == 3,
                f"triangles must be (F, 3), got {tuple(triangles.shape)}")
        _expect(triangles.numel() == 0 or (int(triangles.min()) >= 0 and int(triangles.max()) < num_vertices),
                f"triangles must index 0..{num_vertices - 1}")
        _expect(landmark_vertices.dim() == 1 and landmark_vertices.shape == landmark_ids.shape,
                "landmark_vertices and landmark_ids must both be (L,)")
        _expect(landmark_vertices.numel() == 0 or int(landmark_vertices.max()) < num_vertices,
                f"landmark_vertices must index 0..{num_vertices - 1}")
        _expect(uv is None or tuple(uv.shape) == (num_vertices, 2), f"uv must be (V={num_vertices}, 2)")
        _expect(symmetry is None or tuple(symmetry.shape) == (num_vertices,), f"symmetry must be (V={num_vertices},)")
        self.register_buffer("mean", mean)
        self.register_buffer("shape_basis", shape_basis)
        self.register_buffer("expression_basis", expression_basis)
        self.register_buffer("triangles", triangles.long())
        self.register_buffer("landmark_vertices", landmark_vertices.long())
        self.register_buffer("landmark_ids", landmark_ids.long())
        self.register_buffer("uv", uv)
        self.register_buffer("symmetry", None if symmetry is None else symmetry.long())

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def num_shape(self) -> int:
        return self.shape_basis.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.expression_basis.shape[-1]

    def forward(self, shape_coeffs: Tensor, expression_coeffs: Tensor) -> Tensor:
        """Vertices ``(B, V, 3)`` from ``shape_coeffs (B, S)`` and ``expression_coeffs (B, E)``."""
        if shape_coeffs.shape[-1] != self.num_shape or expression_coeffs.shape[-1] != self.num_expression:
            raise ValueError(f"expected (B, {self.num_shape}) shape and (B, {self.num_expression}) expression "
                             f"coefficients, got {tuple(shape_coeffs.shape)} and {tuple(expression_coeffs.shape)}")
        offset = torch.einsum("vcs,bs->bvc", self.shape_basis, shape_coeffs.to(self.shape_basis.dtype))
        offset = offset + torch.einsum("vce,be->bvc", self.expression_basis,
                                       expression_coeffs.to(self.expression_basis.dtype))
        return self.mean + offset

    def landmarks(self, vertices: Tensor) -> Tensor:
        """The landmark vertices ``(B, L, 3)`` of ``vertices (B, V, 3)``, in ``landmark_ids`` order."""
        return vertices[:, self.landmark_vertices]

    # Loaders -------------------------------------------------------------------------

    @classmethod
    def from_sfm(cls, npz_path: str | Path, symmetry_path: str | Path | None = None) -> MorphableModel:
        """The Surrey Face Model from its numpy export (``sfm_3448.npz``).

        Keys: ``mean (V, 3)``, ``shape_basis (V, 3, S)`` (scaled by the standard deviations),
        ``expression_basis (V, 3, E)``, ``triangles (F, 3)``, ``uv (V, 2)`` (eos' v-down
        convention; flipped to v-up here) and ``ibug68_to_vertex (L, 2)`` = (1-based iBUG id,
        vertex). ``symmetry_path`` is eos' ``sfm_reference_symmetry.txt`` (see
        :func:`read_sfm_symmetry`); without it symmetry comes from :func:`mirror_vertices`.
        """
        path = _require_file(npz_path, "SFM npz")
        keys = ("mean", "shape_basis", "expression_basis", "triangles", "uv", "ibug68_to_vertex")
        layout = ("the sfm_3448.npz layout: mean (V,3), shape_basis (V,3,S), expression_basis (V,3,E), "
                  "triangles (F,3), uv (V,2), ibug68_to_vertex (L,2)")
        arrays = {key: torch.from_numpy(value) for key, value in _load_npz(path, keys, layout).items()}
        mapping = arrays["ibug68_to_vertex"]
        if mapping.dim() != 2 or mapping.shape[1] != 2:
            raise ModelFileError(f"{path}: ibug68_to_vertex must be (L, 2), got {tuple(mapping.shape)}")
        mean = arrays["mean"].float()
        symmetry = (mirror_vertices(mean) if symmetry_path is None else read_sfm_symmetry(symmetry_path, mean))
        return cls(mean, arrays["shape_basis"].float(), arrays["expression_basis"].float(),
                   _orient_outward(mean, arrays["triangles"].long()),
                   landmark_vertices=mapping[:, 1], landmark_ids=mapping[:, 0] - 1,
                   uv=_flip_v(arrays["uv"].float()), symmetry=symmetry)

    @classmethod
    def from_sfm_bin(cls, shape_path: str | Path, blendshapes_path: str | Path, landmark_mapping_path: str | Path,
                     symmetry_path: str | Path | None = None) -> MorphableModel:
        """The Surrey Face Model from eos' original cereal files (needs the optional ``eos-py``).

        ``shape_path``: ``sfm_shape_3448.bin``; ``blendshapes_path``:
        ``expression_blendshapes_3448.bin``; ``landmark_mapping_path``: ``ibug_to_sfm.txt``.
        """
        try:
            import eos
        except ImportError as error:
            raise RuntimeError("reading .bin Surrey Face Model files needs the optional package eos-py "
                               "(pip install eos-py), or use MorphableModel.from_sfm on the npz export") from error
        model = eos.morphablemodel.load_model(str(_require_file(shape_path, "SFM shape model")))
        shape_model = model.get_shape_model()
        blendshapes = eos.morphablemodel.load_blendshapes(str(_require_file(blendshapes_path, "SFM blendshapes")))
        mean = torch.from_numpy(np.asarray(shape_model.get_mean(), dtype=np.float32)).view(-1, 3)
        shape_basis = torch.from_numpy(np.asarray(shape_model.get_rescaled_pca_basis(), dtype=np.float32))
        expression = np.stack([np.asarray(b.deformation, dtype=np.float32) for b in blendshapes], axis=-1)
        uv = torch.from_numpy(np.asarray(model.get_texture_coordinates(), dtype=np.float32))
        landmark_ids, landmark_vertices = read_ibug_mapping(landmark_mapping_path)
        symmetry = mirror_vertices(mean) if symmetry_path is None else read_sfm_symmetry(symmetry_path, mean)
        return cls(mean, shape_basis.view(len(mean), 3, -1), torch.from_numpy(expression).view(len(mean), 3, -1),
                   _orient_outward(mean, torch.as_tensor(np.asarray(shape_model.get_triangle_list()),
                                                         dtype=torch.long)),
                   landmark_vertices, landmark_ids, uv=_flip_v(uv), symmetry=symmetry)

    @classmethod
    def from_bfm(cls, pkl_path: str | Path, uv_mat_path: str | Path | None = None,
                 indices_path: str | Path | None = None, tri_path: str | Path | None = None) -> MorphableModel:
        """The BFM of 3DDFA_V2 (``bfm_noneck_v3.pkl``: 38,365 vertices, 40 shape, 10 expression).

        The pickle is a dict: ``u (3N, 1)``, ``w_shp (3N, S)``, ``w_exp (3N, E)`` with xyz
        interleaved per vertex (3DDFA reshapes them with ``reshape(3, -1, order='F')``),
        ``tri`` ((F, 3) or (3, F)) and ``keypoints (204,)``, the flat xyz indices of the
        68 landmarks. 3DDFA_V2 replaces the pickle's ``tri`` with ``configs/tri.pkl``; pass
        it as ``tri_path`` to do the same. UVs: ``BFM_UV.mat`` (key ``UV``, full 53,215-vertex
        BFM) cut by ``indices.npy``. Symmetry comes from :func:`mirror_vertices`.
        """
        path = _require_file(pkl_path, "BFM pickle")
        data = load_pickle(path, ModelFileError, "3DDFA_V2's bfm_noneck_v3.pkl")
        if not isinstance(data, dict):
            raise ModelFileError(f"{path} holds a {type(data).__name__}, expected a dict with u, w_shp, w_exp, tri, "
                                 f"keypoints")
        _require_keys(data, ("u", "w_shp", "w_exp", "tri", "keypoints"), path,
                      "3DDFA_V2's bfm_noneck_v3.pkl layout: u (3N,1), w_shp (3N,S), w_exp (3N,E), tri, "
                      "keypoints (204,)")
        u = np.asarray(data["u"], dtype=np.float32).reshape(-1)
        if u.size % 3:
            raise ModelFileError(f"{path}: u has {u.size} values, not a multiple of 3 (x, y, z per vertex)")
        num_vertices = u.size // 3
        w_shp, w_exp = (np.asarray(data[key], dtype=np.float32) for key in ("w_shp", "w_exp"))
        for key, basis in (("w_shp", w_shp), ("w_exp", w_exp)):
            if basis.ndim != 2 or basis.shape[0] != 3 * num_vertices:
                raise ModelFileError(f"{path}: {key} must be (3N={3 * num_vertices}, K), got {basis.shape}")
        triangles = _read_bfm_triangles(tri_path) if tri_path is not None else _triangles_fk3(data["tri"], path)
        landmark_vertices = _keypoints_to_vertices(np.asarray(data["keypoints"]), path)
        mean = torch.from_numpy(u).view(num_vertices, 3)
        return cls(mean, torch.from_numpy(w_shp).view(num_vertices, 3, -1),
                   torch.from_numpy(w_exp).view(num_vertices, 3, -1), _orient_outward(mean, triangles),
                   landmark_vertices, torch.arange(len(landmark_vertices)),
                   uv=_bfm_uv(uv_mat_path, indices_path, num_vertices), symmetry=mirror_vertices(mean))

    @classmethod
    def from_bfm_mean(cls, npz_path: str | Path, uv_mat_path: str | Path | None = None,
                      indices_path: str | Path | None = None) -> MorphableModel:
        """The mean face of 3DDFA_V2's BFM (``bfm_noneck_mean.npz``) with zero-width bases.

        Keys used: ``u (3, N)`` mean shape, ``tri (3, F)``, ``kpt_vid (68,)`` landmark
        vertices. The dense bases are not in this file, so S = E = 0.
        """
        path = _require_file(npz_path, "BFM mean npz")
        arrays = _load_npz(path, ("u", "tri", "kpt_vid"), "the bfm_noneck_mean.npz layout: u (3,N), tri (3,F), "
                           "kpt_vid (68,)")
        u, tri, kpt_vid = arrays["u"], arrays["tri"], arrays["kpt_vid"]
        if u.ndim != 2 or u.shape[0] != 3:
            raise ModelFileError(f"{path}: u must be (3, N), got {u.shape}")
        mean = torch.from_numpy(u.T.astype(np.float32).copy())
        num_vertices = len(mean)
        empty = mean.new_zeros(num_vertices, 3, 0)
        landmark_vertices = torch.from_numpy(kpt_vid.astype(np.int64))
        return cls(mean, empty, empty.clone(), _orient_outward(mean, _triangles_fk3(tri, path)), landmark_vertices,
                   torch.arange(len(landmark_vertices)), uv=_bfm_uv(uv_mat_path, indices_path, num_vertices),
                   symmetry=mirror_vertices(mean))


def _orient_outward(mean: Tensor, triangles: Tensor) -> Tensor:
    """``triangles (F, 3)`` with columns 1 and 2 swapped if the face's summed area normal
    points away from the viewer (-z), so that normals point out of the face."""
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= len(mean)):
        raise ModelFileError(f"triangles index vertices {int(triangles.min())}..{int(triangles.max())} but the "
                             f"model has {len(mean)} (0-based indices expected)")
    a, b, c = (mean[triangles[:, k]].double() for k in range(3))
    if float(torch.linalg.cross(b - a, c - a, dim=-1)[:, 2].sum()) < 0:
        return triangles[:, [0, 2, 1]].contiguous()
    return triangles


def _flip_v(uv: Tensor) -> Tensor:
    """v-down (image rows) texture coordinates -> v-up (OBJ), or back."""
    return torch.stack([uv[:, 0], 1.0 - uv[:, 1]], dim=1)


def _triangles_fk3(tri: np.ndarray, path: Path) -> Tensor:
    """Triangles as ``(F, 3)`` long from a ``(F, 3)`` or ``(3, F)`` array."""
    tri = np.asarray(tri)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise ModelFileError(f"{path}: triangles must be (F, 3) or (3, F), got {tri.shape}")
    if tri.shape[1] != 3:
        tri = tri.T
    return torch.from_numpy(np.ascontiguousarray(tri).astype(np.int64))


def _read_bfm_triangles(tri_path: str | Path) -> Tensor:
    path = _require_file(tri_path, "BFM triangle pickle (tri.pkl)")
    return _triangles_fk3(load_pickle(path, ModelFileError, "3DDFA_V2's tri.pkl (the (3, F) triangle array)"), path)


def _keypoints_to_vertices(keypoints: np.ndarray, path: Path) -> Tensor:
    """3DDFA's flat xyz landmark indices ``(3L,)`` -> vertex ids ``(L,)``."""
    flat = keypoints.reshape(-1).astype(np.int64)
    if flat.size % 3 or not (np.array_equal(flat[1::3], flat[0::3] + 1) and np.array_equal(flat[2::3], flat[0::3] + 2)
                             and np.all(flat[0::3] % 3 == 0)):
        raise ModelFileError(f"{path}: keypoints must be flat xyz indices (3v, 3v+1, 3v+2 per landmark), "
                             f"got {flat[:6]}...")
    return torch.from_numpy(flat[0::3] // 3)


def _bfm_uv(uv_mat_path: str | Path | None, indices_path: str | Path | None, num_vertices: int) -> Tensor | None:
    """BFM texture coordinates ``(N, 2)`` (v-up) from ``BFM_UV.mat`` cut by ``indices.npy``."""
    if uv_mat_path is None:
        return None
    from scipy.io import loadmat

    path = _require_file(uv_mat_path, "BFM UV file (BFM_UV.mat)")
    mat = loadmat(str(path))
    if "UV" not in mat:
        raise ModelFileError(f"{path} lacks the key 'UV'; expected 3DDFA_V2's BFM_UV.mat ((53215, 2) coordinates)")
    uv = np.asarray(mat["UV"], dtype=np.float32)
    if indices_path is not None:
        indices = np.load(_require_file(indices_path, "BFM vertex indices (indices.npy)")).astype(np.int64).reshape(-1)
        if indices.max() >= len(uv):
            raise ModelFileError(f"{indices_path} indexes vertex {indices.max()} but {path} has {len(uv)}")
        uv = uv[indices]
    if uv.shape != (num_vertices, 2):
        raise ModelFileError(f"UVs are {uv.shape} but the mesh has {num_vertices} vertices: pass indices_path "
                             f"(indices.npy) to cut the full-BFM UVs to the no-neck mesh")
    return torch.from_numpy(uv)


def read_sfm_symmetry(path: str | Path, mean: Tensor) -> Tensor:
    """Mirror vertex of each vertex from eos' ``sfm_reference_symmetry.txt``.

    The file has one 1-based vertex index per line for the 845 vertices of the reference
    mesh, which are the first 845 vertices of every SFM resolution. Vertices past the
    table (2,603 of the 3448-vertex model) get :func:`mirror_vertices` of ``mean (V, 3)``.
    """
    path = _require_file(path, "SFM symmetry table")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            match = re.match(r"\s*(\d+)", line)
            if match is None:
                raise ModelFileError(f"{path}:{number}: expected a 1-based vertex index, got {line[:40]!r}")
            entries.append(int(match.group(1)) - 1)
    table = torch.tensor(entries, dtype=torch.long)
    if len(table) > len(mean) or (len(table) and (int(table.min()) < 0 or int(table.max()) >= len(table))):
        raise ModelFileError(f"{path}: {len(table)} entries with indices outside 1..{len(table)} do not describe "
                             f"the first vertices of a {len(mean)}-vertex model")
    symmetry = mirror_vertices(mean)
    symmetry[: len(table)] = table.to(symmetry.device)
    return symmetry


def read_ibug_mapping(path: str | Path) -> tuple[Tensor, Tensor]:
    """``(landmark_ids, vertices)``, each ``(L,)`` long, from eos' ``ibug_to_sfm.txt``
    (TOML ``[landmark_mappings]`` lines ``ibug_id = vertex``; ids become 0-based)."""
    path = _require_file(path, "landmark mapping (ibug_to_sfm.txt)")
    pairs, in_section = [], False
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text.startswith("["):
            in_section = text == "[landmark_mappings]"
        elif in_section and text:
            match = re.fullmatch(r"(\d+)\s*=\s*(\d+)", text)
            if match is None:
                raise ModelFileError(f"{path}: unexpected line in [landmark_mappings]: {line!r}")
            pairs.append((int(match.group(1)) - 1, int(match.group(2))))
    if not pairs:
        raise ModelFileError(f"{path} has no [landmark_mappings] section with 'ibug_id = vertex' lines")
    ids, vertices = torch.tensor(pairs, dtype=torch.long).unbind(dim=1)
    if int(ids.max()) >= IBUG68:
        raise ModelFileError(f"{path}: iBUG ids must be 1..{IBUG68}")
    return ids, vertices


ModelFormat = Literal["sfm", "bfm", "bfm_mean"]


def load_morphable_model(
    model_path: str | Path,
    model_format: ModelFormat = "sfm",
    uv_mat_path: str | Path | None = None,
    indices_path: str | Path | None = None,
) -> MorphableModel:
    """Load a ``MorphableModel`` by file format: ``sfm`` (``sfm_3448.npz``), ``bfm``
    (3DDFA_V2's ``bfm_noneck_v3.pkl``) or ``bfm_mean`` (``bfm_noneck_mean.npz``, mean
    face only); the BFM UVs come from ``uv_mat_path`` cut by ``indices_path``."""
    if model_format == "sfm":
        return MorphableModel.from_sfm(model_path)
    if model_format == "bfm":
        return MorphableModel.from_bfm(model_path, uv_mat_path=uv_mat_path, indices_path=indices_path)
    if model_format == "bfm_mean":
        return MorphableModel.from_bfm_mean(model_path, uv_mat_path=uv_mat_path, indices_path=indices_path)
    raise ValueError(f"unknown model_format {model_format!r}; choose 'sfm', 'bfm' or 'bfm_mean'")
