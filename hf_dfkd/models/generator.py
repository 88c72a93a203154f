"""Class-conditional image generator (the paper's architecture), a diffusers ``ModelMixin`` component."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .init import dcgan_init

__all__ = ["ConditionalGenerator", "check_layout_box_size", "layout_boxes", "layout_heatmap"]


def check_layout_box_size(sizes: Sequence[float]) -> None:
    """Raise unless ``sizes`` is ``[min, max]`` box sides with ``0 < min <= max <= 1`` (fractions of the image)."""
    if len(sizes) != 2 or not 0 < sizes[0] <= sizes[1] <= 1:
        raise ValueError(f"layout_box_size must be [min, max] with 0 < min <= max <= 1 (fractions of the image "
                         f"side), got {sizes}")


def layout_boxes(latents: torch.Tensor, min_size: float, max_size: float,
                 max_aspect: float = 2.0) -> torch.Tensor:
    """The layout box of each latent, ``(B, 4)`` normalised ``cx, cy, w, h``, a deterministic function of ``z[:4]``.

    With ``u_i = Φ(z_i)`` (uniform for ``z ~ N(0, I)``): side ``s = min·(max/min)^u₂`` and aspect
    ``a = max_aspect^(2u₃ − 1)`` (both log-uniform), ``w = s·√a``, ``h = s/√a`` (at most 1), and the centre uniform
    over the positions that keep the box inside the image (``u₀``, ``u₁``). Random latents give random layouts, so
    a pipeline that samples ``z ~ N(0, I)`` needs nothing else.
    """
    if latents.ndim != 2 or latents.shape[1] < 4:
        raise ValueError(f"layout boxes need latents of at least 4 dimensions, got {tuple(latents.shape)}")
    u = torch.special.ndtr(latents[:, :4].float())
    side = min_size * (max_size / min_size) ** u[:, 2]
    aspect = max_aspect ** (2 * u[:, 3] - 1)
    w, h = (side * aspect.sqrt()).clamp(max=1.0), (side / aspect.sqrt()).clamp(max=1.0)
    cx = w / 2 + u[:, 0] * (1 - w)
    cy = h / 2 + u[:, 1] * (1 - h)
    return torch.stack([cx, cy, w, h], dim=1)


def layout_heatmap(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 1, size, size)`` Gaussian bumps, one per ``cx, cy, w, h`` box, with standard deviations of half the box
    (at least one cell, so a box smaller than a cell of a coarse feature map still shows)."""
    grid = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    sx = (boxes[:, 2] / 2).clamp(min=1.0 / size)[:, None]
    sy = (boxes[:, 3] / 2).clamp(min=1.0 / size)[:, None]
    gx = torch.exp(-0.5 * ((grid[None] - boxes[:, 0:1]) / sx) ** 2)  # (B, size)
    gy = torch.exp(-0.5 * ((grid[None] - boxes[:, 1:2]) / sy) ** 2)
    return (gy[:, :, None] * gx[:, None, :])[:, None]


class ConditionalGenerator(ModelMixin, ConfigMixin):
    """``G(z, y)``: a label embedding concatenated to the latent, then four transposed convolutions.

    ``latent ⊕ embed(y)`` (as a 1×1 map) → ``channels[0]`` at ``⌈image_size/8⌉`` → ×2 → ``channels[1]`` at
    ``image_size/4`` → ×2 → ``channels[2]`` → ×2 → ``num_channels`` at ``image_size`` (batch norm + ReLU after all
    but the last, ``tanh`` output in [-1, 1]); e.g. 4 → 7 → 14 → 28 for MNIST, 4 → 8 → 16 → 32 for CIFAR-10.
    With the defaults (512, 256, 128) this is the paper's generator; ``image_size`` and ``num_channels`` follow the
    teacher's config (8×8 digits, 28×28×1, 32×32×3 all work; any size divisible by 4).

    With ``layout_box_size=(min, max)`` (detection) each latent also draws a box (:func:`layout_boxes` of ``z[:4]``),
    and a heatmap of it (:func:`layout_heatmap`) is given as one more input channel to every upsampling layer:
    the generator is told where the object goes instead of having to learn it from the latent.

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
        layout_box_size: Sequence[float] | None = None,
    ):
        super().__init__()
        if layout_box_size is not None:
            check_layout_box_size(layout_box_size)
            if latent_dim < 4:
                raise ValueError(f"layout boxes are drawn from z[:4]: latent_dim must be >= 4, got {latent_dim}")
        extra = 1 if layout_box_size is not None else 0  # the layout heatmap channel
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
            nn.ConvTranspose2d(c0 + extra, c1, second_kernel, 2, 1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1 + extra, c2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2 + extra, num_channels, 4, 2, 1),
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    def forward(self, latents: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` latents and ``(B,)`` labels → ``(B, num_channels, image_size, image_size)`` in [-1, 1]."""
        if latents.ndim != 2 or latents.shape[1] != self.config.latent_dim:
            raise ValueError(f"latents must be (batch, {self.config.latent_dim}), got {tuple(latents.shape)}")
        x = torch.cat([latents, self.label_embedding(class_labels).to(latents.dtype)], dim=1)[:, :, None, None]
        boxes = self.layout(latents)
        if boxes is None:
            return self.net(x)
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.ConvTranspose2d) and i > 0:
                x = torch.cat([x, layout_heatmap(boxes, x.shape[-1]).to(x.dtype)], dim=1)
            x = layer(x)
        return x

    def layout(self, latents: torch.Tensor) -> torch.Tensor | None:
        """The layout box of each latent (``(B, 4)`` normalised ``cx, cy, w, h``), or None without layouts."""
        if self.config.layout_box_size is None:
            return None
        return layout_boxes(latents, *self.config.layout_box_size)
