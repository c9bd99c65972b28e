"""Train 3DDFA_V2's MobileNetV1 to regress pose, shape and expression from synthetic face renders.

The network reads a face image and outputs ``12 + S + E`` normalised numbers:
the 3x4 affine pose ``P`` (row-major) that maps model space straight to screen
space (``screen = P @ [X; 1]``: rows ``s R_0 | t_x``, ``-s R_1 | t_y``,
``-s R_2 | 0``, ``camera.pose_matrix``), then the morphable model's
shape and expression coefficients. Targets are normalised by their mean and
standard deviation, estimated from the datamodule's renders at setup and kept as
buffers, so a checkpoint alone turns outputs back into parameters (3DDFA_V2's
``param_mean_std`` in the same role). The loss is the normalised parameter MSE
plus the 2D landmark reprojection error (in image widths) of the decoded
parameters, which weighs each parameter by its effect on the image.
"""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from facetex.face3d.camera import pose_matrix, pose_to_euler
from facetex.face3d.drawing import draw_points, image_grid
from facetex.face3d.morphable_model import ModelFormat, load_morphable_model
from facetex.face3d.regressor import NUM_POSE, DecodedParams, MobileNetV1, decode_params, split_params
from facetex.face3d.synthetic import SyntheticFaceBatch

_PREDICTED_COLOUR = (0.0, 1.0, 0.0)
_TARGET_COLOUR = (1.0, 0.0, 0.0)


class FaceRegressorModule(L.LightningModule):
    """MobileNetV1 regression of normalised ``[pose 12 | shape S | expression E]`` from face renders.

    Args:
        model_path: the morphable model file whose parameters are regressed (the datamodule's).
        model_format: ``sfm``, ``bfm`` or ``bfm_mean`` (see ``datamodules.synthetic_faces``).
        widen_factor: MobileNetV1 width multiplier (3DDFA_V2 ships 1.0 and 0.5).
        optimizer: builds the optimiser from the parameters (AdamW, lr 1e-3, weight decay 1e-4 by default);
            its learning rate is annealed to zero with a cosine over training.
        landmark_loss_weight: weight of the landmark reprojection loss beside the parameter MSE.
        statistics_batches: datamodule batches used to estimate the target mean and std at setup.
        num_logged_images: validation inputs drawn with predicted (green) and true (red) landmarks.
    """

    def __init__(
        self,
        model_path: str = "../shared/assets/sfm/sfm_3448.npz",
        model_format: ModelFormat = "sfm",
        widen_factor: float = 0.5,
        optimizer: OptimizerCallable = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4),
        landmark_loss_weight: float = 1.0,
        statistics_batches: int = 16,
        num_logged_images: int = 8,
    ) -> None:
        super().__init__()
        if statistics_batches < 1:
            raise ValueError(f"statistics_batches must be >= 1, got {statistics_batches}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.face_model = load_morphable_model(model_path, model_format)
        self.num_params = NUM_POSE + self.face_model.num_shape + self.face_model.num_expression
        self.network = MobileNetV1(widen_factor=widen_factor, num_params=self.num_params, landmark_head=False)
        self.register_buffer("target_mean", torch.zeros(self.num_params))
        self.register_buffer("target_std", torch.ones(self.num_params))
        self.register_buffer("statistics_ready", torch.tensor(False))

    # parameters ------------------------------------------------------------------------

    def target_vector(self, batch: SyntheticFaceBatch) -> Tensor:
        """Ground-truth ``(B, 12 + S + E)`` parameters of a synthetic batch (not normalised)."""
        pose = pose_matrix(batch.rotation.float(), batch.scale.float(), batch.translation.float())
        return torch.cat([pose.flatten(1), batch.shape.float(), batch.expression.float()], dim=1)

    def decode(self, params: Tensor) -> DecodedParams:
        """Split un-normalised ``(B, 12 + S + E)`` parameters into :class:`DecodedParams`."""
        return split_params(params, self.face_model.num_shape, self.face_model.num_expression)

    def landmarks2d(self, params: DecodedParams) -> Tensor:
        """Screen positions ``(B, L, 2)`` of the model's landmarks under decoded parameters."""
        points = self.face_model.landmarks(self.face_model(params.shape, params.expression))
        return (points @ params.pose[:, :2, :3].transpose(1, 2) + params.pose[:, None, :2, 3]).float()

    def normalised_output(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 12 + S + E)`` normalised parameters, in fp32."""
        return self.network((images - 0.5) / 0.5).float()

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 12 + S + E)`` de-normalised parameters."""
        return self.normalised_output(images) * self.target_std + self.target_mean

    # setup -----------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Estimates the target statistics from the datamodule unless a checkpoint already holds them."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "statistics_batches"):
            if bool(self.statistics_ready):
                return
            raise RuntimeError(
                "FaceRegressorModule needs a datamodule with statistics_batches(n) (SyntheticFacesDataModule) to "
                "estimate its target normalisation; pass datamodule=... or load a trained checkpoint"
            )
        theirs, ours = datamodule.morphable_model, self.face_model
        if (theirs.num_vertices, theirs.num_shape, theirs.num_expression) != (
            ours.num_vertices, ours.num_shape, ours.num_expression
        ):
            raise ValueError(
                f"the datamodule renders a model with {theirs.num_vertices} vertices, {theirs.num_shape} shape and "
                f"{theirs.num_expression} expression modes but the regressor was built for {ours.num_vertices}, "
                f"{ours.num_shape} and {ours.num_expression}; give both the same model_path"
            )
        if bool(self.statistics_ready):
            return
        batches = datamodule.statistics_batches(self.hparams.statistics_batches)
        targets = torch.cat([self.target_vector(batch) for batch in batches])
        std = targets.std(0)
        # constant targets (the pose's last entry is always 0) are left unscaled
        std = torch.where(std > 1e-6 * std.max(), std, torch.ones_like(std))
        self.target_mean.copy_(targets.mean(0))
        self.target_std.copy_(std)
        self.statistics_ready.fill_(True)

    # steps -----------------------------------------------------------------------------

    def _losses(self, batch: SyntheticFaceBatch) -> tuple[dict[str, Tensor], DecodedParams, DecodedParams]:
        """Loss terms and the predicted and true parameters of one batch."""
        target = self.target_vector(batch)
        normalised_prediction = self.normalised_output(batch.images)
        normalised_target = (target - self.target_mean) / self.target_std
        predicted = decode_params(normalised_prediction, self.target_mean, self.target_std,
                                  self.face_model.num_shape, self.face_model.num_expression)
        true = self.decode(target)
        image_size = batch.images.shape[-1]
        landmark_error = (self.landmarks2d(predicted) - self.landmarks2d(true)).norm(dim=-1).mean() / image_size
        parameter_loss = F.mse_loss(normalised_prediction, normalised_target)
        losses = {
            "parameter_loss": parameter_loss,
            "landmark_loss": landmark_error,
            "loss": parameter_loss + self.hparams.landmark_loss_weight * landmark_error,
        }
        return losses, predicted, true

    def training_step(self, batch: SyntheticFaceBatch, batch_idx: int) -> Tensor:
        losses, _, _ = self._losses(batch)
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, prog_bar=False,
                      batch_size=batch.images.shape[0])
        return losses["loss"]

    def validation_step(self, batch: SyntheticFaceBatch, batch_idx: int) -> None:
        losses, predicted, true = self._losses(batch)
        metrics = {f"val/{name}": value for name, value in losses.items()}
        metrics["val/yaw_error"] = self.yaw_error(predicted, true)
        metrics["val/nme"] = self.landmark_nme(predicted, true)
        self.log_dict(metrics, prog_bar=True, batch_size=batch.images.shape[0], sync_dist=True)
        if batch_idx == 0:
            self._log_landmark_grid(batch.images, predicted, true)

    def yaw_error(self, predicted: DecodedParams, true: DecodedParams) -> Tensor:
        """Mean absolute yaw difference in degrees."""
        return (pose_to_euler(predicted.pose)[0] - pose_to_euler(true.pose)[0]).abs().mean()

    def landmark_nme(self, predicted: DecodedParams, true: DecodedParams) -> Tensor:
        """Mean landmark error over sqrt(w h) of the true landmarks' bounding box (AFLW2000-3D's NME)."""
        target = self.landmarks2d(true)
        extent = target.amax(1) - target.amin(1)
        normaliser = extent.prod(-1).clamp_min(1e-12).sqrt()
        return ((self.landmarks2d(predicted) - target).norm(dim=-1).mean(1) / normaliser).mean()

    def _log_landmark_grid(self, images: Tensor, predicted: DecodedParams, true: DecodedParams) -> None:
        """Adds the first inputs with true and predicted landmarks to every TensorBoard logger."""
        loggers = [logger for logger in self.loggers if isinstance(logger, TensorBoardLogger)]
        count = min(self.hparams.num_logged_images, images.shape[0])
        if not loggers or count == 0:
            return
        picked = slice(0, count)
        drawn = draw_points(images[picked].float().clamp(0, 1), self.landmarks2d(true)[picked], _TARGET_COLOUR)
        drawn = draw_points(drawn, self.landmarks2d(predicted)[picked], _PREDICTED_COLOUR)
        grid = image_grid(drawn.cpu())
        for logger in loggers:
            logger.experiment.add_image("val/landmarks", grid, self.global_step)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        total_steps = max(1, self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
