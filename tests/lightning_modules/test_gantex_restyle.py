"""``main.py predict`` inverting with an official ReStyle checkpoint (its decoder as the generator, its encoder,
``latent_avg`` and ``n_iters_per_batch``) or pSp's / e4e's own (one pass)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import main
from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.psp_encoders import FeaturePyramidEncoder
from facetex.gan.restyle_checkpoint import load_restyle_checkpoint
from foundation.errors import InputError
from lightning_modules.gantex import load_encoder
from tests.facetex.gan.official_psp import save_psp
from tests.facetex.gan.official_restyle import save_restyle

REPO_ROOT = Path(__file__).resolve().parents[2]


def restyle_config(tmp_path: Path, shared_assets: Path, restyle: Path) -> Path:
    """configs/gantex_demo.yaml with the ReStyle file as generator and encoder, no optimisation after it."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "gantex_demo.yaml").read_text())
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    config["trainer"]["enable_progress_bar"] = False
    model = config["model"]["init_args"]
    model.pop("random_generator")
    model.update(assets=str(shared_assets), generator_path=str(restyle), encoder_checkpoint=str(restyle))
    model["multiview"]["inversion"] = None  # the encoder's code as it is
    config["data"]["init_args"]["path"] = str(shared_assets / "faces" / "ffhq_00009.png")
    path = tmp_path / "gantex_restyle.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_predict_inverts_with_an_official_restyle_checkpoint(tmp_path: Path, shared_assets: Path) -> None:
    demo = yaml.safe_load((REPO_ROOT / "configs" / "gantex_demo.yaml").read_text())["model"]["init_args"]
    decoder = seeded_stylegan2(demo["random_generator"], seed=1).eval()  # 64 px, as the demo's views
    restyle = tmp_path / "restyle_e4e_ffhq.pt"
    save_restyle(restyle, decoder, "ProgressiveBackboneEncoder")  # n_iters_per_batch 4
    cli = main.main(["predict", "--config", str(restyle_config(tmp_path, shared_assets, restyle))])
    pipeline, official = cli.model.pipeline, load_restyle_checkpoint(restyle)
    for name, value in official.encoder.state_dict().items():
        assert torch.equal(pipeline.encoder.state_dict()[name], value), name
    assert torch.equal(pipeline.latent_avg, official.latent_avg) and pipeline.encoder.progressive
    metrics = json.loads((Path(cli.trainer.log_dir) / "faces" / "ffhq_00009" / "metrics.json").read_text())
    assert metrics["inversion"]["encoder_steps"] == 4 and metrics["inversion"]["optimisation_steps"] == 0


def test_predict_inverts_with_a_psp_checkpoint_in_one_pass(tmp_path: Path, shared_assets: Path) -> None:
    demo = yaml.safe_load((REPO_ROOT / "configs" / "gantex_demo.yaml").read_text())["model"]["init_args"]
    decoder = seeded_stylegan2(demo["random_generator"], seed=1).eval()
    psp = tmp_path / "psp_ffhq_encode.pt"
    encoder_state, latent_avg = save_psp(psp, decoder, "GradualStyleEncoder")
    cli = main.main(["predict", "--config", str(restyle_config(tmp_path, shared_assets, psp))])
    pipeline = cli.model.pipeline
    assert isinstance(pipeline.encoder, FeaturePyramidEncoder) and not pipeline.encoder.progressive
    for name, value in encoder_state.items():
        assert torch.equal(pipeline.encoder.state_dict()[name], value), name
    torch.testing.assert_close(pipeline.latent_avg[0], latent_avg)
    metrics = json.loads((Path(cli.trainer.log_dir) / "faces" / "ffhq_00009" / "metrics.json").read_text())
    assert metrics["inversion"]["encoder_steps"] == 1 and metrics["inversion"]["optimisation_steps"] == 0


def test_an_official_file_trained_against_another_generator_is_refused(tmp_path: Path) -> None:
    decoder = seeded_stylegan2({"size": 16, "style_dim": 16, "n_mlp": 2, "channel_max": 8}, seed=1)
    save_restyle(tmp_path / "restyle.pt", decoder, "BackboneEncoder")
    other = seeded_stylegan2({"size": 16, "style_dim": 16, "n_mlp": 2, "channel_max": 8}, seed=2)
    with pytest.raises(InputError, match="not the pipeline's"):
        load_encoder(str(tmp_path / "restyle.pt"), other)
