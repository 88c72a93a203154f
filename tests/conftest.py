"""Shared builders: tiny ViT/DeiT models from configs and small datasets made in the test, no downloads."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from datasets import Dataset
from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

NAMES = [f"class_{i}" for i in range(4)]


def tiny_vit(hidden=32, layers=2, heads=2, image_size=8, patch_size=2, channels=1, num_labels=4, deit=False, names=NAMES, seed=0, **kw):
    torch.manual_seed(seed)
    config_cls, model_cls = (DeiTConfig, DeiTForImageClassification) if deit else (ViTConfig, ViTForImageClassification)
    config = config_cls(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=channels,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        num_labels=num_labels,
        **({"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}} if names else {}),
        **kw,
    )
    return model_cls(config)


def tensor_dataset(n=16, image_size=8, channels=1, num_labels=4, with_labels=True, seed=0) -> Dataset:
    """Random images already as ``pixel_values`` (torch format), with integer labels."""
    g = torch.Generator().manual_seed(seed)
    data = {"pixel_values": torch.randn(n, channels, image_size, image_size, generator=g).numpy()}
    if with_labels:
        data["label"] = torch.randint(0, num_labels, (n,), generator=g).tolist()
    return Dataset.from_dict(data).with_format("torch")


@pytest.fixture
def tmp_out(tmp_path):
    return str(tmp_path / "out")
