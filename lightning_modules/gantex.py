"""3D-GANTex at predict time: each photo -> ``facetex.gan.multiview.MultiViewPipeline`` -> a ``MultiViewResult``.

No training happens here; ``predict_step`` runs the plain-torch pipeline (inversion optimises a
latent, so gradients are switched back on inside it) and hands the result to the
``callbacks.face_writer.FaceWriter``. A photo in which the detector finds no face is skipped with
a logged warning and yields ``None`` (the writer writes nothing for it), so a folder run goes on
past it; set ``skip_photos_without_face: false`` to make it an error instead.
"""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from facetex.face3d.detector import FaceDetector, NoFaceError
from facetex.face3d.pipeline import AssetPaths, FaceModelName, load_face_model
from facetex.face3d.regressor import FaceRegressor
from facetex.gan.inversion import InversionConfig, PTIConfig
from facetex.gan.multiview import (
    LandmarksSource,
    MultiViewConfig,
    MultiViewPipeline,
    MultiViewResult,
    load_generator,
)
from facetex.gan.pose_walk import load_boundary
from facetex.gan.stylegan2 import Generator as StyleGAN2

log = logging.getLogger(__name__)


class GANTex(L.LightningModule):
    """The 3D-GANTex predict pipeline as a LightningModule.

    Args:
        assets: folder laid out like ``shared/assets`` (FaceBoxes, 3DDFA_V2, BFM/SFM files).
        generator_path: NVlabs StyleGAN3 ``.pkl`` or rosinality StyleGAN2 ``.pt``; exclusive with
            ``random_generator``.
        random_generator: keyword arguments of a randomly initialised ``facetex.gan.stylegan2.Generator``
            (demo and tests: its images are not faces, use raw ``strengths`` and ``landmarks_source: photo``).
        boundary_path: pose boundary (``.npy`` InterFaceGAN / ``.pt`` e4e); exclusive with ``random_boundary``.
        random_boundary: a random unit direction in W (demo and tests only).
        face_model: ``"sfm"`` or ``"bfm"`` (BFM mean face, pose only).
        yaws, strengths, calibration_strengths, refine_steps, landmarks_source, texture_size, turntable_size:
            see ``facetex.gan.multiview.MultiViewConfig``.
        inversion: ``InversionConfig`` fields; pti: ``PTIConfig`` fields (its ``pivot`` is not used here), or
            None to skip pivotal tuning.
        seed: seeds the random generator/boundary and the inversion's noise.
        skip_photos_without_face: log and skip such photos (True) or raise ``NoFaceError`` (False).
    """

    def __init__(
        self,
        assets: str,
        generator_path: str | None = None,
        random_generator: dict[str, Any] | None = None,
        boundary_path: str | None = None,
        random_boundary: bool = False,
        face_model: FaceModelName = "sfm",
        yaws: tuple[float, ...] = (-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0),
        strengths: tuple[float, ...] | None = None,
        calibration_strengths: tuple[float, ...] = (-2.0, 0.0, 2.0),
        refine_steps: int = 1,
        landmarks_source: LandmarksSource = "views",
        texture_size: int = 1024,
        turntable_size: int = 256,
        inversion: dict[str, Any] | None = None,
        pti: dict[str, Any] | None = None,
        seed: int = 0,
        skip_photos_without_face: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (generator_path is None) == (random_generator is None):
            raise ValueError("give exactly one of generator_path (a pretrained .pkl/.pt) and random_generator "
                             "(kwargs of a random StyleGAN2, for demos)")
        if (boundary_path is None) == (not random_boundary):
            raise ValueError("give exactly one of boundary_path (a pose boundary .npy/.pt) and random_boundary: true")
        paths = AssetPaths.from_folder(assets)
        seeded = torch.Generator().manual_seed(seed)
        if random_generator is not None:
            with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global stream
                torch.manual_seed(seed)
                generator = StyleGAN2(**random_generator)
        else:
            generator = load_generator(generator_path)
        if random_boundary:
            boundary = torch.nn.functional.normalize(torch.randn(1, generator.style_dim, generator=seeded), dim=1)
        else:
            boundary = load_boundary(boundary_path)
        config = MultiViewConfig(
            yaws=tuple(yaws), strengths=None if strengths is None else tuple(strengths),
            calibration_strengths=tuple(calibration_strengths), refine_steps=refine_steps,
            landmarks_source=landmarks_source, texture_size=texture_size, turntable_size=turntable_size,
            inversion=InversionConfig(**(inversion or {})), pti=None if pti is None else PTIConfig(**pti),
        )
        self.pipeline = MultiViewPipeline(
            generator, boundary, FaceDetector.from_checkpoint(paths.detector),
            FaceRegressor.from_files(paths.regressor, paths.param_stats, paths.landmark_bases),
            load_face_model(paths, face_model), config,
        )
        self.seed = seed
        self.skip_photos_without_face = skip_photos_without_face

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """``batch``: one photo ``{"image": (3, H, W) uint8, "name", "path"}`` -> ``{"name", "path", "result"}``.

        Only a photo without a face is skipped; views without faces where the configured path needs them
        raise ``ViewsWithoutFaceError`` (a configuration problem, see ``MultiViewConfig``).
        """
        rng = torch.Generator(self.device).manual_seed(self.seed + batch_idx)
        with torch.inference_mode(False):  # the inversion needs autograd; Lightning predicts in inference mode
            photo = batch["image"].clone()
            try:
                result: MultiViewResult = self.pipeline(photo, rng)
            except NoFaceError as error:
                if not self.skip_photos_without_face:
                    raise
                log.warning("skipping %s (%s): %s", batch["name"], batch["path"], error)
                return None
        return {"name": batch["name"], "path": batch["path"], "result": result}
