"""Class-conditional image generator (the paper's architecture), a diffusers ``ModelMixin`` component."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .init import dcgan_init

__all__ = ["ConditionalGenerator"]


class ConditionalGenerator(ModelMixin, ConfigMixin):
    """``G(z, y)``: a label embedding concatenated to the latent, then four transposed convolutions.

    ``latent ⊕ embed(y)`` (as a 1×1 map) → ``channels[0]`` at ``⌈image_size/8⌉`` → ×2 → ``channels[1]`` at
    ``image_size/4`` → ×2 → ``channels[2]`` → ×2 → ``num_channels`` at ``image_size`` (batch norm + ReLU after all
    but the last, ``tanh`` output in [-1, 1]); e.g. 4 → 7 → 14 → 28 for MNIST, 4 → 8 → 16 → 32 for CIFAR-10.
    With the defaults (512, 256, 128) this is the paper's generator; ``image_size`` and ``num_channels`` follow the
    teacher's config (8×8 digits, 28×28×1, 32×32×3 all work; any size divisible by 4).

    Saved with ``save_pretrained`` as ``config.json`` + ``diffusion_pytorch_model.safetensors``.
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        num_channels: int = 3,
        latent_dim: int = 100,
        embedding_dim: int = 50,
        channels: Sequence[int] = (512, 256, 128),
    ):
        super().__init__()
        if image_size % 4 != 0 or image_size < 4:
            raise ValueError(f"image_size must be a multiple of 4 (two 2x upsamplings), got {image_size}")
        if len(channels) != 3:
            raise ValueError(f"channels must list the 3 hidden widths, e.g. (512, 256, 128); got {channels}")
        c0, c1, c2 = channels
        quarter = image_size // 4
        base = (quarter + 1) // 2
        # a stride-2 transposed conv (padding 1) gives 2n with kernel 4, 2n - 1 with kernel 3 (7 from 4 for MNIST)
        second_kernel = 4 if quarter == 2 * base else 3
        self.label_embedding = nn.Embedding(num_classes, embedding_dim)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim + embedding_dim, c0, base, 1, 0, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c0, c1, second_kernel, 2, 1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, c2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, num_channels, 4, 2, 1),
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    def forward(self, latents: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` latents and ``(B,)`` labels → ``(B, num_channels, image_size, image_size)`` in [-1, 1]."""
        if latents.ndim != 2 or latents.shape[1] != self.config.latent_dim:
            raise ValueError(f"latents must be (batch, {self.config.latent_dim}), got {tuple(latents.shape)}")
        x = torch.cat([latents, self.label_embedding(class_labels).to(latents.dtype)], dim=1)
        return self.net(x[:, :, None, None])
