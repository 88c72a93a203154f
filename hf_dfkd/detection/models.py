"""Build and load transformers object detectors (DETR, YOLOS) offline, and check that a pair can be distilled."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoModelForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
    PreTrainedModel,
    ResNetConfig,
    YolosConfig,
    YolosForObjectDetection,
)

from ..io import load_model

__all__ = [
    "SIGMOID_DETECTORS",
    "SOFTMAX_DETECTORS",
    "UnsupportedDetectorError",
    "build_detector",
    "check_detection_pair",
    "check_detector",
    "count_parameters",
    "load_detector",
    "make_backbone_trainable",
]

SOFTMAX_DETECTORS = ("detr", "yolos")
"""Families whose class scores are a softmax over ``num_labels + 1`` classes, the last being "no object"."""

SIGMOID_DETECTORS = (
    "conditional_detr", "deformable_detr", "dab_detr", "deta", "rt_detr", "rt_detr_v2", "d_fine", "grounding-dino",
    "omdet-turbo", "owlv2", "owlvit",
)
"""Families scoring each class with a sigmoid and no "no object" class: their KD needs other losses."""


class UnsupportedDetectorError(ValueError):
    """The detector's family is not (yet) supported by the detection distillation losses."""


def count_parameters(model: nn.Module) -> int:
    """Number of learnt weights of ``model``: its parameters, plus the affine weights that a reloaded DETR keeps as
    buffers (its frozen batch norm), so a model counts the same before and after ``save_pretrained``."""
    frozen = sum(b.numel() for n, b in model.named_buffers() if n.endswith((".weight", ".bias")))
    return sum(p.numel() for p in model.parameters()) + frozen


def _resnet(hidden_sizes: Sequence[int], depths: Sequence[int], layer_type: str, embedding_size: int) -> ResNetConfig:
    stages = [f"stage{i + 1}" for i in range(len(depths))]
    return ResNetConfig(
        embedding_size=embedding_size, hidden_sizes=list(hidden_sizes), depths=list(depths), layer_type=layer_type,
        out_features=[stages[-1]],
    )


def build_detector(
    family: Literal["detr", "yolos"],
    *,
    class_names: Sequence[str],
    image_size: tuple[int, int] = (128, 128),
    num_queries: int = 10,
    d_model: int = 128,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    attention_heads: int = 4,
    ffn_dim: int | None = None,
    backbone_hidden_sizes: Sequence[int] = (32, 64, 128),
    backbone_depths: Sequence[int] = (1, 1, 1),
    backbone_layer_type: Literal["basic", "bottleneck"] = "basic",
    backbone_embedding_size: int = 32,
    patch_size: int = 16,
    auxiliary_loss: bool = True,
    seed: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised ``DetrForObjectDetection`` or ``YolosForObjectDetection``, built without any download.

    DETR gets a transformers ``ResNetConfig`` backbone (``backbone_hidden_sizes``/``backbone_depths``; its last stage
    feeds the transformer, so three stages give a stride-16 feature map, four a stride-32 one): no timm, no
    pretrained weights; its backbone is made trainable (:func:`make_backbone_trainable`). ``hidden_sizes=(256, 512, 1024, 2048)``, ``depths=(3, 4, 6, 3)``, ``"bottleneck"`` is
    ResNet-50; ``(64, 128, 256, 512)``, ``(2, 2, 2, 2)``, ``"basic"`` is ResNet-18. YOLOS is a plain ViT
    (``d_model`` wide, ``encoder_layers`` deep, ``patch_size`` patches) with ``num_queries`` detection tokens.
    ``id2label``/``label2id`` come from ``class_names``; ``seed`` fixes the initial weights.
    """
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names is empty: a detector needs at least one class")
    height, width = image_size
    labels = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    ffn_dim = ffn_dim or 4 * d_model
    if d_model % attention_heads:
        raise ValueError(f"d_model {d_model} is not a multiple of attention_heads {attention_heads}")
    if family == "detr":
        config = DetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
            backbone_config=_resnet(backbone_hidden_sizes, backbone_depths, backbone_layer_type,
                                    backbone_embedding_size),
            num_queries=num_queries, d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            encoder_attention_heads=attention_heads, decoder_attention_heads=attention_heads,
            encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim, auxiliary_loss=auxiliary_loss, **labels,
        )
        model_cls = DetrForObjectDetection
    elif family == "yolos":
        if height % patch_size or width % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        config = YolosConfig(
            image_size=[height, width], patch_size=patch_size, hidden_size=d_model, num_hidden_layers=encoder_layers,
            num_attention_heads=attention_heads, intermediate_size=ffn_dim, num_detection_tokens=num_queries,
            auxiliary_loss=auxiliary_loss, **labels,
        )
        model_cls = YolosForObjectDetection
    else:
        raise ValueError(f"family must be 'detr' or 'yolos', got {family!r}")
    if seed is not None:
        torch.manual_seed(seed)
    model = model_cls(config)
    if family == "detr":
        # transformers initialises the object queries with std 0.02 (fine for fine-tuning a pretrained DETR); from
        # scratch, queries that close together collapse into one (every query predicts the same box). The original
        # DETR draws them from N(0, 1).
        nn.init.normal_(model.model.query_position_embeddings.weight)
    # freshly initialised: the whole backbone trains, with real batch norm (see make_backbone_trainable)
    return make_backbone_trainable(model)


def make_backbone_trainable(model: PreTrainedModel) -> PreTrainedModel:
    """Let a DETR's convolutional backbone train from scratch: trainable batch norm, every parameter trainable.

    ``DetrForObjectDetection`` is built for a *pretrained* backbone: it freezes the batch norms (fixed statistics,
    so a random backbone has no normalisation at all) and the stem and first stage. A backbone trained here from
    random weights needs both. Saved weights keep the batch-norm statistics under the same names, so
    ``from_pretrained`` reloads them into DETR's frozen batch norm, which then computes exactly the eval-mode batch
    norm. Other families pass through unchanged.
    """
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    if getattr(model.config, "model_type", None) != "detr":
        return model
    backbone = model.model.backbone.model

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, DetrFrozenBatchNorm2d):
                norm = nn.BatchNorm2d(child.weight.numel())
                with torch.no_grad():
                    norm.weight.copy_(child.weight), norm.bias.copy_(child.bias)
                    norm.running_mean.copy_(child.running_mean), norm.running_var.copy_(child.running_var)
                # only used when momentum is None; without it the saved weights reload with no "unexpected keys"
                norm.register_buffer("num_batches_tracked", None)
                module._modules[name] = norm
            else:
                swap(child)

    swap(backbone)
    backbone.requires_grad_(True)
    return model


def check_detector(model: PreTrainedModel, role: str = "model") -> None:
    """Raise :class:`UnsupportedDetectorError` unless ``model`` is a softmax-scored detector (DETR, YOLOS).

    Sigmoid-scored families (Conditional/Deformable/RT-DETR…) have no "no object" class: the KL and the expanded
    targets below would silently mean something else for them, so they are refused rather than mis-distilled.
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type in SOFTMAX_DETECTORS:
        return
    if model_type in SIGMOID_DETECTORS:
        raise UnsupportedDetectorError(
            f"the {role} is a {model_type!r} detector, whose class scores are sigmoids without a no-object class; "
            f"hf_dfkd distils softmax detectors only ({', '.join(SOFTMAX_DETECTORS)}). Use a DETR or YOLOS {role}."
        )
    raise UnsupportedDetectorError(
        f"the {role} (model_type={model_type!r}) is not a supported object detector; use one of "
        f"{', '.join(SOFTMAX_DETECTORS)}"
    )


def check_detection_pair(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Both supported detectors with the same label set (same names in the same order)."""
    check_detector(teacher, "teacher")
    check_detector(student, "student")
    t = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    s = [student.config.id2label[i] for i in range(student.config.num_labels)]
    if t != s:
        raise ValueError(
            f"teacher and student have different label sets: teacher {t}, student {s}. Build the student with the "
            "teacher's class names (build_detector(..., class_names=teacher's names))"
        )


def load_detector(model: str | os.PathLike | PreTrainedModel, role: str = "model") -> PreTrainedModel:
    """An ``AutoModelForObjectDetection`` from a local folder or a Hub id, in float32; models pass through.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` for a folder that holds no detector, before
    any download or long work; unsupported families raise :class:`UnsupportedDetectorError`.
    """
    if isinstance(model, nn.Module):
        check_detector(model, role)
        return model
    loaded = load_model(model, role, AutoModelForObjectDetection, "ForObjectDetection", "an object detector")
    check_detector(loaded, role)
    return loaded
