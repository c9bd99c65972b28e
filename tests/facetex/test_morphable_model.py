"""Morphable-model loaders on the official layouts (tiny written files and the real assets)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from facetex.face3d.geometry import face_normals
from facetex.face3d.morphable_model import ModelFileError, MorphableModel, mirror_vertices, read_ibug_mapping


def tiny_bfm_dict(generator: np.random.Generator, triangles_first: bool = True) -> tuple[dict, np.ndarray]:
    """A 3DDFA_V2-layout BFM dict over a 4 x 5 grid in the z = 0 plane, and its vertices (N, 3)."""
    ys, xs = np.mgrid[0:4, 0:5]
    vertices = np.stack([xs.ravel() - 2.0, 1.5 - ys.ravel(), np.zeros(20)], axis=1).astype(np.float32) * 1000
    num = len(vertices)
    index = np.arange(num).reshape(4, 5)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel()
    # Clockwise seen from +z (like 3DDFA_V2's tri.pkl): (top-left, top-right, bottom-left) with y up.
    tri = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]).astype(np.int32)
    keypoint_vertices = np.array([0, 7, 19])
    data = {
        "u": vertices.reshape(-1, 1),  # x0, y0, z0, x1, ... as 3DDFA's reshape(3, -1, order='F') expects
        "w_shp": generator.normal(size=(3 * num, 4)).astype(np.float32),
        "w_exp": generator.normal(size=(3 * num, 2)).astype(np.float32),
        "tri": tri.T if triangles_first else tri,
        "keypoints": np.stack([3 * keypoint_vertices + k for k in range(3)], 1).ravel(),
    }
    return data, vertices


def write_pickle(path: Path, data: object) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return path


@pytest.mark.parametrize("triangles_first", [True, False])
def test_bfm_pickle_layout_reconstructs_known_vertices(tmp_path: Path, triangles_first: bool) -> None:
    data, vertices = tiny_bfm_dict(np.random.default_rng(0), triangles_first)
    model = MorphableModel.from_bfm(write_pickle(tmp_path / "bfm_noneck_v3.pkl", data))
    assert (model.num_vertices, model.num_shape, model.num_expression) == (20, 4, 2)
    assert torch.equal(model.mean, torch.from_numpy(vertices))
    alpha_shp = np.array([0.5, -1.0, 2.0, 0.1], dtype=np.float32)
    alpha_exp = np.array([-0.3, 0.7], dtype=np.float32)
    # 3DDFA_V2: (u + w_shp @ alpha_shp + w_exp @ alpha_exp).reshape(3, -1, order='F') -> (3, N).
    flat = data["u"] + data["w_shp"] @ alpha_shp[:, None] + data["w_exp"] @ alpha_exp[:, None]
    expected = flat.reshape(3, -1, order="F").T
    got = model(torch.from_numpy(alpha_shp)[None], torch.from_numpy(alpha_exp)[None])[0]
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-3)
    assert torch.equal(model.landmark_vertices, torch.tensor([0, 7, 19]))
    assert torch.equal(model.landmarks(got[None])[0], got[[0, 7, 19]])
    # Clockwise input triangles are turned to face the viewer (+z).
    assert bool((face_normals(model.mean[None], model.triangles)[0, :, 2] > 0).all())
    # The grid is mirror-symmetric about x = 0: column j maps to column 4 - j.
    columns = torch.arange(20) % 5
    assert torch.equal(model.symmetry % 5, 4 - columns)


def test_bfm_tri_path_replaces_the_pickles_triangles(tmp_path: Path) -> None:
    data, _ = tiny_bfm_dict(np.random.default_rng(1))
    reversed_tri = data["tri"][:, ::-1].copy()
    tri_path = write_pickle(tmp_path / "tri.pkl", reversed_tri)
    model = MorphableModel.from_bfm(write_pickle(tmp_path / "bfm.pkl", data), tri_path=tri_path)
    assert model.triangles.shape == (24, 3)
    assert torch.equal(model.triangles[:, 0], torch.from_numpy(reversed_tri[0].astype(np.int64)))


def test_damaged_tri_pickle_is_a_model_file_error(tmp_path: Path) -> None:
    data, _ = tiny_bfm_dict(np.random.default_rng(1))
    (tmp_path / "tri.pkl").write_bytes(b"\x80\x04truncated")
    with pytest.raises(ModelFileError, match=r"tri\.pkl.*not a readable pickle"):
        MorphableModel.from_bfm(write_pickle(tmp_path / "bfm.pkl", data), tri_path=tmp_path / "tri.pkl")


def test_missing_keys_and_files_raise_clear_errors(tmp_path: Path) -> None:
    data, _ = tiny_bfm_dict(np.random.default_rng(2))
    del data["w_exp"]
    with pytest.raises(ModelFileError, match=r"w_exp.*bfm_noneck_v3\.pkl layout"):
        MorphableModel.from_bfm(write_pickle(tmp_path / "bad.pkl", data))
    with pytest.raises(FileNotFoundError, match="not found"):
        MorphableModel.from_bfm(tmp_path / "absent.pkl")
    (tmp_path / "garbage.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match="not a readable pickle"):
        MorphableModel.from_bfm(tmp_path / "garbage.pkl")
    (tmp_path / "broken.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        MorphableModel.from_bfm_mean(tmp_path / "broken.npz")
    np.savez(tmp_path / "partial.npz", mean=np.zeros((3, 3), np.float32))
    with pytest.raises(ModelFileError, match=r"shape_basis.*ibug68_to_vertex"):
        MorphableModel.from_sfm(tmp_path / "partial.npz")
    data, _ = tiny_bfm_dict(np.random.default_rng(3))
    data["keypoints"] = np.arange(9) * 2
    with pytest.raises(ModelFileError, match="keypoints"):
        MorphableModel.from_bfm(write_pickle(tmp_path / "keys.pkl", data))


def test_coefficient_shapes_are_checked(tmp_path: Path) -> None:
    data, _ = tiny_bfm_dict(np.random.default_rng(4))
    model = MorphableModel.from_bfm(write_pickle(tmp_path / "bfm.pkl", data))
    with pytest.raises(ValueError, match=r"\(B, 4\) shape"):
        model(torch.zeros(1, 3), torch.zeros(1, 2))


def test_mirror_vertices_on_a_symmetric_cloud() -> None:
    generator = torch.Generator().manual_seed(0)
    half = torch.rand(30, 3, generator=generator) + torch.tensor([0.1, 0.0, 0.0])
    points = torch.cat([half, half * torch.tensor([-1.0, 1.0, 1.0])])
    assert torch.equal(mirror_vertices(points), torch.cat([torch.arange(30, 60), torch.arange(30)]))


@pytest.fixture(scope="module")
def sfm(shared_assets: Path) -> MorphableModel:
    return MorphableModel.from_sfm(shared_assets / "sfm" / "sfm_3448.npz",
                                   shared_assets / "sfm" / "sfm_reference_symmetry.txt")


def test_sfm_loads_with_known_sizes(sfm: MorphableModel) -> None:
    assert (sfm.num_vertices, sfm.triangles.shape[0], sfm.num_shape, sfm.num_expression) == (3448, 6736, 63, 6)
    assert float(sfm.uv.min()) >= 0.0 and float(sfm.uv.max()) <= 1.0
    # v-up: the forehead (large y) sits high in the texture.
    assert np.corrcoef(sfm.uv[:, 1].numpy(), sfm.mean[:, 1].numpy())[0, 1] > 0.95
    assert bool((face_normals(sfm.mean[None], sfm.triangles)[0, :, 2] > 0).float().mean() > 0.95)
    # 50 of the 68 iBUG points; chin tip (iBUG 9 -> id 8) is vertex 33.
    assert len(sfm.landmark_ids) == 50 and int(sfm.landmark_vertices[sfm.landmark_ids == 8]) == 33


def test_sfm_coefficients_move_vertices_along_the_basis(sfm: MorphableModel) -> None:
    zero = sfm(torch.zeros(1, 63), torch.zeros(1, 6))
    assert torch.equal(zero[0], sfm.mean)
    shape = torch.zeros(1, 63)
    shape[0, 4] = 2.0
    expression = torch.zeros(1, 6)
    expression[0, 3] = -1.0
    moved = sfm(shape, expression)[0]
    expected = sfm.mean + 2.0 * sfm.shape_basis[..., 4] - sfm.expression_basis[..., 3]
    assert torch.allclose(moved, expected, atol=1e-4)


def test_sfm_symmetry_is_a_mirror_involution(sfm: MorphableModel) -> None:
    vertex = torch.arange(sfm.num_vertices)
    assert float((sfm.symmetry[sfm.symmetry] == vertex).float().mean()) > 0.97
    mirrored = sfm.mean[sfm.symmetry] * torch.tensor([-1.0, 1.0, 1.0])
    distance = (mirrored - sfm.mean).norm(dim=1)  # millimetres
    assert float(distance.median()) < 1.0 and float(distance.max()) < 5.0
    # The shipped table and the nearest-neighbour rule agree on the reference vertices.
    assert float((mirror_vertices(sfm.mean)[:845] == sfm.symmetry[:845]).float().mean()) > 0.95


def test_ibug_mapping_file_matches_the_npz(shared_assets: Path, sfm: MorphableModel) -> None:
    ids, vertices = read_ibug_mapping(shared_assets / "sfm" / "ibug_to_sfm.txt")
    assert torch.equal(ids, sfm.landmark_ids) and torch.equal(vertices, sfm.landmark_vertices)


def test_sfm_bin_needs_eos_or_matches_the_npz(shared_assets: Path, sfm: MorphableModel) -> None:
    folder = shared_assets / "sfm"
    args = (folder / "sfm_shape_3448.bin", folder / "expression_blendshapes_3448.bin", folder / "ibug_to_sfm.txt",
            folder / "sfm_reference_symmetry.txt")
    try:
        import eos  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="eos-py"):
            MorphableModel.from_sfm_bin(*args)
        return
    from_bin = MorphableModel.from_sfm_bin(*args)
    for name, value in sfm.state_dict().items():
        assert torch.equal(from_bin.state_dict()[name], value), name


def test_bfm_mean_from_shared_assets(shared_assets: Path) -> None:
    folder = shared_assets / "bfm"
    model = MorphableModel.from_bfm_mean(folder / "bfm_noneck_mean.npz", folder / "BFM_UV.mat", folder / "indices.npy")
    assert (model.num_vertices, model.triangles.shape[0], len(model.landmark_vertices)) == (38365, 76073, 68)
    assert (model.num_shape, model.num_expression) == (0, 0)
    assert torch.equal(model(torch.zeros(2, 0), torch.zeros(2, 0)), model.mean.expand(2, -1, -1))
    assert model.uv.shape == (38365, 2) and float(model.uv.min()) >= 0 and float(model.uv.max()) <= 1
    # 3DDFA_V2's triangles are clockwise; after loading, normals face the viewer.
    assert float((face_normals(model.mean[None], model.triangles)[0, :, 2] > 0).float().mean()) > 0.9
    # Nose tip (iBUG 31 -> id 30) is the frontmost landmark; right eye corner (id 36) is at -x.
    landmarks = model.landmarks(model.mean[None])[0]
    assert int(landmarks[:, 2].argmax()) == 30 and float(landmarks[36, 0]) < 0 < float(landmarks[45, 0])
    vertex = torch.arange(model.num_vertices)
    assert float((model.symmetry[model.symmetry] == vertex).float().mean()) > 0.95
    distance = (model.mean[model.symmetry] * torch.tensor([-1.0, 1.0, 1.0]) - model.mean).norm(dim=1)
    assert float(distance.median()) < 1000.0  # micrometres
    with pytest.raises(ModelFileError, match="indices_path"):
        MorphableModel.from_bfm_mean(folder / "bfm_noneck_mean.npz", folder / "BFM_UV.mat")
