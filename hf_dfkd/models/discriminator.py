"""Class-conditional discriminator (the paper's architecture), a diffusers ``ModelMixin`` component."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .init import dcgan_init

__all__ = ["ConditionalDiscriminator"]


class ConditionalDiscriminator(ModelMixin, ConfigMixin):
    """``D(x, y)``: the label embedded as an extra image channel, then four convolutions to one logit.

    ``[x, embed(y)]`` → ``channels[0]`` (/2) → ``channels[1]`` (/2) → ``channels[2]`` → 1 (a final convolution over
    the remaining map), LeakyReLU(0.2) and dropout between them. With the defaults (64, 128, 256) this is the
    paper's discriminator. Returns raw logits (use with ``binary_cross_entropy_with_logits``).
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        num_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256),
        dropout: float = 0.3,
    ):
        super().__init__()
        if image_size % 4 != 0 or image_size < 4:
            raise ValueError(f"image_size must be a multiple of 4 (two 2x downsamplings), got {image_size}")
        c0, c1, c2 = channels
        self.label_embedding = nn.Embedding(num_classes, image_size * image_size)
        self.net = nn.Sequential(
            nn.Conv2d(num_channels + 1, c0, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(c0, c1, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(c1, c2, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(c2, 1, image_size // 4, 1, 0),
        )
        self.apply(dcgan_init)

    def forward(self, images: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images in [-1, 1] and ``(B,)`` labels → ``(B,)`` real/fake logits."""
        size = self.config.image_size
        if images.shape[1:] != (self.config.num_channels, size, size):
            raise ValueError(
                f"images must be ({self.config.num_channels}, {size}, {size}), got {tuple(images.shape[1:])}"
            )
        label_map = self.label_embedding(class_labels).view(-1, 1, size, size).to(images.dtype)
        return self.net(torch.cat([images, label_map], dim=1)).flatten()
