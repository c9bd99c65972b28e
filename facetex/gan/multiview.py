"""3D-GANTex predict, one direction: photo -> aligned crop -> inversion -> K views -> 3DMM fit -> fused texture.

The stages and the module each comes from:

1. ``face3d.pipeline.regress_landmarks``: FaceBoxes + 3DDFA_V2 find the photo's 68 landmarks, with the crop of
   ``MultiViewConfig.crop_policy`` (the re-crop of FFHQ alignment by default)
   (a photo without a face raises ``NoFaceError``);
2. ``gan.align.align_face``: the FFHQ crop at the generator's resolution, with its inverse transform;
3. inversion into W+: the ReStyle encoder (``gan.encoder``) when the pipeline has one, then
   ``gan.inversion.invert`` (optimisation, from the encoder's code when there is one; skipped when
   ``MultiViewConfig.inversion`` is None), then ``pivotal_tuning`` when a :class:`PTIConfig` is given;
4. ``gan.pose_walk``: the K views. Two ways, chosen by ``MultiViewConfig.strengths``:

   * ``strengths=None`` (calibrated, needs a generator whose images are faces, else
     ``ViewsWithoutFaceError``): the walk is calibrated on the inverted code with ``calibrate``
     (3DDFA_V2 as yaw estimator) and ``Calibration.views_at`` turns it to each asked yaw;
   * ``strengths`` given (raw, 3D-GANTex's own ``f = -3..4``): ``w' = w + f n`` with those strengths;
     ``yaws`` then only names the yaw each view is meant to have.

   Every view's yaw is then MEASURED again by 3DDFA_V2; a view where the detector finds no face is
   logged, recorded in ``MultiViewResult.skipped`` and has measured yaw NaN;
5. the geometry, chosen by ``MultiViewConfig.landmarks_source``:

   * ``"views"``: ``face3d.pipeline.fit_views`` on the landmarks detected in the views (one shared
     identity, one pose per view); the views without a face are left out, and if none has one the
     run raises ``ViewsWithoutFaceError``;
   * ``"photo"``: the morphable model is fitted to the photo's landmarks mapped into the aligned crop,
     and that mesh is turned to each view's yaw (measured where a face was found, else asked),
     keeping the photo's pitch, roll, scale and translation. All K views are used. This is the path
     for generators whose images are not faces (random weights), and a fallback for views where the
     detector fails;
6. ``face3d.pipeline.texture_views``: the UV texture fused from the used views; each view is rendered
   back and scored (PSNR/SSIM inside the face mask), and the mesh is rendered alone at the view yaws.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from facetex.face3d.camera import euler_to_rotation
from facetex.face3d.detector import FaceDetector, NoFaceError
from facetex.face3d.fitting import LandmarkFit
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.pipeline import CropPolicy, regress_landmarks
from facetex.face3d.rasterizer import active_backend
from facetex.face3d.reconstruction import FaceReconstruction, fit_views, texture_views
from facetex.face3d.render import Rerender, render_turntable, rerender
from facetex.face3d.texture import FusionConfig, TexelSource
from facetex.gan.align import ALIGNMENT_CROP_POLICY, AlignedFace, align_face, apply_transform
from facetex.gan.encoder import as_w_plus
from facetex.gan.inversion import InversionConfig, PTIConfig, invert, pivotal_tuning
from facetex.gan.inversion import psnr as reconstruction_psnr
from facetex.gan.pose_walk import apply_walk, calibrate
from facetex.gan.psp_encoders import WPlusEncoder
from foundation.errors import InputError

LandmarksSource = Literal["views", "photo"]
log = logging.getLogger(__name__)


class ViewsWithoutFaceError(InputError, RuntimeError):
    """The synthesised views hold no detectable face where the chosen path needs one (calibration, view landmarks)."""


def generator_resolution(generator: nn.Module) -> int:
    """Side of the generator's images: ``size`` (StyleGAN2) or ``img_resolution`` (StyleGAN3)."""
    for name in ("size", "img_resolution"):
        if isinstance(getattr(generator, name, None), int):
            return getattr(generator, name)
    raise ValueError(f"{type(generator).__name__} states no output size; give it a `size` or `img_resolution` int")


@dataclass(frozen=True)
class MultiViewConfig:
    """What the pipeline does; see the module docstring for the two view and two geometry paths.

    Attributes:
        yaws: the asked yaw of each view, degrees (targets when calibrated, labels when ``strengths`` is given).
        strengths: raw walk strengths, one per yaw (3D-GANTex: -3..4), or None to calibrate the walk to ``yaws``.
        calibration_strengths: strengths measured to fit ``yaw = a f + b`` on the inverted code.
        refine_steps: secant corrections of ``Calibration.views_at``.
        landmarks_source: ``"views"`` (fit the views' landmarks) or ``"photo"`` (turn the photo's fit).
        crop_policy: 3DDFA_V2 crop of every landmark and yaw measurement (photo and views): ``"landmark"``
            re-crops around the first landmarks (``align.ALIGNMENT_CROP_POLICY``, nearer FFHQ's own square, so the
            photo is aligned like the FFHQ data the generator learnt), ``"box"`` is the official single crop.
        texture_size: side of the UV texture in texels.
        turntable_size: side of the renders of the mesh alone at the view yaws.
        encoder_steps: ReStyle iterations when the pipeline has an encoder.
        inversion: the optimisation settings; None skips optimisation (the encoder's code is used as it is,
            so the pipeline needs an encoder).
        pti: the pivotal-tuning settings, or None to skip pivotal tuning; the pivot is the inverted code, so of
            ``pti.pivot`` only ``n_mean_latent`` (samples of the locality codes' w_avg) is used.
        fusion: texture fusion knobs.
    """

    yaws: tuple[float, ...] = (-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0)
    strengths: tuple[float, ...] | None = None
    calibration_strengths: tuple[float, ...] = (-2.0, 0.0, 2.0)
    refine_steps: int = 1
    landmarks_source: LandmarksSource = "views"
    crop_policy: CropPolicy = ALIGNMENT_CROP_POLICY
    texture_size: int = 1024
    turntable_size: int = 256
    encoder_steps: int = 3
    inversion: InversionConfig | None = field(default_factory=InversionConfig)
    pti: PTIConfig | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if not self.yaws:
            raise ValueError("yaws must name at least one view")
        if self.strengths is not None and len(self.strengths) != len(self.yaws):
            raise ValueError(f"strengths ({len(self.strengths)}) must pair one to one with yaws ({len(self.yaws)}); "
                             "each strength's yaw is its nominal label")
        if self.landmarks_source not in ("views", "photo"):
            raise ValueError(f"landmarks_source must be 'views' or 'photo', got {self.landmarks_source!r}")
        if self.crop_policy not in ("box", "landmark"):
            raise ValueError(f"crop_policy must be 'box' or 'landmark', got {self.crop_policy!r}")
        if self.encoder_steps < 1:
            raise ValueError(f"encoder_steps must be >= 1 (ReStyle iterations), got {self.encoder_steps}")


@dataclass(frozen=True)
class InversionStages:
    """Which inversion stages ran and how well: step counts (0 = skipped) and the PSNR in dB after each stage.

    ``psnr`` keys, in order, are the stages that ran: ``"encoder"``, ``"optimisation"``, ``"pti"``.
    """

    encoder_steps: int
    optimisation_steps: int
    pti_steps: int
    psnr: dict[str, float]

    @property
    def final_psnr(self) -> float:
        """PSNR in dB of the code (and generator) the walk starts from: the last stage's."""
        return list(self.psnr.values())[-1]


@dataclass
class MultiViewResult:
    """One photo through the pipeline; K views, of which K' were used for the mesh.

    aligned: the FFHQ crop (``(3, S, S)`` in [0, 1]) and its transforms.
    photo_pose: ``{"yaw", "pitch", "roll"}`` degrees of the photo's face (3DDFA_V2).
    inverted: ``(3, S, S)`` in [0, 1], the generator at the found code; inversion_psnr in dB ([-1, 1] range).
    inversion_stages: the encoder / optimisation / PTI stages that produced it.
    w_plus: ``(1, n_latent, d)`` the code the walk starts from (the pivot when PTI ran).
    strengths, asked_yaw, measured_yaw: ``(K,)``; measured NaN where no face was detected.
    views: ``(K, 3, S, S)`` in [0, 1]. skipped: view index -> why its yaw could not be measured (no face).
    used_views: ``(K',)`` long indices into the K views; view_yaw ``(K',)`` the yaw their geometry has.
    reconstruction: fit, meshes ``(K', V, 3)``, screen vertices and the fused texture.
    renders ``(K', 3, S, S)``, masks ``(K', 1, S, S)``: the textured mesh rendered back into each used view;
    psnr, ssim ``(K',)``: its scores inside the mask (NaN where the mask is empty).
    turntable: ``(K', 3, t, t)`` the textured mesh alone at each view yaw.
    """

    aligned: AlignedFace
    photo_pose: dict[str, float]
    inverted: Tensor
    inversion_psnr: float
    inversion_stages: InversionStages
    w_plus: Tensor
    strengths: Tensor
    asked_yaw: Tensor
    measured_yaw: Tensor
    views: Tensor
    skipped: dict[int, str]
    used_views: Tensor
    view_yaw: Tensor
    landmarks_source: LandmarksSource
    model: MorphableModel
    reconstruction: FaceReconstruction
    renders: Tensor
    masks: Tensor
    psnr: Tensor
    ssim: Tensor
    turntable: Tensor

    def metrics(self) -> dict:
        """JSON-ready scores and facts: per-view yaws and re-render PSNR/SSIM, texel sources, sizes.

        Per used view, ``landmark_rmse_px`` is the fit's landmark error in that view (on the ``"photo"``
        path, the error of the photo's fit, which every turned view shares).
        """
        fused = self.reconstruction.fused
        used = self.used_views.tolist()
        per_view = []
        for k in range(self.views.shape[0]):
            entry = {
                "view": k,
                "strength": float(self.strengths[k]),
                "asked_yaw": float(self.asked_yaw[k]),
                "measured_yaw": _finite_or_none(self.measured_yaw[k]),
                "used": k in used,
                "skipped_reason": self.skipped.get(k),
            }
            if k in used:
                row = used.index(k)
                entry.update(geometry_yaw=float(self.view_yaw[row]),
                             landmark_rmse_px=float(self.reconstruction.fit.rmse[0, row]),
                             psnr=_finite_or_none(self.psnr[row]),
                             ssim=_finite_or_none(self.ssim[row]), mask_fraction=float(self.masks[row].mean()))
            per_view.append(entry)
        return {
            "landmarks_source": self.landmarks_source,
            "rasterizer_backend": active_backend(),
            "photo_pose_degrees": self.photo_pose,
            "inversion_psnr": self.inversion_psnr,
            "inversion": asdict(self.inversion_stages),
            "views": per_view,
            "measured_yaws": [_finite_or_none(y) for y in self.measured_yaw],
            "rerender": {"psnr": _nanmean(self.psnr), "ssim": _nanmean(self.ssim)},
            "texel_sources": {s.name.lower(): fused.fraction(s) for s in TexelSource if s != TexelSource.OUTSIDE},
            "texture_size": int(fused.texture.shape[-1]),
            "num_vertices": self.model.num_vertices,
            "num_triangles": int(self.model.triangles.shape[0]),
        }


def _finite_or_none(value: Tensor) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _nanmean(values: Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else None


class MultiViewPipeline(nn.Module):
    """The 3D-GANTex predict pipeline over one generator, pose boundary, detector, regressor and face model.

    generator: a StyleGAN with ``n_latent``, ``style_dim``, ``mapping`` and ``synthesis`` (images in [-1, 1]).
    boundary: ``(1 or n_latent, style_dim)`` unit pose direction (``pose_walk.load_boundary``).
    encoder, latent_avg: an optional ReStyle encoder trained against ``generator`` and the average
    latent ``(1, style_dim)`` its iterations start from (both or neither).
    All parts are submodules/buffers, so ``.to(device)`` moves the whole pipeline.
    """

    def __init__(self, generator: nn.Module, boundary: Tensor, detector: FaceDetector, regressor: nn.Module,
                 model: MorphableModel, config: MultiViewConfig = MultiViewConfig(),
                 encoder: WPlusEncoder | None = None, latent_avg: Tensor | None = None) -> None:
        super().__init__()
        if model.uv is None:
            raise ValueError("the face model has no texture coordinates; load it with its UV file")
        _check_encoder(generator, config, encoder, latent_avg)
        self.generator = generator.eval().requires_grad_(False)
        self.detector, self.regressor, self.model = detector.eval(), regressor.eval(), model
        self.encoder = None if encoder is None else encoder.eval().requires_grad_(False)
        self.register_buffer("latent_avg", None if latent_avg is None else latent_avg.float())
        self.register_buffer("boundary", boundary.float())
        self.config = config
        self.resolution = generator_resolution(generator)

    def estimate_yaw(self, images: Tensor) -> Tensor:
        """3DDFA_V2 yaw ``(B,)`` degrees of images ``(B, 3, H, W)`` in [-1, 1]; raises ``NoFaceError`` if one has no face."""
        pixels = ((images + 1) / 2).clamp(0, 1)
        return torch.stack([regress_landmarks(image, self.detector, self.regressor, self.config.crop_policy).yaw[0] for image in pixels])

    def forward(self, photo: Tensor, rng: torch.Generator | None = None) -> MultiViewResult:
        """Run the pipeline on ``photo`` ``(3, H, W)`` (uint8 or [0, 1]); raises ``NoFaceError`` if it has no face."""
        config = self.config
        regression = regress_landmarks(photo, self.detector, self.regressor, config.crop_policy)
        photo_landmarks = regression.landmarks[0, :, :2].float()
        aligned = align_face(photo.to(self.boundary.device), photo_landmarks, self.resolution)
        target = aligned.image[None].to(self.boundary) * 2 - 1
        generator, w_plus, stages = self._invert(target, rng)
        asked = torch.tensor(config.yaws, dtype=torch.float32, device=target.device)
        strengths, views = self._walk(generator, w_plus, asked)
        measured, landmarks, skipped = self._measure(views)
        photo_pose = {"yaw": float(regression.yaw[0]), "pitch": float(regression.pitch[0]),
                      "roll": float(regression.roll[0])}
        used, view_yaw, fit = self._geometry(measured, landmarks, asked, aligned, photo_landmarks)
        used_images = views[used]
        reconstruction = texture_views(self.model, used_images, fit, config.texture_size, config.fusion)
        renders, masks, psnr, ssim = self._rerender(used_images, reconstruction)
        turntable = render_turntable(reconstruction.vertices[0], self.model, reconstruction.fused.texture,
                                     view_yaw.tolist(), config.turntable_size)
        with torch.no_grad():
            inverted = ((generator.synthesis(w_plus, noise_mode="const")[0] + 1) / 2).clamp(0, 1)
        return MultiViewResult(
            aligned=aligned, photo_pose=photo_pose, inverted=inverted, inversion_psnr=stages.final_psnr,
            inversion_stages=stages, w_plus=w_plus,
            strengths=strengths, asked_yaw=asked, measured_yaw=measured, views=views, skipped=skipped, used_views=used,
            view_yaw=view_yaw, landmarks_source=config.landmarks_source, model=self.model,
            reconstruction=reconstruction, renders=renders, masks=masks, psnr=psnr, ssim=ssim, turntable=turntable,
        )

    def _geometry(self, measured: Tensor, landmarks: Tensor, asked: Tensor, aligned: AlignedFace,
                  photo_landmarks: Tensor) -> tuple[Tensor, Tensor, LandmarkFit]:
        """The used views ``(K',)``, the yaw their meshes have ``(K',)`` and the multi-view fit over them.

        ``"views"``: a shared fit to the landmarks ``(K, 68, 2)`` of the views where a face was found.
        ``"photo"``: the fit to the photo's landmarks ``(68, 2)`` (mapped into the crop), turned to each
        view's measured yaw, or its asked yaw where none was measured.
        """
        if self.config.landmarks_source == "views":
            used = torch.nonzero(torch.isfinite(measured)).squeeze(1)
            if used.numel() == 0:
                raise ViewsWithoutFaceError(f"no face was detected in any of the {measured.shape[0]} synthesised views; use "
                                  "landmarks_source='photo' to take the geometry from the input photo")
            fit = fit_views(self.model, landmarks[used])
            return used, fit.yaw[0], fit
        used = torch.arange(measured.shape[0], device=measured.device)
        view_yaw = torch.where(torch.isfinite(measured), measured, asked)
        in_crop = apply_transform(aligned.original_to_aligned.to(photo_landmarks), photo_landmarks)
        return used, view_yaw, _turned_fit(fit_views(self.model, in_crop[None]), view_yaw)

    def _invert(self, target: Tensor, rng: torch.Generator | None) -> tuple[nn.Module, Tensor, InversionStages]:
        """W+ code of ``target (1, 3, S, S)``: encoder and/or optimisation, then PTI if configured.

        Returns the generator to walk (the tuned copy after PTI), the code ``(1, n_latent, D)`` and the stages.
        """
        config = self.config
        w_plus: Tensor | None = None
        scores: dict[str, float] = {}
        if self.encoder is not None:
            w_plus = self.encoder.invert(self.generator, target, config.encoder_steps, latent_avg=self.latent_avg)[-1]
            with torch.no_grad():
                scores["encoder"] = float(reconstruction_psnr(self.generator.synthesis(w_plus, noise_mode="const"), target)[0])
        generator = self.generator
        with torch.enable_grad():
            if config.inversion is not None:
                inversion = invert(self.generator, target, config.inversion, rng=rng, init=w_plus)
                w_plus, scores["optimisation"] = inversion.w_plus, float(inversion.psnr[0])
            if config.pti is not None:
                tuned = pivotal_tuning(self.generator, target, w_plus, config.pti, rng=rng)
                generator, w_plus, scores["pti"] = tuned.generator.eval(), tuned.pivot, float(tuned.psnr[0])
        stages = InversionStages(
            encoder_steps=0 if self.encoder is None else config.encoder_steps,
            optimisation_steps=0 if config.inversion is None else config.inversion.steps,
            pti_steps=0 if config.pti is None else config.pti.steps, psnr=scores,
        )
        return generator, w_plus, stages

    @torch.no_grad()
    def _walk(self, generator: nn.Module, w_plus: Tensor, asked: Tensor) -> tuple[Tensor, Tensor]:
        """The K views ``(K, 3, S, S)`` in [0, 1] and their strengths ``(K,)`` (raw, or calibrated to ``asked``)."""
        config = self.config
        if config.strengths is not None:
            strengths = torch.tensor(config.strengths, dtype=w_plus.dtype, device=w_plus.device)
            codes = apply_walk(w_plus, self.boundary.to(w_plus), strengths)[0]
        else:
            try:
                calibration = calibrate(generator, self.boundary, self.estimate_yaw, w_plus,
                                        list(config.calibration_strengths))
                codes, _ = calibration.views_at(w_plus, asked, config.refine_steps)
            except NoFaceError as error:
                raise ViewsWithoutFaceError(f"cannot calibrate the pose walk: a generated image has no detectable face "
                                  f"({error}); a generator whose images are not faces needs raw `strengths`") from error
            codes = codes[0]
            # w' - w = f n on every row with unit rows n, so f is the projection on any row; average them
            strengths = ((codes - w_plus) * self.boundary.to(w_plus)).sum(-1).mean(-1)
        views = torch.cat([((generator.synthesis(code[None], noise_mode="const") + 1) / 2).clamp(0, 1) for code in codes])
        return strengths, views

    def _measure(self, views: Tensor) -> tuple[Tensor, Tensor, dict[int, str]]:
        """3DDFA_V2 on each view -> measured yaw ``(K,)`` and landmarks ``(K, 68, 2)`` (NaN where no face), skips."""
        yaws = torch.full((views.shape[0],), float("nan"), device=views.device)
        landmarks = torch.full((views.shape[0], 68, 2), float("nan"), device=views.device)
        skipped: dict[int, str] = {}
        for k, view in enumerate(views):
            try:
                regression = regress_landmarks(view, self.detector, self.regressor, self.config.crop_policy)
            except NoFaceError as error:
                skipped[k] = f"no face detected: {error}"
                log.warning("view %d: no face detected, its yaw is not measured (%s)", k, error)
                continue
            yaws[k], landmarks[k] = regression.yaw[0], regression.landmarks[0, :, :2]
        return yaws, landmarks, skipped

    def _rerender(self, images: Tensor, reconstruction: FaceReconstruction) -> Rerender:
        """Render the textured mesh into each used view; PSNR/SSIM ``(K',)`` inside its mask, NaN if empty."""
        return rerender(images, reconstruction, self.model)


def _check_encoder(generator: nn.Module, config: MultiViewConfig, encoder: WPlusEncoder | None,
                   latent_avg: Tensor | None) -> None:
    """Raise ``ValueError`` unless the encoder, its average latent and the inversion settings fit together."""
    if (encoder is None) != (latent_avg is None):
        raise ValueError("give the ReStyle encoder together with the average latent its iterations start from "
                         "(a GANEncoderModule checkpoint holds both), or neither")
    if encoder is None:
        if config.inversion is None:
            raise ValueError("inversion=None skips optimisation, which leaves no way to invert the photo without an "
                             "encoder; give an InversionConfig or a ReStyle encoder")
        return
    if (encoder.n_latent, encoder.style_dim) != (generator.n_latent, generator.style_dim):
        raise ValueError(f"the encoder predicts W+ of ({encoder.n_latent}, {encoder.style_dim}) but the generator takes "
                         f"({generator.n_latent}, {generator.style_dim}); use an encoder trained against this generator")
    as_w_plus(latent_avg, generator.n_latent, generator.style_dim)  # raises if its shape is not one w or one W+
    if config.inversion is not None and not config.inversion.w_plus:
        raise ValueError("refining the encoder's W+ code by optimisation needs inversion.w_plus=True")


def _turned_fit(photo_fit: LandmarkFit, view_yaw: Tensor) -> LandmarkFit:
    """The one-view fit of the photo ``photo_fit`` (``(1, 1, ...)`` poses) turned to each yaw ``(K,)`` degrees.

    Pitch, roll, scale, translation and expression stay the photo's; ``rmse`` stays the photo's fit error.
    """
    count = view_yaw.shape[0]
    pitch, roll = photo_fit.pitch[0, 0].expand(count), photo_fit.roll[0, 0].expand(count)
    rotation = euler_to_rotation(view_yaw.to(pitch), pitch, roll)
    return replace(
        photo_fit,
        expression=photo_fit.expression.expand(-1, count, -1),
        rotation=rotation[None],
        scale=photo_fit.scale.expand(-1, count),
        translation=photo_fit.translation.expand(-1, count, -1),
        yaw=view_yaw.to(pitch)[None],
        pitch=pitch[None],
        roll=roll[None],
        rmse=photo_fit.rmse.expand(-1, count),
    )
