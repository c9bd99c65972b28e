"""Train a ReStyle encoder to invert a frozen StyleGAN (``facetex.gan.encoder``).

Each batch is inverted with ``refinement_steps`` ReStyle iterations from the average latent; the
loss is the sum over iterations of ``facetex.gan.losses.ReconstructionLoss`` between each
reconstruction and the target (plus, for the generator's own samples, an optional W+ distance to
their true codes), back-propagated into the encoder only, as ReStyle's coach does. Targets are FFHQ
photos (``datamodules.ffhq.FFHQDataModule``, (B, 3, R, R) in [-1, 1]) or the generator's own samples
(``datamodules.generator_samples.GeneratorSamplesDataModule``, rendered here on the device).
Reconstructions are area-pooled to the target resolution when the generator is larger (ReStyle
trains at 256 px against 1024 px generators).

Logged: ``train/loss``, per-iteration terms ``train/step{t}/{term}``, ``val/step{t}/l2`` and
``val/step{t}/psnr`` (and ``val/step{t}/latent_mse`` on generator samples), the active loss terms
once as text, and a ``val/reconstructions`` image grid: each row ``input | y_1 | ... | y_T``.
The frozen generator is part of the module's state dict, so a checkpoint is self-contained.
"""
from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from facetex.face3d.metrics import LPIPS
from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.encoder import Backbone, ReStyleEncoder, Stage
from facetex.gan.generator_file import load_generator
from facetex.gan.inversion import latent_statistics, psnr
from facetex.gan.latent_seeds import LatentSeedBatch
from facetex.gan.losses import IdentityLoss, ReconstructionLoss, load_identity_network

GeneratorFormat = Literal["random", "rosinality", "nvlabs"]
DEFAULT_RANDOM_GENERATOR = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 16}


def frozen_generator(checkpoint: str, generator_format: GeneratorFormat, random_generator: dict[str, int] | None,
                     seed: int, latent_avg_samples: int) -> tuple[nn.Module, Tensor]:
    """A frozen eval-mode generator and its average latent ``(1, style_dim)``.

    ``rosinality``: the checkpoint's ``latent_avg`` (else the mean of ``latent_avg_samples`` mapped z);
    ``nvlabs``: the mapping network's tracked ``w_avg``; ``random``: a StyleGAN2 of ``random_generator``
    kwargs initialised from ``seed``, with the mean of ``latent_avg_samples`` mapped z.
    """
    if generator_format not in ("random", "rosinality", "nvlabs"):
        raise ValueError(f"generator_format must be 'random', 'rosinality' or 'nvlabs', got {generator_format!r}")
    if generator_format != "random" and not checkpoint:
        raise ValueError(f"generator_format={generator_format!r} needs generator_checkpoint: the path of a "
                         "rosinality .pt (StyleGAN2) or an NVlabs StyleGAN2/StyleGAN3 .pkl")
    latent_avg: Tensor | None = None
    if generator_format == "random":
        generator: nn.Module = seeded_stylegan2(random_generator or DEFAULT_RANDOM_GENERATOR, seed)
    else:
        suffixes = {"nvlabs": (".pkl",), "rosinality": (".pt", ".pth")}[generator_format]
        if not checkpoint.lower().endswith(suffixes):
            raise ValueError(f"generator_format={generator_format!r} expects a {' or '.join(suffixes)} file, "
                             f"got {checkpoint!r}")
        generator, latent_avg = load_generator(checkpoint)
    generator.eval().requires_grad_(False)
    if latent_avg is None:
        latent_avg = latent_statistics(generator, latent_avg_samples, torch.Generator().manual_seed(seed))[0]  # type: ignore[arg-type]
    return generator, latent_avg.float()


def reconstruction_row_grid(targets: Tensor, reconstructions: list[Tensor]) -> Tensor:
    """(N, 3, H, W) targets and T reconstructions of that shape, in [-1, 1] -> (3, N H, (1 + T) W) in [0, 1]."""
    rows = torch.cat([targets, *reconstructions], dim=3)  # (N, 3, H, (1 + T) W)
    return torch.cat(list(rows), dim=1).add(1).div(2).clamp(0, 1)


class GANEncoderModule(L.LightningModule):
    """ReStyle encoder training against a frozen StyleGAN2/StyleGAN3.

    Args:
        generator_checkpoint: rosinality ``.pt`` or NVlabs ``.pkl`` path (unused for ``random``).
        generator_format: ``rosinality`` (StyleGAN2), ``nvlabs`` (StyleGAN3 pickle) or ``random`` (tests, demos).
        random_generator: StyleGAN2 kwargs of the random generator (size, style_dim, n_mlp, channel_multiplier,
            channel_max); None gives a 32 px, style_dim 32 toy.
        generator_seed: seed of the random generator's weights and of the w_avg sampling.
        latent_avg_samples: mapped z averaged into w_avg when the checkpoint stores none.
        refinement_steps: ReStyle iterations per batch (ReStyle trains with 5, infers with 5).
        backbone: encoder body, ``small`` or ``ir_se50`` (ReStyle's).
        encoder_input_size: side the encoder reads images at (None: 64 for small, 256 for ir_se50).
        encoder_stages: body stages ``[in, out, units]`` overriding the backbone preset.
        optimizer: builds the encoder's optimiser from its parameters (Adam, lr 1e-4 by default; ReStyle: 1e-4
            with Ranger).
        l2_weight: weight of the pixel MSE.
        perceptual_weight: weight of LPIPS (active only with both LPIPS checkpoints).
        identity_weight: weight of the ArcFace identity loss (active only with identity_checkpoint).
        latent_weight: weight of the W+ MSE to the true codes (only on generator samples).
        lpips_vgg16_checkpoint: torchvision VGG16 state dict for LPIPS (``vgg16-397923af.pth``).
        lpips_checkpoint: LPIPS linear heads (``lpips/weights/v0.1/vgg.pth``).
        identity_checkpoint: ArcFace IR-SE50 state dict (``model_ir_se50.pth``) or a TorchScript embedding.
        num_logged_images: validation inputs shown in the reconstruction grid.
    """

    def __init__(
        self,
        generator_checkpoint: str = "",
        generator_format: GeneratorFormat = "random",
        random_generator: dict[str, int] | None = None,
        generator_seed: int = 0,
        latent_avg_samples: int = 10000,
        refinement_steps: int = 3,
        backbone: Backbone = "small",
        encoder_input_size: int | None = None,
        encoder_stages: list[Stage] | None = None,
        optimizer: OptimizerCallable = lambda params: torch.optim.Adam(params, lr=1e-4),
        l2_weight: float = 1.0,
        perceptual_weight: float = 0.8,
        identity_weight: float = 0.1,
        latent_weight: float = 0.0,
        lpips_vgg16_checkpoint: str = "",
        lpips_checkpoint: str = "",
        identity_checkpoint: str = "",
        num_logged_images: int = 4,
    ) -> None:
        super().__init__()
        if refinement_steps < 1 or latent_weight < 0:
            raise ValueError(f"need refinement_steps >= 1, latent_weight >= 0; got {refinement_steps}, {latent_weight}")
        if bool(lpips_vgg16_checkpoint) != bool(lpips_checkpoint):
            raise ValueError("LPIPS needs both lpips_vgg16_checkpoint (VGG16 backbone) and lpips_checkpoint "
                             "(linear heads); give both or neither")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.generator, latent_avg = frozen_generator(generator_checkpoint, generator_format, random_generator,
                                                    generator_seed, latent_avg_samples)
        self.register_buffer("latent_avg", latent_avg)
        n_latent, style_dim = self.generator.n_latent, self.generator.style_dim
        self.encoder = ReStyleEncoder(n_latent, style_dim, backbone, encoder_input_size, encoder_stages)
        perceptual = LPIPS(lpips_vgg16_checkpoint, lpips_checkpoint) if lpips_checkpoint else None
        identity = IdentityLoss(load_identity_network(identity_checkpoint)) if identity_checkpoint else None
        self.reconstruction_loss = ReconstructionLoss(l2_weight, perceptual, perceptual_weight, "zero_one",
                                                      identity, identity_weight)

    def train(self, mode: bool = True) -> GANEncoderModule:
        """Only the encoder switches to training mode; the generator stays in eval mode."""
        super().train(mode)
        self.generator.eval()
        return self

    def active_terms(self) -> dict[str, float]:
        """The loss terms this run optimises, with their weights."""
        terms = self.reconstruction_loss.active_terms()
        if self.hparams.latent_weight > 0:
            terms["latent"] = self.hparams.latent_weight
        return terms

    def on_fit_start(self) -> None:
        """Say once which loss terms are active, on the console and in TensorBoard."""
        text = ", ".join(f"{name} x {weight:g}" for name, weight in self.active_terms().items())
        rank_zero_info(f"GANEncoderModule loss terms: {text}")
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("loss_terms", text, self.global_step)

    # data ---------------------------------------------------------------------------------

    def targets(self, batch: Tensor | LatentSeedBatch) -> tuple[Tensor, Tensor | None]:
        """Target images (B, 3, R, R) in [-1, 1] and, for generator samples, their true W+ codes."""
        if isinstance(batch, Tensor):
            if batch.ndim != 4 or batch.shape[1] != 3:
                raise ValueError(f"image batches must be (B, 3, R, R) in [-1, 1], got {tuple(batch.shape)}")
            return batch, None
        z = batch.latents(self.generator.style_dim).to(self.latent_avg)
        with torch.no_grad():
            w = self.generator.mapping(z)
            w = w[:, 0] if w.ndim == 3 else w
            w = self.latent_avg + batch.truncation * (w - self.latent_avg)
            ws = w[:, None].expand(-1, self.generator.n_latent, -1).contiguous()
            return self.generator.synthesis(ws, noise_mode="const"), ws

    def at_target_size(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Area-pool a (B, 3, R, R) reconstruction to the target's size (which may not be larger)."""
        if reconstruction.shape[-2:] == target.shape[-2:]:
            return reconstruction
        if target.shape[-1] > reconstruction.shape[-1] or target.shape[-2] > reconstruction.shape[-2]:
            raise ValueError(f"targets of {tuple(target.shape[-2:])} px are larger than the generator's "
                             f"{tuple(reconstruction.shape[-2:])} output; set the data resolution to at most the "
                             "generator's size")
        return F.adaptive_avg_pool2d(reconstruction, target.shape[-2:])

    def refine(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(w_t, y_t at the target size)`` for every ReStyle iteration t = 1..refinement_steps."""
        steps = self.encoder.refinement_steps(self.generator, images, self.hparams.refinement_steps, self.latent_avg)
        return [(w, self.at_target_size(y, images)) for w, y in steps]

    # steps --------------------------------------------------------------------------------

    def training_step(self, batch: Tensor | LatentSeedBatch, batch_idx: int) -> Tensor:
        images, true_ws = self.targets(batch)
        total = images.new_zeros((), dtype=torch.float32)
        logged: dict[str, Tensor] = {}
        for step, (w, reconstruction) in enumerate(self.refine(images), start=1):
            terms = self.reconstruction_loss(reconstruction, images)
            loss = terms.pop("loss")
            if true_ws is not None and self.hparams.latent_weight > 0:
                terms["latent"] = F.mse_loss(w.float(), true_ws.float())
                loss = loss + self.hparams.latent_weight * terms["latent"]
            total = total + loss
            logged.update({f"train/step{step}/{name}": value.detach() for name, value in terms.items()})
        logged["train/loss"] = total.detach()
        self.log_dict(logged, batch_size=images.shape[0])
        return total

    def validation_step(self, batch: Tensor | LatentSeedBatch, batch_idx: int) -> None:
        images, true_ws = self.targets(batch)
        results = self.refine(images)
        metrics: dict[str, Tensor] = {}
        for step, (w, reconstruction) in enumerate(results, start=1):
            metrics[f"val/step{step}/l2"] = F.mse_loss(reconstruction.float(), images.float())
            metrics[f"val/step{step}/psnr"] = psnr(reconstruction, images).mean()
            if true_ws is not None:
                metrics[f"val/step{step}/latent_mse"] = F.mse_loss(w.float(), true_ws.float())
        metrics["val/l2"] = metrics[f"val/step{len(results)}/l2"]
        self.log_dict(metrics, batch_size=images.shape[0], prog_bar=False, sync_dist=True)
        if batch_idx == 0:
            self._log_grid(images, [reconstruction for _, reconstruction in results])

    def _log_grid(self, images: Tensor, reconstructions: list[Tensor]) -> None:
        count = min(self.hparams.num_logged_images, images.shape[0])
        loggers = [logger for logger in self.loggers if isinstance(logger, TensorBoardLogger)]
        if count == 0 or not loggers:
            return
        grid = reconstruction_row_grid(images[:count].float(), [y[:count].float() for y in reconstructions])
        for logger in loggers:
            logger.experiment.add_image("val/reconstructions", grid.cpu(), self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.encoder.parameters())
