"""Direction files in the shapes, dtypes and devices the official repositories publish them, walked as the official
editors walk them."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from facetex.gan.pose_walk import BoundaryFileError, apply_walk, load_boundary


@contextmanager
def saved_as_cuda() -> Iterator[None]:
    """``torch.save`` tags every storage ``cuda:0``, as on the GPU machine e4e's directions were saved on."""
    entry = (0, lambda storage: "cuda:0", lambda storage, location: None)
    torch.serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        torch.serialization._package_registry.remove(entry)


def test_interfacegan_float64_boundary_reads_as_its_float32_row(tmp_path: Path) -> None:
    direction = np.random.default_rng(0).normal(size=(1, 512))
    direction /= np.linalg.norm(direction)  # float64 and unit-norm, as InterFaceGAN's train_boundary saves it
    np.save(tmp_path / "stylegan_ffhq_pose_w_boundary.npy", direction)
    loaded = load_boundary(tmp_path / "stylegan_ffhq_pose_w_boundary.npy")
    assert loaded.shape == (1, 512) and loaded.dtype == torch.float32
    np.testing.assert_allclose(loaded.numpy(), direction, atol=1e-7)


def test_a_direction_that_is_not_unit_norm_walks_as_the_official_editors_walk_it(tmp_path: Path) -> None:
    """InterFaceGAN (W+), e4e and 3D-GANTex all edit ``latent + f * direction`` with the file's vector as it is."""
    direction = 2.5 * torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(3)))
    torch.save(direction, tmp_path / "scaled.pt")
    np.save(tmp_path / "scaled.npy", direction.numpy())
    latent = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(4))
    for name in ("scaled.pt", "scaled.npy"):
        loaded = load_boundary(tmp_path / name)
        torch.testing.assert_close(apply_walk(latent, loaded, torch.tensor([-3.0, 2.0]))[0],
                                   torch.stack([latent[0] - 3.0 * direction, latent[0] + 2.0 * direction]))


def test_e4e_pose_direction_of_shape_1_18_512_saved_on_cuda(tmp_path: Path) -> None:
    row = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(1)), dim=0)
    path = tmp_path / "pose.pt"
    with saved_as_cuda():
        torch.save(row.expand(1, 18, 512).clone(), path)
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really names a CUDA device
        torch.load(path, weights_only=True)
    loaded = load_boundary(path)
    assert loaded.shape == (18, 512) and loaded.device.type == "cpu"
    torch.testing.assert_close(loaded, row.expand(18, 512))


@pytest.mark.parametrize("shape", [(1, 512), (18, 512), (512,)])
def test_e4e_age_smile_and_per_row_directions(tmp_path: Path, shape: tuple[int, ...]) -> None:
    direction = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 3
    torch.save(direction, tmp_path / "age.pt")
    loaded = load_boundary(tmp_path / "age.pt")
    torch.testing.assert_close(loaded, direction.reshape(-1, 512))


def test_other_shapes_and_contents_are_refused_naming_the_accepted_shapes(tmp_path: Path) -> None:
    torch.save(torch.ones(2, 18, 512), tmp_path / "batch.pt")
    with pytest.raises(BoundaryFileError, match=r"\(2, 18, 512\); expected .*\(1, 18, 512\)"):
        load_boundary(tmp_path / "batch.pt")
    torch.save({"direction": torch.ones(512)}, tmp_path / "dict.pt")
    with pytest.raises(BoundaryFileError, match="holds a dict, not a tensor"):
        load_boundary(tmp_path / "dict.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BoundaryFileError, match="cannot read .*e4e direction"):
        load_boundary(tmp_path / "cut.pt")


def test_ganspace_component_reads_as_that_unit_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    components = np.linalg.qr(rng.normal(size=(512, 512)))[0][:, :20].T.reshape(20, 1, 512)  # orthonormal (K, 1, D)
    # decomposition.py saves them with np.savez_compressed: act_*, lat_comp, lat_mean, lat_stdev, var_ratio, ...
    np.savez_compressed(tmp_path / "stylegan2-ffhq_style_ipca_c80_n300000_w.npz",
                        lat_comp=components.astype(np.float32), lat_mean=rng.normal(size=(1, 512)).astype(np.float32),
                        lat_stdev=np.linspace(3, 1, 20).astype(np.float32))
    loaded = load_boundary(tmp_path / "stylegan2-ffhq_style_ipca_c80_n300000_w.npz", component=1)
    assert loaded.shape == (1, 512) and loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, torch.from_numpy(components[1].astype(np.float32)), atol=1e-6, rtol=0)
    with pytest.raises(BoundaryFileError, match="holds 20 GANSpace components; choose .* component=k, 0 <= k < 20"):
        load_boundary(tmp_path / "stylegan2-ffhq_style_ipca_c80_n300000_w.npz")
    with pytest.raises(BoundaryFileError, match="0 <= k < 20 \\(got 20\\)"):
        load_boundary(tmp_path / "stylegan2-ffhq_style_ipca_c80_n300000_w.npz", component=20)
    np.savez(tmp_path / "other.npz", weights=components)
    with pytest.raises(BoundaryFileError, match="no 'lat_comp' array \\(found \\['weights'\\]"):
        load_boundary(tmp_path / "other.npz", component=0)
    np.save(tmp_path / "boundary.npy", components[0])
    with pytest.raises(BoundaryFileError, match="holds one direction; component=2 only picks"):
        load_boundary(tmp_path / "boundary.npy", component=2)
