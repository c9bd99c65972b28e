"""The z-buffer rasteriser against a loop-over-triangles reference and known coverage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.rasterizer import bfm_screen_mesh, bfm_uv_mesh, grid_mesh, reference_rasterize, sfm_screen_mesh
from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d import raster_extension
from facetex.face3d.rasterizer import active_backend, interpolate, rasterize, rasterize_uv, uv_to_pixels


def native_available() -> bool:
    return raster_extension.available()


BACKENDS = ["torch", pytest.param("cpp", marks=pytest.mark.skipif(not native_available(),
                                                                   reason="the C++ rasteriser could not be built"))]


def random_mesh(seed: int, size: int, vertices: int = 60, faces: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Random triangles (both windings, some partly off-image) over a ``size`` image."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(1, vertices, 3, generator=generator) * torch.tensor([size * 1.2, size * 1.2, 1.0]) - 0.1 * size
    return points, torch.randint(0, vertices, (faces, 3), generator=generator)


@pytest.mark.parametrize(("seed", "num_faces"), [(0, 40), (1, 40), (2, 300)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference_on_random_meshes(seed: int, num_faces: int, backend: str) -> None:
    screen, faces = random_mesh(seed, 48, vertices=2 * num_faces, faces=num_faces)
    fragments = rasterize(screen, faces, (48, 40), backend=backend)
    triangle_id, barycentric, depth = reference_rasterize(screen[0], faces, (48, 40))
    got_id = fragments.triangle_id[0].numpy()
    assert (got_id == triangle_id).mean() >= 0.999
    same = (got_id == triangle_id) & (triangle_id >= 0)
    assert np.abs(fragments.barycentric[0].numpy()[same] - barycentric[same]).max() < 1e-4
    covered = triangle_id >= 0
    assert np.array_equal(got_id >= 0, covered)
    # Depth order: wherever the ids differ (ties on an edge), the depths still agree.
    assert np.abs(fragments.depth[0].numpy()[covered] - depth[covered]).max() < 1e-4
    assert np.isinf(fragments.depth[0].numpy()[~covered]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearer_triangle_wins_in_either_order(backend: str) -> None:
    far = [[2.0, 2.0, 5.0], [30.0, 2.0, 5.0], [2.0, 30.0, 5.0]]
    near = [[4.0, 4.0, 1.0], [28.0, 6.0, 1.0], [6.0, 28.0, 1.0]]
    for order in ([far, near], [near, far]):
        screen = torch.tensor([sum(order, [])])
        fragments = rasterize(screen, torch.tensor([[0, 1, 2], [3, 4, 5]]), 32, backend=backend)
        near_id = 0 if order[0] is near else 1
        assert fragments.triangle_id[0, 10, 10] == near_id
        assert fragments.depth[0, 10, 10] == pytest.approx(1.0)
        assert fragments.triangle_id[0, 2, 20] == 1 - near_id  # only the far one reaches there


@pytest.mark.parametrize("backend", BACKENDS)
def test_square_covers_exactly_its_pixels(backend: str) -> None:
    # Corners on pixel borders: exactly the 10 x 6 pixels inside, none on the shared diagonal missing.
    screen = torch.tensor([[[3.0, 4.0, 0.0], [13.0, 4.0, 0.0], [13.0, 10.0, 0.0], [3.0, 10.0, 0.0]]])
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]], [[1, 3, 0], [1, 2, 3]]):
        mask = rasterize(screen, torch.tensor(faces), 16, backend=backend).mask[0]
        expected = torch.zeros(16, 16, dtype=torch.bool)
        expected[4:10, 3:13] = True
        assert torch.equal(mask, expected)
    # Corners on pixel centres: the top-left rule keeps a half-open 10 x 6 block.
    centred = screen + torch.tensor([0.5, 0.5, 0.0])
    mask = rasterize(centred, torch.tensor([[0, 1, 2], [0, 2, 3]]), 16, backend=backend).mask[0]
    assert int(mask.sum()) == 60 and bool(mask[4, 3]) and not bool(mask[10, 13])


@pytest.mark.parametrize("jitter", [0.0, 0.37])
@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_edges_covered_exactly_once(jitter: float, backend: str) -> None:
    # A grid mesh with vertices on pixel centres (jitter 0) puts many centres exactly on
    # edges; flip the winding of every other triangle. Each pixel inside the grid must be
    # covered by exactly one triangle when the triangles are drawn one at a time.
    points, faces = grid_mesh(6, 7)
    generator = torch.Generator().manual_seed(3)
    xy = points * torch.tensor([18.0, 15.0]) + 2.5
    inner = ((points > 0) & (points < 1)).all(dim=1)
    xy[inner] += jitter * (torch.rand(int(inner.sum()), 2, generator=generator) - 0.5)
    faces = faces.clone()
    faces[::2] = faces[::2, [0, 2, 1]]
    screen = torch.cat([xy, torch.zeros(len(xy), 1)], dim=1)[None]
    single = torch.stack([rasterize(screen, face[None], 24, backend=backend).mask[0] for face in faces])
    single = single.sum(dim=0)
    whole = rasterize(screen, faces, 24, backend=backend).mask[0]
    assert int(single.max()) == 1
    assert torch.equal(single.bool(), whole)
    # The union is the grid's block, half-open: x in [2.5, 20.5), y in [2.5, 17.5) -> rows 2..16, cols 2..19.
    expected = torch.zeros(24, 24, dtype=torch.bool)
    expected[2:17, 2:20] = True
    assert torch.equal(whole, expected)


def test_interpolate_vertex_positions_gives_pixel_centres() -> None:
    screen, faces = random_mesh(4, 32)
    fragments = rasterize(screen, faces, 32)
    xy = interpolate(screen[..., :2], faces, fragments)[0]
    rows, cols = fragments.mask[0].nonzero(as_tuple=True)
    assert torch.allclose(xy[rows, cols], torch.stack([cols, rows], dim=1) + 0.5, atol=1e-4)
    assert torch.equal(xy[~fragments.mask[0]], torch.zeros(int((~fragments.mask[0]).sum()), 2))
    # Interpolated depth equals the fragments' depth.
    depth = interpolate(screen[..., 2:], faces, fragments)[0, ..., 0]
    assert torch.allclose(depth[rows, cols], fragments.depth[0, rows, cols], atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_uv_raster_of_unit_square_covers_every_texel(backend: str) -> None:
    uv, faces = grid_mesh(9, 5)
    fragments = rasterize_uv(uv, faces, (37, 23), backend=backend)
    assert fragments.triangle_id.shape == (1, 37, 23)
    assert bool(fragments.mask.all())
    assert torch.equal(fragments.depth, torch.zeros(1, 37, 23))
    texel_uv = interpolate(uv[None], faces, fragments, backend=backend)[0]
    rows, cols = torch.meshgrid(torch.arange(37.0), torch.arange(23.0), indexing="ij")
    assert torch.allclose(texel_uv[..., 0], (cols + 0.5) / 23, atol=1e-5)
    assert torch.allclose(texel_uv[..., 1], 1 - (rows + 0.5) / 37, atol=1e-5)


def test_uv_rows_start_at_the_top_of_the_texture() -> None:
    # A triangle near v = 1 lands in the first rows.
    uv = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.0, 0.75]])
    mask = rasterize_uv(uv, torch.tensor([[0, 1, 2]]), 8).mask[0]
    assert bool(mask[0, 0]) and not bool(mask[4:].any())
    assert torch.equal(uv_to_pixels(uv, 8)[1], torch.tensor([4.0, 0.0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_single_calls_and_chunking_changes_nothing(backend: str) -> None:
    first, faces = random_mesh(5, 40)
    second = first.flip(1) * torch.tensor([0.9, 1.1, 1.0])
    batched = rasterize(torch.cat([first, second]), faces, (40, 36), backend=backend)
    for index, screen in enumerate((first, second)):
        single = rasterize(screen, faces, (40, 36), max_candidates=50, backend=backend)
        assert torch.equal(batched.triangle_id[index], single.triangle_id[0])
        assert torch.allclose(batched.barycentric[index], single.barycentric[0])
        assert torch.equal(batched.depth[index], single.depth[0])


def test_interpolate_broadcasts_one_raster_over_many_views() -> None:
    uv, faces = grid_mesh(4, 4)
    fragments = rasterize_uv(uv, faces, 16)
    colours = torch.rand(3, len(uv), 3, generator=torch.Generator().manual_seed(0))
    batched = interpolate(colours, faces, fragments)
    assert batched.shape == (3, 16, 16, 3)
    for view in range(3):
        assert torch.allclose(batched[view], interpolate(colours[view:view + 1], faces, fragments)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_backface_culling_keeps_front_faces_of_a_projected_mesh(backend: str) -> None:
    # Counter-clockwise in model space (normal +z, toward the viewer) is front-facing.
    model = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    identity = euler_to_rotation(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    screen = project(model, identity, torch.tensor([8.0]), torch.tensor([[16.0, 16.0]]))
    front = torch.tensor([[0, 1, 2]])
    assert rasterize(screen, front, 32, cull_backfaces=True, backend=backend).mask.any()
    assert not rasterize(screen, front[:, [0, 2, 1]], 32, cull_backfaces=True, backend=backend).mask.any()
    assert rasterize(screen, front[:, [0, 2, 1]], 32, backend=backend).mask.any()
    turned = euler_to_rotation(torch.tensor([180.0]), torch.zeros(1), torch.zeros(1))
    back = project(model, turned, torch.tensor([8.0]), torch.tensor([[16.0, 16.0]]))
    assert not rasterize(back, front, 32, cull_backfaces=True, backend=backend).mask.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_flow_to_vertices(backend: str) -> None:
    screen, faces = random_mesh(6, 24)
    screen.requires_grad_(True)
    fragments = rasterize(screen, faces, 24, backend=backend)
    covered = fragments.mask
    fragments.depth[covered].sum().backward()
    # Barycentrics sum to one, so d(sum of depths)/d(all z) = number of covered pixels.
    assert float(screen.grad[..., 2].sum()) == pytest.approx(float(covered.sum()), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_precision_and_empty_inputs(backend: str) -> None:
    screen, faces = random_mesh(7, 20)
    fragments = rasterize(screen.double(), faces, 20, backend=backend)
    assert fragments.barycentric.dtype == torch.float64
    assert torch.equal(fragments.triangle_id, rasterize(screen, faces, 20, backend=backend).triangle_id)
    off_image = rasterize(screen + 1000.0, faces, 20, backend=backend)
    assert bool((off_image.triangle_id == -1).all()) and bool(torch.isinf(off_image.depth).all())
    no_faces = rasterize(screen, faces[:0], 20, backend=backend)
    assert bool((no_faces.triangle_id == -1).all()) and bool((no_faces.barycentric == 0).all())


def test_bad_inputs_raise_clear_errors() -> None:
    screen, faces = random_mesh(8, 16)
    with pytest.raises(ValueError, match="faces index vertices"):
        rasterize(screen, faces + 100, 16)
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        rasterize(screen[0], faces, 16)
    with pytest.raises(ValueError, match="backend"):
        rasterize(screen, faces, 16, backend="opengl")


def test_active_backend_reports_what_runs() -> None:
    assert active_backend("torch") == "torch"
    native = raster_extension.available()
    try:
        import pytorch3d  # noqa: F401
    except ImportError:
        assert active_backend() == ("cpp" if native else "torch")
        assert active_backend(device="cuda") == "torch"
        with pytest.raises(RuntimeError, match="pytorch3d"):
            active_backend("pytorch3d")
    else:
        assert active_backend() == ("cpp" if native else "pytorch3d")
        assert active_backend(device="cuda") == "pytorch3d"
    with pytest.raises(ValueError, match="CPU tensors"):
        active_backend("cpp", device="cuda")


def test_pytorch3d_backend_agrees_with_torch() -> None:
    pytest.importorskip("pytorch3d")
    screen, faces = random_mesh(9, 48)
    ours = rasterize(screen, faces, (48, 40), backend="torch")
    theirs = rasterize(screen, faces, (48, 40), backend="pytorch3d")
    assert (ours.triangle_id == theirs.triangle_id).float().mean() >= 0.995


def test_matches_reference_on_the_projected_sfm_mesh(shared_assets) -> None:
    data = np.load(shared_assets / "sfm" / "sfm_3448.npz")
    vertices, faces = torch.from_numpy(data["mean"])[None], torch.from_numpy(data["triangles"])
    rotation = euler_to_rotation(torch.tensor([35.0]), torch.tensor([-10.0]), torch.tensor([5.0]))
    screen = project(vertices, rotation, torch.tensor([0.3]), torch.tensor([[40.0, 36.0]]))
    fragments = rasterize(screen, faces, (72, 80))
    triangle_id, _, depth = reference_rasterize(screen[0], faces, (72, 80))
    assert (fragments.triangle_id[0].numpy() == triangle_id).mean() >= 0.999
    covered = triangle_id >= 0
    assert covered.mean() > 0.3
    assert np.abs(fragments.depth[0].numpy()[covered] - depth[covered]).max() < 1e-3


needs_native = pytest.mark.skipif(not native_available(), reason="the C++ rasteriser could not be built")


def assert_same_fragments(ours, theirs) -> None:
    """The same triangle at every pixel, barycentrics and depth within 1e-5."""
    assert torch.equal(ours.triangle_id, theirs.triangle_id)
    assert (ours.barycentric - theirs.barycentric).abs().max() <= 1e-5
    covered = theirs.mask
    assert torch.equal(ours.mask, covered) and bool(torch.isinf(ours.depth[~covered]).all())
    assert torch.allclose(ours.depth[covered], theirs.depth[covered], rtol=1e-6, atol=1e-5)


def two_views(screen: torch.Tensor) -> torch.Tensor:
    """``(1, V, 3)`` -> ``(2, V, 3)``: the view and its mirror image (other triangles win)."""
    size = float(screen[..., 0].amax() + screen[..., 0].amin())
    return torch.cat([screen, screen * torch.tensor([-1.0, 1.0, -1.0]) + torch.tensor([size, 0.0, 0.0])])


def patch(faces: torch.Tensor, points: torch.Tensor, centre: tuple[float, float], half: float) -> torch.Tensor:
    """The faces whose centroid lies within ``half`` pixels of ``centre``: a real part of a mesh."""
    centroid = points[faces.long()].mean(dim=1)
    return faces[((centroid - torch.tensor(centre)).abs() <= half).all(dim=1)]


@needs_native
@pytest.mark.parametrize("load", [sfm_screen_mesh, bfm_screen_mesh])
def test_cpp_and_torch_backends_agree_on_real_meshes_in_image_space(shared_assets, load) -> None:
    screen, faces, _ = load(160)
    screen = two_views(screen)
    for cull in (False, True):
        assert_same_fragments(rasterize(screen, faces, (160, 150), cull_backfaces=cull, backend="cpp"),
                              rasterize(screen, faces, (160, 150), cull_backfaces=cull, backend="torch"))


@needs_native
def test_cpp_and_torch_backends_agree_on_the_bfm_uv_layout(shared_assets) -> None:
    uv, faces, source = bfm_uv_mesh()
    assert source.startswith("BFM")
    ours = rasterize_uv(uv, faces, (384, 320), backend="cpp")
    assert_same_fragments(ours, rasterize_uv(uv, faces, (384, 320), backend="torch"))
    assert ours.mask.float().mean() > 0.5
    colours = torch.rand(2, len(uv), 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(interpolate(colours, faces, ours, backend="cpp"),
                          interpolate(colours, faces, ours, backend="torch"), atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference_on_parts_of_the_bfm_mesh(shared_assets, backend: str) -> None:
    # The nose of the turned mean face (it hides part of a cheek), batched with its mirror
    # image; and a patch of the UV layout. The reference loop is slow, so only the faces
    # whose centroid falls in a 44-pixel box take part.
    screen, faces, _ = bfm_screen_mesh(200)
    nose = screen[0, screen[0, :, 2].argmin(), :2].tolist()  # nearest vertex
    screen = two_views(screen)
    parts = [patch(faces, screen[0, :, :2], nose, 22), patch(faces, screen[1, :, :2], (200 - nose[0], nose[1]), 22)]
    for view, part in enumerate(parts):
        assert len(part) > 500
        fragments = rasterize(screen, part, 200, backend=backend)
        triangle_id, barycentric, depth = reference_rasterize(screen[view], part, (200, 200))
        assert np.array_equal(fragments.triangle_id[view].numpy(), triangle_id)
        covered = triangle_id >= 0
        assert np.abs(fragments.barycentric[view].numpy()[covered] - barycentric[covered]).max() < 1e-5
        assert np.abs(fragments.depth[view].numpy()[covered] - depth[covered]).max() < 1e-3
    uv, uv_faces, _ = bfm_uv_mesh()
    texels = uv_to_pixels(uv, 512)
    part = patch(uv_faces, texels, (256.0, 200.0), 22)
    fragments = rasterize_uv(uv, part, 512, backend=backend)
    triangle_id, barycentric, _ = reference_rasterize(torch.cat([texels, torch.zeros(len(uv), 1)], 1), part, (512, 512))
    assert (triangle_id >= 0).sum() > 1000
    assert np.array_equal(fragments.triangle_id[0].numpy(), triangle_id)
    covered = triangle_id >= 0
    assert np.abs(fragments.barycentric[0].numpy()[covered] - barycentric[covered]).max() < 1e-5


@needs_native
def test_cpp_interpolate_agrees_and_gradients_take_the_torch_path() -> None:
    screen, faces = random_mesh(10, 40)
    screen.requires_grad_(True)
    fragments = rasterize(screen, faces, 40, backend="cpp")
    assert fragments.barycentric.requires_grad  # recomputed by torch from the C++ ids
    plain = rasterize(screen.detach(), faces, 40, backend="cpp")
    assert_same_fragments(plain, fragments)
    attributes = torch.rand(3, screen.shape[1], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = interpolate(attributes, faces, plain, backend="torch")
    assert torch.allclose(interpolate(attributes, faces, plain, backend="cpp"), expected)
    assert interpolate(attributes, faces, plain).dtype == torch.float64
    attributes.requires_grad_(True)
    values = interpolate(attributes, faces, plain)
    values.sum().backward()
    # Each covered pixel hands its weights (summing to one) to its three corners.
    assert float(attributes.grad.sum()) == pytest.approx(3 * 4 * float(plain.mask.sum()))


def test_without_a_compiler_the_torch_backend_takes_over(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.cpp_extension

    def no_compiler(**_: object) -> None:
        raise RuntimeError("Error building extension 'facetex_raster': g++: command not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    with pytest.warns(RuntimeWarning, match=r"g\+\+: command not found.*Install a C\+\+ compiler"):
        assert raster_extension.kernels.__wrapped__() is None
    monkeypatch.setattr(raster_extension, "available", lambda: False)
    assert active_backend() in ("torch", "pytorch3d")
    with pytest.raises(RuntimeError, match="could not be built"):
        active_backend("cpp")
    screen, faces = random_mesh(11, 24)
    fragments = rasterize(screen, faces, 24)
    assert torch.equal(fragments.triangle_id, rasterize(screen, faces, 24, backend="torch").triangle_id)


@needs_native
def test_cpp_backend_gives_the_same_result_on_more_threads() -> None:
    # Several threads split each image into row bands; the z-test keys make the order irrelevant.
    screen, faces = random_mesh(12, 64, vertices=400, faces=300)
    screen = torch.cat([screen, screen.flip(1)])
    single = rasterize(screen, faces, 64, backend="cpp")
    colours = torch.rand(2, screen.shape[1], 3, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert_same_fragments(rasterize(screen, faces, 64, backend="cpp"), single)
        texture = interpolate(colours, faces, single, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(texture, interpolate(colours, faces, single, backend="cpp"))
