"""The side-by-side against 3DDFA_V2's uv_tex: the midline-strip score on known maps, the official mesh, our side."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import texture_vs_official as bench
from facetex.face3d.pipeline import AssetPaths, load_face_model
from facetex.face3d.regressor import LandmarkBasis, crop_pose_to_image


def test_midline_strip_measures_a_band_of_another_colour_exactly() -> None:
    """A flat map scores 0; a band of width 2 w + 1 at the midline, 0.2 darker in one channel, scores exactly 0.2
    (band mean vs flanks), and its two edges are the only steps, so the step ratio is infinite-like (flanks flat)."""
    size, column, half = 64, 30, 3
    texture = torch.full((3, size, size), 0.5)
    region = torch.zeros(size, size, dtype=torch.bool)
    region[10:50, 5:60] = True
    assert bench.midline_strip(texture, region, column, half)[0] == 0.0
    texture[1, :, column - half: column + half + 1] -= 0.2
    strip, steps = bench.midline_strip(texture, region, column, half)
    assert strip == pytest.approx(0.2, abs=1e-6) and steps > 1e3
    texture[:, :, column + half + 1: column + 3 * half + 1] -= 0.1  # a shaded flank on one side only
    assert bench.midline_strip(texture, region, column, half)[0] == pytest.approx(0.15, abs=1e-6)
    with pytest.raises(ValueError, match="no row"):
        bench.midline_strip(texture, torch.zeros_like(region), column, half)


def test_the_official_mesh_is_the_mean_face_in_the_official_pose(shared_assets: Path) -> None:
    """Round trip: the posed mean face's landmark vertices plus the posed landmark offsets of the official shape and
    expression coefficients are 3DDFA_V2's own 68 landmarks (+ 0.5 px: pixel centres), to float noise (point 44 aside:
    the shared bases differ there, see docs/face3d.md)."""
    model = load_face_model(AssetPaths.from_folder(shared_assets), "bfm").double()
    basis = LandmarkBasis.from_npz(shared_assets / "bfm" / "bfm_noneck_mean.npz").double()
    outputs = json.loads((shared_assets / "3ddfa_v2" / "official_outputs.json").read_text())
    others = [k for k in range(68) if k != 44]
    for entry in outputs["images"]:
        face = entry["faces"][0]
        params = torch.tensor(face["param_62"], dtype=torch.float64)[None]
        mesh = bench.official_mesh(model, face)[0].double()
        linear = crop_pose_to_image(params[:, :12].reshape(1, 3, 4), torch.tensor([face["roi_box"]]).double())[0, :, :3]
        offsets = basis(params[:, 12:52], params[:, 52:])[0] - basis(0 * params[:, 12:52], 0 * params[:, 52:])[0]
        ours = mesh[model.landmark_vertices][:, :2] + (offsets @ linear.T)[:, :2]
        theirs = torch.tensor(face["landmarks68_xyz"], dtype=torch.float64).T[:, :2] + 0.5
        assert (ours - theirs)[others].abs().max() < 0.05, face["crop_key"]


@pytest.mark.slow
def test_our_side_alone_on_one_photo(shared_assets: Path, tmp_path: Path) -> None:
    """Without official maps: our map (and the Surrey model's row) on one real photo, coverage and scores in range,
    the skin mask scored against the hand-drawn polygons, the seam ratio, a picture per photo; a missing official
    map is named."""
    out = tmp_path / "numbers.json"
    report = bench.main(["--assets", str(shared_assets), "--photos", "jianzhu_guo.jpg", "--size", "256",
                         "--pictures", str(tmp_path), "--default-model", "--out", str(out)])
    row = json.loads(out.read_text())["photos"][0]
    assert report["photos"][0]["photo"] == row["photo"] == "jianzhu_guo.jpg"
    assert set(row["maps"]) == {"ours"}
    numbers = row["maps"]["ours"]
    assert 0.5 < numbers["holds_photo_colour"] < 1.0  # ours reads the texels the photo shows, only those
    assert numbers["holds_seen_colour"] == pytest.approx(numbers["holds_photo_colour"], abs=0.01)
    assert numbers["psnr"] > 25.0 and 0.0 < numbers["midline_strip"] < 0.2
    assert 0.5 < numbers["seam_ratio"] < 5.0 and numbers["handover_texels"] > 0
    assert 0.8 < row["mask_precision"] <= 1.0 and 0.5 < row["mask_recall"] <= 1.0
    assert 0.0 < row["surrey"]["midline_strip"] < 0.2 and row["surrey"]["psnr_in_hand_drawn_skin"] > 20.0
    assert (tmp_path / "texture_official_jianzhu_guo.png").is_file()
    with pytest.raises(SystemExit, match="no jianzhu_guo.png"):
        bench.main(["--assets", str(shared_assets), "--photos", "jianzhu_guo.jpg", "--official", str(tmp_path)])


def test_seam_ratio_sees_a_step_at_a_hand_over_and_not_a_smooth_one() -> None:
    """Two sources meeting at a column: a 0.2 brightness step there gives a ratio far above 1, the same map without
    the step (a smooth ramp across the hand-over) about 1."""
    size = 64
    ramp = torch.linspace(0.2, 0.8, size)[None, None, :].expand(3, size, size).clone()
    source = torch.full((size, size), int(bench.TexelSource.VIEW), dtype=torch.uint8)
    source[:, size // 2:] = int(bench.TexelSource.INPAINTED)
    blend = torch.ones(1, size, size)
    region = torch.ones(size, size, dtype=torch.bool)
    smooth = bench.seam_ratio(ramp, source, blend, region)
    stepped = ramp.clone()
    stepped[:, :, size // 2:] += 0.2
    step = bench.seam_ratio(stepped, source, blend, region)
    assert smooth["seam_ratio"] == pytest.approx(1.0, abs=0.05) and step["seam_ratio"] > 5.0


def test_precision_and_recall_of_a_mask_against_a_drawn_one() -> None:
    truth = torch.zeros(10, 10, dtype=torch.bool)
    truth[2:8, 2:8] = True  # 36 pixels
    mask = torch.zeros_like(truth)
    mask[4:10, 4:10] = True  # 36 pixels, 16 of them inside
    assert bench.precision_recall(mask, truth) == pytest.approx((16 / 36, 16 / 36))
