"""hf_dfkd: data-free knowledge distillation of vision transformers on the Hugging Face stack."""

from .config import DistillationConfig
from .data import ImageTransform, load_digits_dataset
from .losses import ce_loss, kd_loss, patch_probe_loss, total_distillation_loss
from .probes import (
    CLSAttentionProbe,
    UnsupportedModelError,
    default_layer_pairs,
    patch_attention_probe,
    patch_probes_from_hidden_states,
)
from .teacher_cache import add_teacher_outputs
from .trainer import DistillationTrainer, NonFiniteLossError

__version__ = "0.1.0.dev0"

__all__ = [
    "CLSAttentionProbe",
    "DistillationConfig",
    "DistillationTrainer",
    "ImageTransform",
    "NonFiniteLossError",
    "UnsupportedModelError",
    "add_teacher_outputs",
    "ce_loss",
    "default_layer_pairs",
    "kd_loss",
    "load_digits_dataset",
    "patch_attention_probe",
    "patch_probe_loss",
    "patch_probes_from_hidden_states",
    "total_distillation_loss",
]
