"""hf_dfkd: data-free knowledge distillation of vision transformers on the Hugging Face stack."""

from .batchnorm_prior import BatchNormStatistics
from .chain import ChainArguments, distill_student, evaluate_student, run_chain, train_generator, train_teacher
from .class_probes import ClassAttentionProbes, compute_class_attention_probes
from .config import DistillationConfig
from .detection import DetectionSyntheticPipeline, DetrDistillationConfig, DetrDistillationTrainer
from .data import ImageTransform, TeacherInputAdapter, load_digits_dataset
from .evaluation import evaluate_classifiers
from .gan_trainer import GANConfig, GANTrainer, NonFiniteGANLossError
from .losses import (
    attention_guidance_loss,
    batchnorm_statistics_loss,
    ce_loss,
    kd_loss,
    patch_probe_loss,
    total_distillation_loss,
)
from .hub import push_pipeline, push_student, push_synthetic_dataset
from .io import load_classifier, load_image_dataset
from .models import ConditionalDiscriminator, ConditionalGenerator, build_classifier
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
    "BatchNormStatistics",
    "ChainArguments",
    "CLSAttentionProbe",
    "build_classifier",
    "distill_student",
    "evaluate_classifiers",
    "evaluate_student",
    "load_classifier",
    "load_image_dataset",
    "push_pipeline",
    "push_student",
    "push_synthetic_dataset",
    "run_chain",
    "train_generator",
    "train_teacher",
    "ClassAttentionProbes",
    "ConditionalDiscriminator",
    "ConditionalGenerator",
    "GANConfig",
    "GANTrainer",
    "NonFiniteGANLossError",
    "SyntheticImagePipeline",
    "TeacherInputAdapter",
    "attention_guidance_loss",
    "batchnorm_statistics_loss",
    "compute_class_attention_probes",
    "DistillationConfig",
    "DistillationTrainer",
    "DetectionSyntheticPipeline",
    "DetrDistillationConfig",
    "DetrDistillationTrainer",
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
