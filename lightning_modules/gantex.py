"""3D-GANTex at predict time: each photo -> ``facetex.gan.multiview.MultiViewPipeline`` -> a ``MultiViewResult``.

No training happens here; ``predict_step`` runs the plain-torch pipeline (inversion optimises a
latent, so gradients are switched back on inside it) and hands the result to the
``callbacks.face_writer.FaceWriter``. A photo in which the detector finds no face is skipped with
a logged warning and yields ``None`` (the writer writes nothing for it), so a folder run goes on
past it; set ``skip_photos_without_face: false`` to make it an error instead. A photo that cannot be
decoded (the datamodule's ``"image": None``) is skipped and logged the same way; when every photo of the
run is unreadable, the run ends in :class:`UnreadablePhotosError`. When a photo holds several faces,
the most confident is used and a warning says so; its box, score and the count go to ``metrics.json``
(``faces``). With ``random_generator`` the views are not faces, so "no face detected" on them is
expected, and the log and ``metrics.json`` (``views_note``) say so.

With ``encoder_checkpoint`` (a ``lightning_modules.gan_encoder.GANEncoderModule`` checkpoint) the photo
is first inverted by that ReStyle encoder, then refined by optimisation from its code (``multiview:
{inversion: null}`` keeps the encoder's code as it is), then pivotally tuned if ``multiview.pti`` is set. The encoder
must have been trained against the pipeline's generator; the checkpoint stores that generator, and
any difference from the pipeline's is an error.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from facetex.face3d.detector import FaceDetector, NoFaceError, check_score_threshold
from facetex.face3d.pipeline import AssetPaths, FaceChoice, FaceModelName, load_face_model
from facetex.face3d.regressor import FaceRegressor
from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.encoder import ReStyleEncoder
from facetex.gan.generator_file import load_generator
from facetex.gan.multiview import MultiViewConfig, MultiViewPipeline, MultiViewResult
from facetex.gan.pose_walk import load_boundary
from facetex.gan.psp_encoders import WPlusEncoder
from facetex.gan.restyle_checkpoint import is_encoder_checkpoint, restyle_encoder_from_checkpoint
from facetex.gan.stylegan2 import DEFAULT_BLUR_KERNEL
from foundation.checkpoints import OPTION_CLASSES, load_checkpoint
from foundation.errors import InputError

log = logging.getLogger(__name__)
RANDOM_VIEWS_NOTE = ("no face detected in views {views}: expected, the generator is the seeded random one "
                     "(random_generator), whose images are not faces; use generator_path for real views")
TRAIN_ENCODER_HINT = "train one with `python main.py fit --config configs/gan_encoder_ffhq.yaml` against this generator"


class UnreadablePhotosError(InputError, ValueError):
    """Not one photo of the run could be decoded."""


class EncoderCheckpointError(InputError, ValueError):
    """An encoder checkpoint that is not a GANEncoderModule's, or that was trained against another generator."""


def _entries(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The state dict entries under ``prefix`` with the prefix removed."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def check_same_generator(path: str, stored: dict[str, Tensor], generator: nn.Module) -> None:
    """Raise ``EncoderCheckpointError`` unless the checkpoint's generator ``stored`` is ``generator``.

    Layer names and shapes fix the architecture (resolution included); the tensors must then be equal.
    """
    current = generator.state_dict()
    only_stored, only_current = sorted(stored.keys() - current.keys()), sorted(current.keys() - stored.keys())
    reshaped = sorted(key for key in stored.keys() & current.keys() if stored[key].shape != current[key].shape)
    if only_stored or only_current or reshaped:
        raise EncoderCheckpointError(
            f"the generator stored in encoder checkpoint {path!r} has another architecture (resolution, widths or "
            f"layers) than the pipeline's: only in the checkpoint {only_stored[:3]}, only in the pipeline "
            f"{only_current[:3]}, other shapes {reshaped[:3]}; {TRAIN_ENCODER_HINT}")
    differences = {key: (stored[key].float() - current[key].detach().to(stored[key]).float()).abs().max().item()
                   for key in stored if stored[key].numel()}
    worst = max(differences, key=differences.__getitem__, default=None)
    if worst is not None and differences[worst] > 0:
        raise EncoderCheckpointError(
            f"encoder checkpoint {path!r} was trained against a generator of the same architecture but other weights "
            f"(largest difference {differences[worst]:.3g} in {worst!r}); use the generator it was trained with "
            f"(generator_path / random_generator and seed) or {TRAIN_ENCODER_HINT}")


def load_encoder(path: str, generator: nn.Module) -> tuple[WPlusEncoder, Tensor]:
    """The eval-mode ReStyle encoder and its ``latent_avg (1, style_dim)`` from a GANEncoderModule checkpoint, or
    the encoder and ``latent_avg`` of an official ReStyle / pSp / e4e file (``facetex.gan.restyle_checkpoint``).

    Built from the checkpoint's state dict and hyper-parameters, so the generator, LPIPS and ArcFace files
    used in training are not needed. Raises ``EncoderCheckpointError`` when the encoder's W+ shape, the
    stored generator's architecture or its weights differ from ``generator``'s.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"encoder checkpoint {path!r} not found; {TRAIN_ENCODER_HINT}")
    # official ReStyle files' opts hold paths
    checkpoint = load_checkpoint(path, EncoderCheckpointError, "Lightning checkpoint", allow=OPTION_CLASSES)
    if is_encoder_checkpoint(checkpoint):  # an official ReStyle / pSp / e4e release (restyle_e4e_ffhq.pt, ...)
        return restyle_encoder_from_checkpoint(checkpoint, path, generator)
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    state, hparams = checkpoint.get("state_dict") or {}, checkpoint.get("hyper_parameters") or {}
    encoder_state, generator_state = _entries(state, "encoder."), _entries(state, "generator.")
    if (not encoder_state or not generator_state or "latent_avg" not in state
            or not {"backbone", "encoder_input_size", "encoder_stages"} <= hparams.keys()):
        raise EncoderCheckpointError(f"{path!r} is not a GANEncoderModule checkpoint (it needs the state dict entries "
                                     f"encoder.*, latent_avg and generator.* and the encoder's hyper-parameters); "
                                     f"{TRAIN_ENCODER_HINT}")
    n_latent = sum(1 for key in encoder_state if key.startswith("styles.") and key.endswith(".linear.weight"))
    style_dim = encoder_state["styles.0.linear.weight"].shape[0]
    if (n_latent, style_dim) != (generator.n_latent, generator.style_dim):
        raise EncoderCheckpointError(
            f"the encoder in {path!r} predicts W+ codes of (n_latent, style_dim) = ({n_latent}, {style_dim}) but the "
            f"pipeline's generator takes ({generator.n_latent}, {generator.style_dim}); {TRAIN_ENCODER_HINT}")
    check_same_generator(path, generator_state, generator)
    encoder = ReStyleEncoder(n_latent, style_dim, hparams["backbone"], hparams["encoder_input_size"],
                             hparams["encoder_stages"])
    encoder.load_state_dict(encoder_state)
    return encoder.eval(), state["latent_avg"]


@dataclass(frozen=True)
class RandomGenerator:
    """A StyleGAN2 with random weights (demos and tests): the arguments of ``facetex.gan.stylegan2.Generator``.

    Its images are not faces: use raw ``strengths`` and ``landmarks_source: photo`` with it.

    Attributes:
        size: output resolution, a power of two >= 8.
        style_dim: width of z and w.
        n_mlp: mapping layers.
        channel_multiplier: 2 for config-f, 1 for the smaller config.
        blur_kernel: FIR taps of every resampling filter.
        lr_mlp: learning-rate multiplier of the mapping network.
        channel_max: widest synthesis layer.
        channel_base: channels at resolution r are ``min(channel_max, channel_base * channel_multiplier // r)``.
    """

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    blur_kernel: tuple[float, ...] = DEFAULT_BLUR_KERNEL
    lr_mlp: float = 0.01
    channel_max: int = 512
    channel_base: int = 16384


class GANTex(L.LightningModule):
    """The 3D-GANTex predict pipeline as a LightningModule.

    Args:
        assets: folder laid out like ``shared/assets`` (FaceBoxes, 3DDFA_V2, BFM/SFM files).
        generator_path: NVlabs StyleGAN2/StyleGAN3 ``.pkl`` or rosinality StyleGAN2 ``.pt``; exclusive with
            ``random_generator``.
        random_generator: a randomly initialised StyleGAN2 (demo and tests), seeded by ``seed``.
        boundary_path: pose boundary (``.npy`` InterFaceGAN / ``.pt`` e4e / ``.npz`` GANSpace components); exclusive
            with ``random_boundary``.
        boundary_component: which component of a GANSpace ``.npz`` is the pose direction (needed for such a file,
            refused for the others).
        random_boundary: a random unit direction in W (demo and tests only).
        face_model: ``"sfm"`` or ``"bfm"`` (BFM mean face, pose only).
        multiview: the views, inversion (``inversion: null``: no optimisation, needs an encoder), pivotal tuning
            (``pti: null`` skips it), geometry and texture settings of the pipeline.
        encoder_checkpoint: a ``GANEncoderModule`` checkpoint, or an official ReStyle / pSp / e4e .pt (also given as
            the generator; its n_iters_per_batch, 1 for pSp / e4e, replaces the default ``multiview.encoder_steps``), whose
            encoder (trained against this generator) inverts the photo first; empty for optimisation alone.
        seed: seeds the random generator/boundary and the inversion's noise.
        skip_photos_without_face: log and skip such photos (True) or raise ``NoFaceError`` (False).
        score_threshold: the face detector's (FaceBoxes) score a face must exceed, in [0, 1); lower it when a
            small, dark or turned face is not found (more false detections).
    """

    def __init__(
        self,
        assets: str = "../shared/assets",
        generator_path: str | None = None,
        random_generator: RandomGenerator | None = None,
        boundary_path: str | None = None,
        boundary_component: int | None = None,
        random_boundary: bool = False,
        face_model: FaceModelName = "sfm",
        multiview: MultiViewConfig = MultiViewConfig(),
        encoder_checkpoint: str = "",
        seed: int = 0,
        skip_photos_without_face: bool = True,
        score_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (generator_path is None) == (random_generator is None):
            raise ValueError("give exactly one of generator_path (a pretrained .pkl/.pt) and random_generator "
                             "(a random StyleGAN2, for demos)")
        if (boundary_path is None) == (not random_boundary):
            raise ValueError("give exactly one of boundary_path (a pose boundary .npy/.pt) and random_boundary: true")
        check_score_threshold(score_threshold)
        paths = AssetPaths.from_folder(assets)
        seeded = torch.Generator().manual_seed(seed)
        if random_generator is not None:
            generator = seeded_stylegan2(asdict(random_generator), seed)
        else:
            generator = load_generator(generator_path)[0]
        encoder, latent_avg = load_encoder(encoder_checkpoint, generator) if encoder_checkpoint else (None, None)
        if getattr(encoder, "iterations", None) and multiview.encoder_steps == MultiViewConfig().encoder_steps:
            multiview = replace(multiview, encoder_steps=encoder.iterations)  # an official file's n_iters_per_batch
        if random_boundary:
            boundary = torch.nn.functional.normalize(torch.randn(1, generator.style_dim, generator=seeded), dim=1)
        else:
            boundary = load_boundary(boundary_path, boundary_component)
        self.pipeline = MultiViewPipeline(
            generator, boundary, FaceDetector.from_checkpoint(paths.detector, score_threshold=score_threshold),
            FaceRegressor.from_files(paths.regressor, paths.param_stats, paths.landmark_bases),
            load_face_model(paths, face_model), multiview, encoder, latent_avg,
        )
        self.seed = seed
        self.skip_photos_without_face = skip_photos_without_face
        self.random_generator = random_generator is not None
        self.unreadable: list[str] = []  # "name: why" of this predict run's undecodable photos
        self.photos_seen = 0

    def on_predict_epoch_start(self) -> None:
        self.unreadable, self.photos_seen = [], 0

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """``batch``: one photo ``{"image": (3, H, W) uint8, "name", "path"}`` -> ``{"name", "path", "result",
        "metrics"}`` (``metrics``: extra ``metrics.json`` entries, see the module docstring).

        A photo without a face or that could not be decoded is skipped (``None``); views without faces where
        the configured path needs them raise ``ViewsWithoutFaceError`` (a configuration problem, see
        ``MultiViewConfig``).
        """
        self.photos_seen += 1
        if batch["image"] is None:
            log.warning("skipping %s (%s): %s", batch["name"], batch["path"], batch["unreadable"])
            self.unreadable.append(f"{batch['path']}: {batch['unreadable']}")
            return None
        rng = torch.Generator(self.device).manual_seed(self.seed + batch_idx)
        with torch.inference_mode(False):  # the inversion needs autograd; Lightning predicts in inference mode
            photo = batch["image"].clone()
            try:  # the pipeline detects again on the same photo: this is only the report of the choice
                face = FaceChoice.from_boxes(self.pipeline.detector.detect_faces(photo))
                result: MultiViewResult = self.pipeline(photo, rng)
            except NoFaceError as error:
                if not self.skip_photos_without_face:
                    raise
                log.warning("skipping %s (%s): %s", batch["name"], batch["path"], error)
                return None
        if face.note():
            log.warning("%s (%s): %s", batch["name"], batch["path"], face.note())
        metrics: dict[str, Any] = {"faces": face.metrics()}
        if self.random_generator and result.skipped:
            metrics["views_note"] = RANDOM_VIEWS_NOTE.format(views=sorted(result.skipped))
            log.warning("%s: %s", batch["name"], metrics["views_note"])
        return {"name": batch["name"], "path": batch["path"], "result": result, "metrics": metrics}

    def on_predict_epoch_end(self) -> None:
        """Raise :class:`UnreadablePhotosError` when not one photo of the run could be decoded."""
        if self.photos_seen and len(self.unreadable) == self.photos_seen:
            listed = "; ".join(self.unreadable[:3]) + ("; ..." if len(self.unreadable) > 3 else "")
            raise UnreadablePhotosError(f"none of the {self.photos_seen} photo(s) could be read ({listed}); pass "
                                        "image files Pillow can open (PNG, JPEG, ...)")
