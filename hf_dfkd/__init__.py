"""hf_dfkd: data-free knowledge distillation of vision transformers on the Hugging Face stack."""

from .class_probes import ClassAttentionProbes, compute_class_attention_probes
from .config import DistillationConfig
from .data import ImageTransform, TeacherInputAdapter, load_digits_dataset
from .gan_trainer import GANConfig, GANTrainer, NonFiniteGANLossError
from .losses import attention_guidance_loss, ce_loss, kd_loss, patch_probe_loss, total_distillation_loss
from .models import ConditionalDiscriminator, ConditionalGenerator
from .pipeline import SyntheticImagePipeline
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
    "ClassAttentionProbes",
    "ConditionalDiscriminator",
    "ConditionalGenerator",
    "GANConfig",
    "GANTrainer",
    "NonFiniteGANLossError",
    "SyntheticImagePipeline",
    "TeacherInputAdapter",
    "attention_guidance_loss",
    "compute_class_attention_probes",
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
