"""Data-free distillation of object detectors (DETR, YOLOS): trainer, DETR-guided GAN, pipeline, chain."""

from .chain import (
    DetectionChainArguments,
    distill_detector,
    evaluate_detection_students,
    load_detection_dataset,
    run_detection_chain,
    train_detection_generator,
    train_detector,
)
from .data import (
    EMBEDDED_DIGITS_DETECTION,
    DetectionCollator,
    DetectionTransform,
    check_detection_dataset,
    detection_augmentation,
    detection_class_names,
    detection_features,
    detection_processor,
    make_digits_detection_dataset,
)
from .evaluation import evaluate_detectors, measure_latency
from .gan_trainer import (
    DetectionClassProbes,
    DetectionGANConfig,
    DetectionGANTrainer,
    DetectionGANTransform,
    compute_detection_class_probes,
)
from .losses import hungarian_detection_loss, paired_detection_loss
from .models import (
    UnsupportedDetectorError,
    build_detector,
    check_detection_pair,
    check_detector,
    count_parameters,
    load_detector,
    make_backbone_trainable,
)
from .pipeline import DetectionSyntheticPipeline
from .trainer import DetrDistillationConfig, DetrDistillationTrainer

__all__ = [
    "EMBEDDED_DIGITS_DETECTION",
    "DetectionChainArguments",
    "DetectionClassProbes",
    "DetectionCollator",
    "DetectionGANConfig",
    "DetectionGANTrainer",
    "DetectionGANTransform",
    "DetectionSyntheticPipeline",
    "DetectionTransform",
    "DetrDistillationConfig",
    "DetrDistillationTrainer",
    "UnsupportedDetectorError",
    "build_detector",
    "check_detection_dataset",
    "check_detection_pair",
    "check_detector",
    "compute_detection_class_probes",
    "count_parameters",
    "detection_augmentation",
    "detection_class_names",
    "detection_features",
    "detection_processor",
    "distill_detector",
    "evaluate_detection_students",
    "evaluate_detectors",
    "hungarian_detection_loss",
    "load_detection_dataset",
    "load_detector",
    "make_backbone_trainable",
    "make_digits_detection_dataset",
    "measure_latency",
    "paired_detection_loss",
    "run_detection_chain",
    "train_detection_generator",
    "train_detector",
]
