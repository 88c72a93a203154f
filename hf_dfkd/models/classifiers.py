"""Build ViT/DeiT image classifiers from sizes, with the label names of a dataset or a teacher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
)

__all__ = ["build_classifier"]

_FAMILIES = {"vit": (ViTConfig, ViTForImageClassification), "deit": (DeiTConfig, DeiTForImageClassification)}


def build_classifier(
    model_type: Literal["vit", "deit"],
    *,
    image_size: int,
    num_channels: int,
    class_names: Sequence[str],
    patch_size: int = 4,
    hidden_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    mlp_ratio: float = 2.0,
    seed: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised ``ViTForImageClassification`` or ``DeiTForImageClassification``.

    ``id2label``/``label2id`` come from ``class_names``, so the saved model names its classes and teacher and
    student built from the same names share one label set. ``seed`` fixes the initial weights.
    """
    if model_type not in _FAMILIES:
        raise ValueError(f"model_type must be one of {sorted(_FAMILIES)}, got {model_type!r}")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
    config_cls, model_cls = _FAMILIES[model_type]
    names = [str(n) for n in class_names]
    config = config_cls(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=int(mlp_ratio * hidden_size),
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    if seed is not None:
        torch.manual_seed(seed)
    return model_cls(config)
