"""``main.py predict`` with the 3D-GANTex demo config end to end (with and without a ReStyle encoder), the photo
datamodule, photos without a face, and encoder checkpoints that do not fit the generator."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import trimesh
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from callbacks.face_writer import FaceWriter
from datamodules.face_photos import FacePhotoDataModule, NoPhotosError, list_photos
from datamodules.generator_samples import GeneratorSamplesDataModule
from facetex.face3d.detector import ScoreThresholdError
from facetex.gan.multiview import MultiViewConfig
from lightning_modules.gan_encoder import GANEncoderModule
from lightning_modules.gantex import EncoderCheckpointError, GANTex, RandomGenerator, load_encoder
from tests.image_fixtures import bomb_png

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_VIEWS = 8  # the demo config's strengths -3..4


def tiny_config(tmp_path: Path, shared_assets: Path) -> Path:
    """configs/gantex_demo.yaml with the assets, the logs and a shorter inversion pointed at tmp dirs."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "gantex_demo.yaml").read_text())
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    config["trainer"]["enable_progress_bar"] = False
    model = config["model"]["init_args"]
    model["assets"] = str(shared_assets)
    model["multiview"]["inversion"]["steps"] = 30
    path = tmp_path / "gantex_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_predict_writes_mesh_views_grid_metrics_and_tensorboard(tmp_path: Path, shared_assets: Path) -> None:
    config = tiny_config(tmp_path, shared_assets)
    cli = main.main(["predict", "--config", str(config),
                     "--data.init_args.path", str(shared_assets / "faces" / "ffhq_00009.png")])
    out = Path(cli.trainer.log_dir) / "faces" / "ffhq_00009"
    assert sorted(p.name for p in out.iterdir()) == [
        "aligned.png", "face.mtl", "face.obj", "face.ply", "face.png", "grid.png", "index.html", "inversion.png",
        "maps", "mesh.js", "metrics.json", "photo.jpg", "views", "views.json"
    ]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    # the gallery: an overview linking the photo's page, which shows every view and every texture map
    assert 'href="ffhq_00009/index.html"' in (out.parent / "index.html").read_text()
    page = (out / "index.html").read_text()
    maps = json.loads((out / "maps" / "maps.json").read_text())
    assert [m["file"] for m in maps[:4]] == ["source.png", "view_00_visibility.png", "view_00_weight.png",
                                            "view_00_share.png"] and len(maps) == 1 + 3 * NUM_VIEWS
    assert all(f'value="maps/{m["file"]}"' in page and Image.open(out / "maps" / m["file"]).size == (256, 256)
               for m in maps)
    assert Image.open(out / "photo.jpg").size == (512, 512) and Image.open(out / "aligned.png").size == (64, 64)

    mesh = trimesh.load(out / "face.obj", process=False, force="mesh")
    assert mesh.vertices.shape == (3448, 3) and mesh.faces.shape == (6736, 3)
    texture = np.asarray(mesh.visual.material.image.convert("RGB"))
    assert texture.shape == (256, 256, 3) and texture.std() > 10  # linked through the MTL, not flat
    assert trimesh.load(out / "face.ply", process=False).visual.vertex_colors.shape == (3448, 4)
    # input | inversion | 8 views, over UV texture | texel sources | 8 mesh renders; 256 px cells, 20 px captions
    assert Image.open(out / "grid.png").size == ((2 + NUM_VIEWS) * 256, 2 * (256 + 20))

    views = json.loads((out / "views.json").read_text())
    assert [v["asked_yaw"] for v in views] == [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0]
    assert [v["strength"] for v in views] == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    for view in views:  # random weights draw no face: every measured yaw is listed as unmeasured
        assert view["measured_yaw"] is None and view["file"].endswith("_measured_none.png")
        assert Image.open(out / view["file"]).size == (64, 64)
        assert f'src="{view["file"].replace("+", "%2B")}"' in page

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"name", "image", "landmarks_source", "photo_pose_degrees", "inversion_psnr", "views", "measured_yaws",
            "rerender", "texel_sources", "texture_size", "num_vertices"} <= set(metrics)
    assert metrics["landmarks_source"] == "photo" and metrics["measured_yaws"] == [None] * NUM_VIEWS
    assert abs(metrics["photo_pose_degrees"]["yaw"]) > 10  # ffhq_00009 looks to one side
    for view in metrics["views"]:
        assert view["used"] and "no face" in view["skipped_reason"]
        assert view["geometry_yaw"] == pytest.approx(view["asked_yaw"], abs=1e-3)
        assert 5.0 < view["psnr"] < 60.0 and -1.0 <= view["ssim"] <= 1.0 and view["mask_fraction"] > 0.1
    assert metrics["rerender"]["psnr"] == pytest.approx(np.mean([v["psnr"] for v in metrics["views"]]), rel=1e-5)

    events = EventAccumulator(str(cli.trainer.log_dir)).Reload()
    assert {"ffhq_00009/grid", "ffhq_00009/uv_texture"} <= set(events.Tags()["images"])
    psnr_events = events.Scalars("ffhq_00009/psnr")
    assert [e.step for e in psnr_events] == list(range(NUM_VIEWS))
    assert psnr_events[0].value == pytest.approx(metrics["views"][0]["psnr"], rel=1e-5)


def test_photo_without_a_face_is_skipped_and_logged(tmp_path: Path, shared_assets: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    ramp = np.linspace(0, 255, 160).astype(np.uint8)
    gradient = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1]), axis=-1)
    Image.fromarray(gradient).save(tmp_path / "gradient.png")
    config = tiny_config(tmp_path, shared_assets)
    with caplog.at_level(logging.WARNING, logger="lightning_modules.gantex"):
        cli = main.main(["predict", "--config", str(config), "--data.init_args.path", str(tmp_path / "gradient.png")])
    assert not (Path(cli.trainer.log_dir) / "faces").exists()
    assert any("skipping gradient" in record.getMessage() and "no face" in record.getMessage()
               for record in caplog.records)


def test_folder_with_a_broken_photo_writes_the_good_one_and_reports_the_other(
        tmp_path: Path, shared_assets: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt photo and a decompression bomb are skipped and logged like a photo without a face; two_faces.jpg, run
    with them, says which of its two faces was used (log and metrics.json), and its faceless random-generator views
    are said to be expected."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    bomb_png(photos / "bomb.png")
    (photos / "two_faces.jpg").write_bytes((shared_assets / "faces" / "two_faces.jpg").read_bytes())
    config = tiny_config(tmp_path, shared_assets)
    with caplog.at_level(logging.WARNING, logger="lightning_modules.gantex"):
        cli = main.main(["predict", "--config", str(config), "--data.init_args.path", str(photos),
                         "--model.init_args.multiview.inversion.steps", "5"])
    faces = Path(cli.trainer.log_dir) / "faces"
    assert sorted(p.parent.name for p in faces.glob("*/metrics.json")) == ["two_faces"]
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("skipping broken") and "broken.jpg" in m and "cannot decode" in m for m in messages)
    assert any(m.startswith("skipping bomb") and "bomb.png" in m and "too large to decode safely" in m for m in messages)
    metrics = json.loads((faces / "two_faces" / "metrics.json").read_text())
    assert metrics["faces"]["faces_found"] == 2 and len(metrics["faces"]["used_box"]) == 4
    assert metrics["faces"]["used_score"] > 0.99 and "2 faces found" in metrics["faces"]["note"]
    assert any("two_faces" in m and "2 faces found" in m for m in messages)
    assert "expected" in metrics["views_note"] and "random_generator" in metrics["views_note"]
    assert any("two_faces" in m and "expected, the generator is the seeded random one" in m for m in messages)
    writer = next(callback for callback in cli.trainer.callbacks if isinstance(callback, FaceWriter))
    assert writer.summary(faces) == (f"wrote 1 photo folder(s) to {faces.resolve()}; skipped 2 photo(s), see the "
                                     f"warnings above; gallery: {(faces / 'index.html').resolve().as_uri()}")


def test_photo_list_names_and_errors(tmp_path: Path) -> None:
    for name in ("a.png", "sub/b.jpg", "sub/notes.txt"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), "red").save(tmp_path / "photos" / "a.png")
    Image.new("RGB", (8, 6), "blue").save(tmp_path / "photos" / "sub" / "b.jpg")
    (tmp_path / "photos" / "sub" / "notes.txt").write_text("not a photo")
    assert [name for _, name in list_photos(tmp_path / "photos")] == ["a", "sub__b"]

    data = FacePhotoDataModule(str(tmp_path / "photos" / "sub" / "b.jpg"))
    data.setup("predict")
    item = next(iter(data.predict_dataloader()))
    assert item["name"] == "b" and item["image"].dtype == torch.uint8 and item["image"].shape == (3, 6, 8)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_photos(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoPhotosError, match="holds no images"):
        list_photos(tmp_path / "empty")
    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="share the output name"):
        list_photos([str(tmp_path / "a.png"), str(tmp_path / "photos" / "a.png")])


def test_a_ganspace_component_is_the_pose_direction(tmp_path: Path, shared_assets: Path) -> None:
    components = torch.zeros(3, 1, 16)
    components[1, 0, 5] = 2.0  # component 1 points along axis 5
    np.savez_compressed(tmp_path / "ganspace.npz", lat_comp=components.numpy(), lat_mean=np.zeros((1, 16)),
                        lat_stdev=np.ones(3))
    module = GANTex(assets=str(shared_assets), random_generator=RandomGenerator(size=8, style_dim=16, n_mlp=2),
                    boundary_path=str(tmp_path / "ganspace.npz"), boundary_component=1)
    torch.testing.assert_close(module.pipeline.boundary, 2.0 * torch.eye(16)[5][None])  # kept as stored


def test_module_needs_exactly_one_generator_and_one_boundary() -> None:
    with pytest.raises(ValueError, match="exactly one of generator_path"):
        GANTex(assets="unused", random_boundary=True)
    with pytest.raises(ValueError, match="exactly one of boundary_path"):
        GANTex(assets="unused", random_generator=RandomGenerator(size=8), boundary_path="b.npy", random_boundary=True)
    with pytest.raises(ScoreThresholdError, match=r"must be in \[0, 1\).*got 1.0"):  # before any file is read
        GANTex(assets="unused", random_generator=RandomGenerator(size=8), random_boundary=True, score_threshold=1.0)


DEMO_MODEL = yaml.safe_load((REPO_ROOT / "configs" / "gantex_demo.yaml").read_text())["model"]["init_args"]
TINY_ENCODER = {"latent_avg_samples": 500, "refinement_steps": 2, "encoder_input_size": 32,
                "encoder_stages": [(8, 8, 1), (8, 16, 1), (16, 16, 1)]}


def encoder_module(**generator: object) -> GANEncoderModule:
    """A small encoder against the demo's random generator (its kwargs and seed), overridden by ``generator``."""
    return GANEncoderModule(random_generator={**DEMO_MODEL["random_generator"], **generator},
                            generator_seed=DEMO_MODEL["seed"], **TINY_ENCODER)


def save_untrained(module: GANEncoderModule, path: Path) -> Path:
    """The parts of a Lightning checkpoint an encoder is read from: state dict and hyper-parameters."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GANEncoderModule trained for 4 steps on the demo generator's samples, saved by its Trainer."""
    L.seed_everything(0)
    module = encoder_module()
    trainer = L.Trainer(max_steps=4, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, GeneratorSamplesDataModule(batch_size=4, train_batches=4, val_batches=1))
    path = tmp_path_factory.mktemp("encoder") / "encoder.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("inversion_steps", [0, 5])
def test_predict_with_the_restyle_encoder(tmp_path: Path, shared_assets: Path, encoder_checkpoint: Path,
                                          inversion_steps: int) -> None:
    config = tiny_config(tmp_path, shared_assets)
    inversion = {"steps": inversion_steps, "lr": 0.01, "n_mean_latent": 500} if inversion_steps else None
    cli = main.main(["predict", "--config", str(config), "--model.init_args.encoder_checkpoint", str(encoder_checkpoint),
                     "--model.init_args.multiview", json.dumps({"encoder_steps": 2, "inversion": inversion})])
    trained = GANEncoderModule.load_from_checkpoint(encoder_checkpoint)  # the round trip of the loader
    pipeline = cli.model.pipeline
    for name, value in trained.encoder.state_dict().items():
        assert torch.equal(pipeline.encoder.state_dict()[name], value), name
    assert torch.equal(pipeline.latent_avg, trained.latent_avg) and not pipeline.encoder.training

    out = Path(cli.trainer.log_dir) / "faces" / "ffhq_00009"
    assert {"face.obj", "face.png", "grid.png", "metrics.json", "views"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    stages = metrics["inversion"]
    assert (stages["encoder_steps"], stages["optimisation_steps"], stages["pti_steps"]) == (2, inversion_steps, 0)
    assert list(stages["psnr"]) == (["encoder"] if inversion_steps == 0 else ["encoder", "optimisation"])
    assert metrics["inversion_psnr"] == list(stages["psnr"].values())[-1]
    assert all(5.0 < value < 60.0 for value in stages["psnr"].values())
    assert len(metrics["views"]) == NUM_VIEWS and all(view["used"] for view in metrics["views"])


def test_encoder_checkpoints_of_other_generators_are_refused(tmp_path: Path, shared_assets: Path) -> None:
    demo_generator = encoder_module().generator
    cases = {
        r"predicts W\+ codes of \(n_latent, style_dim\) = \(8, 64\)": encoder_module(size=32),
        "another architecture": encoder_module(channel_max=16),  # same W+ shape, narrower layers
        "same architecture but other weights": GANEncoderModule(random_generator=DEMO_MODEL["random_generator"],
                                                                generator_seed=DEMO_MODEL["seed"] + 1, **TINY_ENCODER),
    }
    for index, (message, module) in enumerate(cases.items()):
        with pytest.raises(EncoderCheckpointError, match=message):
            load_encoder(str(save_untrained(module, tmp_path / f"{index}.ckpt")), demo_generator)
    torch.save({"state_dict": {"weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(EncoderCheckpointError, match="is not a GANEncoderModule checkpoint"):
        load_encoder(str(tmp_path / "other.ckpt"), demo_generator)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    complete = (tmp_path / "other.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(complete[: len(complete) // 2])
    for unreadable in ("notes.ckpt", "truncated.ckpt"):
        with pytest.raises(EncoderCheckpointError, match="cannot read .* as a Lightning checkpoint"):
            load_encoder(str(tmp_path / unreadable), demo_generator)
    with pytest.raises(FileNotFoundError, match="gan_encoder_ffhq.yaml"):
        load_encoder(str(tmp_path / "absent.ckpt"), demo_generator)

    views = {key: tuple(DEMO_MODEL["multiview"][key]) for key in ("strengths", "yaws")}
    demo = {"random_generator": RandomGenerator(**DEMO_MODEL["random_generator"]),
            "random_boundary": DEMO_MODEL["random_boundary"], "seed": DEMO_MODEL["seed"]}
    multiview = MultiViewConfig(landmarks_source=DEMO_MODEL["multiview"]["landmarks_source"], **views)
    with pytest.raises(EncoderCheckpointError, match="other weights"):  # the module refuses it before predicting
        GANTex(assets=str(shared_assets), **demo, multiview=multiview, encoder_checkpoint=str(tmp_path / "2.ckpt"))
    with pytest.raises(ValueError, match="inversion=None skips optimisation"):
        GANTex(assets=str(shared_assets), **demo, multiview=replace(multiview, inversion=None))
