"""diffusers-style model components of the conditional GAN."""

from .discriminator import ConditionalDiscriminator
from .generator import ConditionalGenerator

__all__ = ["ConditionalDiscriminator", "ConditionalGenerator"]
