"""NVlabs' call style on our rosinality-layout StyleGAN2, for users of the official pickles and scripts.

NVlabs' ``Generator`` (stylegan2-ada-pytorch, stylegan3) is called as::

    img = G(z, c, truncation_psi=0.7, truncation_cutoff=8, noise_mode='const')
    ws = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=8)       # (B, num_ws, w_dim)
    img = G.synthesis(ws, noise_mode='const')                          # (B, 3, R, R)
    G.z_dim, G.c_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels

:class:`NVlabsStyleGAN2` answers these calls and keeps the project's own interface (``mapping(z)`` ->
``(B, style_dim)``, ``forward(styles, input_is_latent, truncation, truncation_latent)``, ``n_latent``,
``style_dim``): a call is NVlabs' when it passes the label ``c`` (a tensor or None, positionally or by name)
or one of NVlabs' keywords. Truncation pulls the rows before ``truncation_cutoff`` towards ``w_avg``, the
tracked average w that the loaders set (an NVlabs pickle's ``mapping.w_avg``, a rosinality or ReStyle file's
``latent_avg``). Noise defaults as NVlabs': ``G.synthesis(ws)`` and ``G(z, c)`` draw new noise (``'random'``);
``noise_mode='const'`` uses the stored noise buffers (what the project's stages pass, for repeatable images).
The state dict is the base class's (``w_avg`` is not saved).
StyleGAN3 (``facetex.gan.stylegan3``) follows NVlabs' layout and takes these calls natively.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from facetex.gan.stylegan2 import Generator, NoiseMode

NVLABS_KEYWORDS = frozenset({"c", "truncation_psi", "truncation_cutoff", "update_emas", "force_fp32"})
_ABSENT: Any = object()


class NVlabsStyleGAN2(Generator):
    """:class:`facetex.gan.stylegan2.Generator` that also takes NVlabs' calls; same arguments as the base."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("w_avg", torch.full((self.style_dim,), float("nan")), persistent=False)

    c_dim = 0
    img_channels = 3

    @property
    def z_dim(self) -> int:
        """Width of z (NVlabs' name; rosinality's z and w share ``style_dim``)."""
        return self.style_dim

    @property
    def w_dim(self) -> int:
        """Width of w (NVlabs' name)."""
        return self.style_dim

    @property
    def num_ws(self) -> int:
        """Rows of W+ (NVlabs' name for ``n_latent``)."""
        return self.n_latent

    @property
    def img_resolution(self) -> int:
        """Output side in pixels (NVlabs' name for ``size``)."""
        return self.size

    @torch.no_grad()
    def set_w_avg(self, w_avg: Tensor) -> NVlabsStyleGAN2:
        """Store the truncation centre (style_dim,) or (1, style_dim); returns self."""
        self.w_avg.copy_(w_avg.detach().reshape(self.style_dim))
        return self

    def mapping(self, z: Tensor, c: Tensor | None = _ABSENT, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> Tensor:
        """``mapping(z)`` -> w (B, style_dim); NVlabs' ``mapping(z, c, psi, cutoff)`` -> ws (B, num_ws, w_dim)."""
        w = super().mapping(z)
        if c is _ABSENT and truncation_psi == 1 and truncation_cutoff is None and not update_emas:
            return w
        self._check_label(c, z.shape[0])
        if update_emas:
            raise ValueError("update_emas=True tracks w_avg during training; this generator is for inference")
        ws = w.unsqueeze(1).repeat(1, self.n_latent, 1)
        if truncation_psi != 1:
            if torch.isnan(self.w_avg).any():
                raise ValueError("truncation needs w_avg, the tracked average w: load the generator with "
                                 "facetex.gan.checkpoints.load_generator, or call set_w_avg(generator.mean_latent(4096))")
            cutoff = self.n_latent if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def synthesis(self, ws: Tensor, noise_mode: NoiseMode = "random", noise: Sequence[Tensor] | None = None,
                  force_fp32: bool = True, update_emas: bool = False) -> Tensor:
        """W+ (B, num_ws, w_dim) -> image (B, 3, R, R), new noise by default as NVlabs' ``SynthesisNetwork``;
        NVlabs' ``force_fp32``/``update_emas`` change nothing here."""
        return super().synthesis(ws, noise_mode=noise_mode, noise=noise)

    def forward(self, styles: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """NVlabs' ``G(z, c, truncation_psi, truncation_cutoff, noise_mode='random')`` or the base class's call."""
        if not (args and (args[0] is None or isinstance(args[0], Tensor))) and not NVLABS_KEYWORDS & kwargs.keys():
            return super().forward(styles, *args, **kwargs)
        return self._nvlabs_forward(styles, *args, **kwargs)

    def _nvlabs_forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0,
                        truncation_cutoff: int | None = None, update_emas: bool = False,
                        **synthesis_kwargs: Any) -> Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)

    def _check_label(self, c: Tensor | None, batch: int) -> None:
        if c is not None and c is not _ABSENT and c.numel() != 0:
            raise ValueError(f"this generator is unconditional (c_dim=0); pass c=None or an empty (B, 0) tensor, "
                             f"got shape {tuple(c.shape)} for a batch of {batch}")

