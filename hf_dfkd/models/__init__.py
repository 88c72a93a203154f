"""Model builders: the conditional GAN's diffusers components and ViT/DeiT classifiers from sizes."""

from .classifiers import build_classifier
from .discriminator import ConditionalDiscriminator
from .generator import ConditionalGenerator, check_layout_box_size, layout_boxes, layout_heatmap

__all__ = [
    "ConditionalDiscriminator",
    "ConditionalGenerator",
    "build_classifier",
    "check_layout_box_size",
    "layout_boxes",
    "layout_heatmap",
]
