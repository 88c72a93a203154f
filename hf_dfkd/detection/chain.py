"""The detection chain as steps that read and write standard artifacts (teacher, generator, synthetic set, student).

Used by ``recipes/detr_drone.py``; each step writes its folder under a temporary name and renames it when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from accelerate import PartialState
from datasets import Dataset, load_from_disk
from transformers import PreTrainedModel, Trainer, TrainingArguments

from ..chain import Stages, _claim_output_dir, _device_name, command_line
from ..gan_trainer import plot_curves
from ..hub import detection_student_card, pipeline_card, read_sidecar, write_sidecar
from ..io import atomic_folder, load_image_dataset
from ..models import ConditionalDiscriminator, ConditionalGenerator
from .data import (
    EMBEDDED_DIGITS_DETECTION,
    DetectionCollator,
    DetectionTransform,
    check_detection_dataset,
    detection_augmentation,
    detection_class_names,
    detection_processor,
    make_digits_detection_dataset,
)
from .evaluation import evaluate_detectors
from .gan_trainer import (
    DETECTION_PROBES_FILE,
    DetectionClassProbes,
    DetectionGANConfig,
    DetectionGANTrainer,
    DetectionGANTransform,
    compute_detection_class_probes,
)
from .models import build_detector, count_parameters, load_detector
from .pipeline import DetectionSyntheticPipeline
from .trainer import DetrDistillationConfig, DetrDistillationTrainer

__all__ = [
    "DetectionChainArguments",
    "distill_detector",
    "evaluate_detection_students",
    "load_detection_dataset",
    "run_detection_chain",
    "train_detection_generator",
    "train_detector",
]


def load_detection_dataset(name: str, split: str, *, seed: int = 0) -> Dataset:
    """One split of a detection dataset: a Hub id, a folder in Hub layout, a ``save_to_disk`` folder, or
    ``"sklearn:digits-detection"`` (the embedded set, :func:`make_digits_detection_dataset`)."""
    if name == EMBEDDED_DIGITS_DETECTION:
        data = make_digits_detection_dataset(seed=seed)
        if split not in data:
            raise ValueError(f"the embedded detection set has splits {list(data)}, not {split!r}")
        return data[split]
    return load_image_dataset(name, split, seed=seed)


def train_detector(
    model: PreTrainedModel,
    train_dataset: Dataset,
    output_dir: str,
    *,
    image_size: tuple[int, int],
    epochs: float,
    learning_rate: float = 2e-4,
    weight_decay: float = 1e-4,
    batch_size: int = 16,
    max_grad_norm: float = 0.1,
    seed: int = 0,
    use_cpu: bool = False,
    image_column: str = "image",
    objects_column: str = "objects",
    invalid_boxes: str = "error",
    logging_steps: int = 50,
    augmentation: bool = False,
) -> PreTrainedModel:
    """Train a DETR/YOLOS detector on labelled real images with the plain ``Trainer`` (the model's own Hungarian
    loss) and save it, with its image processor, to ``output_dir``.

    The data owner's step (a user with a trained teacher skips it). AdamW, cosine schedule with warm-up, gradients
    clipped at 0.1 as in DETR. The dataset is checked (label set, boxes) before training starts. ``augmentation``
    turns on :func:`~hf_dfkd.detection.detection_augmentation` (flip, zoom-in crop, colour jitter).
    """
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    train_dataset = check_detection_dataset(train_dataset, class_names=names, image_column=image_column,
                                            objects_column=objects_column, invalid_boxes=invalid_boxes,
                                            where="the detector's training split")
    processor = detection_processor(image_size)
    transform = DetectionTransform(processor, image_size, image_column, objects_column,
                                   augmentation=detection_augmentation(image_size) if augmentation else None)
    with atomic_folder(output_dir) as tmp:
        args = TrainingArguments(
            os.path.join(tmp, "run"), num_train_epochs=epochs, learning_rate=learning_rate,
            weight_decay=weight_decay, per_device_train_batch_size=batch_size, lr_scheduler_type="cosine",
            warmup_steps=0.05, max_grad_norm=max_grad_norm, remove_unused_columns=False, save_strategy="no",
            report_to="none", logging_steps=logging_steps, seed=seed, use_cpu=use_cpu,
            dataloader_drop_last=True,
        )
        trainer = Trainer(model, args, train_dataset=train_dataset.with_transform(transform),
                          data_collator=DetectionCollator())
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        if trainer.is_world_process_zero():
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            trainer.state.save_to_json(os.path.join(tmp, "trainer_state.json"))
            shutil.rmtree(os.path.join(tmp, "run"), ignore_errors=True)
    model.config._name_or_path = os.fspath(output_dir)
    return model


def train_detection_generator(
    teacher: PreTrainedModel,
    train_dataset: Dataset,
    config: DetectionGANConfig,
    *,
    image_size: int,
    class_probes: DetectionClassProbes | None,
    generator_channels: tuple[int, int, int] = (256, 128, 64),
    discriminator_channels: tuple[int, int, int] = (64, 128, 256),
    latent_dim: int = 100,
    image_column: str = "image",
    objects_column: str = "objects",
) -> DetectionSyntheticPipeline:
    """Train the DETR-guided conditional GAN on the real images that hold objects (condition: the class of each
    image's largest object) and save ``config.output_dir/pipeline`` (generator + teacher) with its card."""
    with_objects = train_dataset.filter(lambda o: len(o["category"]) > 0, input_columns=[objects_column],
                                        desc="Images with objects")
    num_classes = teacher.config.num_labels
    generator = ConditionalGenerator(num_classes=num_classes, image_size=image_size, num_channels=3,
                                     latent_dim=latent_dim, channels=tuple(generator_channels),
                                     layout_box_size=list(config.layout_box_size)
                                     if config.detection_query == "layout" else None)
    discriminator = ConditionalDiscriminator(num_classes=num_classes, image_size=image_size, num_channels=3,
                                             channels=tuple(discriminator_channels))
    if config.resume_from_checkpoint is None and any(
        n.startswith("checkpoint-") for n in (os.listdir(config.output_dir) if os.path.isdir(config.output_dir) else [])
    ):
        config.resume_from_checkpoint = "latest"
    trainer = DetectionGANTrainer(
        teacher, generator, discriminator, config,
        with_objects.with_transform(DetectionGANTransform(image_size, image_column, objects_column)),
        class_probes=class_probes)
    metrics = trainer.train()
    pipe = DetectionSyntheticPipeline(image_generator=trainer.accelerator.unwrap_model(trainer.generator),
                                      teacher=teacher, teacher_image_mean=config.teacher_image_mean,
                                      teacher_image_std=config.teacher_image_std, mode="cgan")
    if trainer.accelerator.is_main_process:
        quality = {"teacher's top detection has the conditioning class (eval grid)":
                   round(metrics["eval_teacher_accuracy"], 4),
                   "teacher detects the conditioning class with score >= 0.5 (eval grid)":
                   round(metrics["eval_teacher_detects_class"], 4),
                   "teacher detections with score >= 0.5 per image (eval grid)":
                   round(metrics["eval_teacher_detections_per_image"], 4)}
        if "eval_attn_loss" in metrics:
            quality["attention loss 1 - cos(AP, CAP) (eval grid)"] = round(metrics["eval_attn_loss"], 4)
        if "eval_bn_loss" in metrics:
            quality["batch-norm statistics loss (eval grid)"] = round(metrics["eval_bn_loss"], 4)
        if "eval_layout_iou" in metrics:
            quality["median IoU of the teacher's box with the layout box (eval grid)"] = round(
                metrics["eval_layout_iou"], 4)
        with atomic_folder(os.path.join(config.output_dir, "pipeline")) as tmp:
            pipe.save_pretrained(tmp)
            t = teacher.config
            write_sidecar(tmp, task="object-detection", teacher=getattr(t, "_name_or_path", "") or t.model_type,
                          quality=quality, generator_parameters=count_parameters(generator),
                          gan={"steps": trainer.global_step, "lambda_attn": config.lambda_attn,
                               "lambda_detection": config.lambda_detection,
                               "lambda_background": config.lambda_background, "lambda_bn": config.lambda_bn,
                               "detection_query": config.detection_query,
                               **({"layout_box_size": list(config.layout_box_size), "lambda_box": config.lambda_box}
                                  if config.detection_query == "layout" else {}),
                               "lambda_diversity": config.lambda_diversity, "batch_size": config.batch_size,
                               "seed": config.seed})
            pipeline_card(tmp).save(os.path.join(tmp, "README.md"))
    trainer.accelerator.wait_for_everyone()
    return pipe


def distill_detector(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    train_dataset: Dataset,
    config: DetrDistillationConfig,
    *,
    image_size: tuple[int, int],
    mode: str = "cgan",
    train_description: str | None = None,
    image_column: str = "image",
    objects_column: str = "objects",
    augmentation: bool = False,
) -> DetrDistillationTrainer:
    """Distil ``teacher`` into ``student`` on ``train_dataset`` (synthetic detection images) and save the student,
    its image processor and a sidecar (mode, target mode, settings) to ``config.output_dir``, atomically.

    ``augmentation`` applies :func:`~hf_dfkd.detection.detection_augmentation` (flip, zoom-in crop, colour jitter)
    to every training image. The teacher labels each step's images as they are, so the targets move with the
    objects; a generator that puts objects at few positions and scales then still shows the student many."""
    names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    train_dataset = check_detection_dataset(train_dataset, class_names=names, image_column=image_column,
                                            objects_column=objects_column, where="the distillation set")
    batch = config.per_device_train_batch_size * max(config.world_size, 1)
    if config.dataloader_drop_last and len(train_dataset) < batch:
        raise ValueError(f"the distillation set has {len(train_dataset)} images, fewer than one batch of {batch}: "
                         "generate more (num_synthetic, or a lower score_threshold) or lower the student batch size")
    processor = detection_processor(image_size)
    transform = DetectionTransform(processor, image_size, image_column, objects_column,
                                   augmentation=detection_augmentation(image_size) if augmentation else None)
    output_dir = config.output_dir
    with atomic_folder(output_dir) as tmp:
        config.output_dir = os.path.join(tmp, "run")
        trainer = DetrDistillationTrainer(student, teacher, config, train_dataset=train_dataset.with_transform(transform))
        trainer.train()
        if trainer.is_world_process_zero():
            model = trainer.accelerator.unwrap_model(trainer.model)
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            shutil.rmtree(config.output_dir, ignore_errors=True)
            plot_curves(trainer.state.log_history, os.path.join(tmp, "distillation_curves.png"),
                        keys=("loss", "cls_loss", "box_loss", "giou_loss", "kd_loss", "matched"))
            write_sidecar(tmp, task="object-detection", provenance={
                "mode": mode,
                "target_mode": config.target_mode,
                "teacher": getattr(teacher.config, "_name_or_path", "") or teacher.config.model_type,
                "train_dataset": f"{len(train_dataset)} images" + (f", {train_description}" if train_description else ""),
                "training": {"epochs": config.num_train_epochs, "batch_size": config.per_device_train_batch_size,
                             "learning_rate": config.learning_rate, **config.loss_kwargs(),
                             "augmentation": augmentation, "seed": config.seed},
                "command": command_line(),
            }, log_history=trainer.state.log_history)
    config.output_dir = output_dir
    return trainer


def evaluate_detection_students(
    student_dirs: dict[str, str],
    teacher: PreTrainedModel,
    dataset: Dataset,
    *,
    image_size: tuple[int, int],
    dataset_name: str,
    split: str,
    image_column: str = "image",
    objects_column: str = "objects",
) -> dict[str, dict]:
    """mAP, parameters and latency of the teacher and each saved student on a real split (one pass over it);
    each student's sidecar gets its ``evaluation`` and its ``README.md`` becomes a model card."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    students = {key: load_detector(path, "student") for key, path in student_dirs.items()}
    rows = evaluate_detectors({"teacher": teacher, **students}, dataset, image_size=image_size, device=device,
                              image_column=image_column, objects_column=objects_column)
    common = dict(dataset_name=dataset_name, split=split, num_examples=len(dataset), image_size=image_size[0],
                  device=_device_name(device))
    for key, path in student_dirs.items():
        write_sidecar(path, evaluation={**common, "teacher": rows["teacher"], "student": rows[key]})
        detection_student_card(path).save(os.path.join(path, "README.md"))
    return {**rows, "evaluation": common}



@dataclass
class DetectionChainArguments:
    """Arguments of :func:`run_detection_chain` (and ``recipes/detr_drone.py``), parsable with ``HfArgumentParser``.

    Defaults: a tiny chain on the embedded digits-detection set (a minute on a CPU). The recipe's presets size it
    for the drone frames.
    """

    output_dir: str = field(default="runs/detr", metadata={"help": "Where every artifact and results.json go."})
    dataset_name: str = field(default=EMBEDDED_DIGITS_DETECTION, metadata={
        "help": "Detection dataset (Hub id, folder) with image and objects {bbox, category}; the default is embedded."})
    train_split: str = field(default="train", metadata={"help": "Split the data owner trains teacher and GAN on."})
    test_split: str = field(default="test", metadata={"help": "Held-out real split for the mAP of both models."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    objects_column: str = field(default="objects", metadata={"help": "Objects column (bbox, category)."})
    invalid_boxes: Literal["error", "clip", "drop"] = field(default="error", metadata={
        "help": "Boxes outside the image or empty: stop with an error, clip them, or drop them."})
    image_size: int = field(default=64, metadata={"help": "Side of the square images every model sees."})
    seed: int = field(default=0, metadata={"help": "Seed of every step."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on the CPU even when a GPU is visible."})
    overwrite: bool = field(default=False, metadata={"help": "Start over in an output_dir holding another run."})
    stop_after: Literal["teacher", "generator", "synthetic", "students", "all"] = field(default="all", metadata={
        "help": "Stop after this stage (a later run with the same arguments resumes from there)."})
    # teacher
    teacher_name_or_path: str | None = field(default=None, metadata={
        "help": "A trained DETR/YOLOS teacher (Hub id or folder); default: train one on the train split."})
    teacher_backbone_hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 128], metadata={
        "help": "ResNet stage widths of the teacher (4 stages of 256..2048 with bottleneck blocks: ResNet-50)."})
    teacher_backbone_depths: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={
        "help": "ResNet blocks per stage of the teacher ([3, 4, 6, 3]: ResNet-50)."})
    teacher_backbone_layer_type: Literal["basic", "bottleneck"] = field(default="basic", metadata={
        "help": "ResNet block type of the teacher."})
    teacher_d_model: int = field(default=128, metadata={"help": "Transformer width of the teacher."})
    teacher_layers: int = field(default=2, metadata={"help": "Encoder and decoder layers of the teacher (each)."})
    teacher_heads: int = field(default=4, metadata={"help": "Attention heads of the teacher."})
    teacher_ffn_dim: int | None = field(default=None, metadata={
        "help": "Feed-forward width of the teacher's transformer (default 4 x d_model; DETR R50: 2048)."})
    num_queries: int = field(default=10, metadata={"help": "Object queries of teacher and student."})
    teacher_epochs: float = field(default=60, metadata={"help": "Teacher epochs on the real train split."})
    teacher_learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate of the teacher."})
    teacher_batch_size: int = field(default=16, metadata={"help": "Teacher batch size."})
    teacher_augmentation: bool = field(default=False, metadata={
        "help": "Augment the teacher's training images (flip, zoom-in crop, colour jitter): for real footage, where "
                "frames of one video are near-duplicates."})
    # detection class probes and the guided GAN
    probe_images: int | None = field(default=None, metadata={
        "help": "Real train images whose objects make the detection class probes (default: all)."})
    lambda_attn: float = field(default=1.0, metadata={"help": "Weight of the cross-attention probe loss (0: off)."})
    lambda_detection: float = field(default=1.0, metadata={
        "help": "Weight of the 'teacher detects the conditioning class' loss (0: off)."})
    lambda_background: float = field(default=1.0, metadata={
        "help": "Weight of the 'every other query says no object' loss: one object per synthetic image (0: off)."})
    lambda_bn: float = field(default=0.0, metadata={
        "help": "Weight of the batch-norm statistics prior: generated images should give the feature statistics "
                "stored in the teacher backbone's batch norms (0: off)."})
    detection_query: Literal["best", "latent", "layout"] = field(default="best", metadata={
        "help": "Which teacher query must detect the conditioning class: 'best' (whichever does it best), 'latent' "
                "(a query picked by each image's latent, so objects land where different queries look) or 'layout' "
                "(each latent draws a box and the teacher must detect the class in it: objects of every size at "
                "every place)."})
    layout_box_size: list[float] = field(default_factory=lambda: [0.03, 0.25], metadata={
        "help": "--detection_query layout: smallest and largest box side, as a fraction of the image side."})
    lambda_box: float = field(default=1.0, metadata={
        "help": "--detection_query layout: weight of the teacher's box matching the layout box (L1 + 1 - GIoU)."})
    lambda_diversity: float = field(default=0.2, metadata={"help": "Weight of the mode-seeking loss (0: off)."})
    gan_epochs: float = field(default=20, metadata={"help": "GAN epochs over the real train images with objects."})
    gan_steps: int = field(default=-1, metadata={"help": "If > 0: GAN steps, overriding gan_epochs."})
    gan_batch_size: int = field(default=32, metadata={"help": "Real (and fake) images per GAN step."})
    gan_learning_rate: float = field(default=2e-4, metadata={"help": "Adam learning rate of G and D."})
    generator_channels: list[int] = field(default_factory=lambda: [128, 64, 32], metadata={
        "help": "Hidden widths of the generator."})
    discriminator_channels: list[int] = field(default_factory=lambda: [32, 64, 128], metadata={
        "help": "Hidden widths of the discriminator."})
    # synthetic dataset
    num_synthetic: int = field(default=400, metadata={"help": "Synthetic images generated for the students."})
    score_threshold: float = field(default=0.3, metadata={
        "help": "Teacher detections scoring at least this become the synthetic set's annotations."})
    # students
    target_modes: list[str] = field(default_factory=lambda: ["paired", "hungarian"], metadata={
        "help": "Target modes to distil a student with (one student each): paired (the paper), hungarian."})
    student_family: Literal["detr", "yolos"] = field(default="detr", metadata={"help": "Student family."})
    student_backbone_hidden_sizes: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={
        "help": "ResNet stage widths of a DETR student ([64, 128, 256, 512] basic: ResNet-18)."})
    student_backbone_depths: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={
        "help": "ResNet blocks per stage of a DETR student ([2, 2, 2, 2]: ResNet-18)."})
    student_d_model: int = field(default=64, metadata={"help": "Transformer width of the student."})
    student_layers: int = field(default=1, metadata={"help": "Encoder and decoder layers of the student (each)."})
    student_heads: int = field(default=2, metadata={"help": "Attention heads of the student."})
    student_ffn_dim: int | None = field(default=None, metadata={
        "help": "Feed-forward width of the student's transformer (default 4 x d_model)."})
    student_patch_size: int = field(default=16, metadata={"help": "Patch size of a YOLOS student."})
    student_epochs: float = field(default=10, metadata={"help": "Student epochs over the synthetic set."})
    student_learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate of the students."})
    student_batch_size: int = field(default=16, metadata={"help": "Student batch size."})
    student_augmentation: bool = field(default=False, metadata={
        "help": "Augment the synthetic images at every student step (flip, zoom-in crop, colour jitter); the teacher "
                "labels the augmented images, so the student sees objects at more positions and scales."})
    real_data_reference: bool = field(default=False, metadata={
        "help": "Also distil one student per target mode on the real train images, for the data-free students' number "
                "of steps (the teacher labels them; not data-free): the paper's real-data KD reference, which shows "
                "how much the synthetic images lose."})
    temperature: float = field(default=2.0, metadata={"help": "Temperature of the KL term."})
    confidence_threshold: float = field(default=0.3, metadata={
        "help": "Teacher detections scoring at least this are the hungarian mode's targets."})

    def __post_init__(self):
        if self.teacher_name_or_path is None and self.train_split == self.test_split:
            raise ValueError("train_split and test_split are the same: the evaluation split must be held out")
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}")
        bad = sorted(set(self.target_modes) - {"paired", "hungarian"})
        if bad or not self.target_modes:
            raise ValueError(f"target_modes takes 'paired' and/or 'hungarian', got {self.target_modes}")
        for name in ("score_threshold", "confidence_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if len(self.generator_channels) != 3 or len(self.discriminator_channels) != 3:
            raise ValueError("generator_channels and discriminator_channels take three widths each")
        self.gan_config("unused", 1)  # the GAN's own checks, before the teacher trains

    def gan_config(self, output_dir: str, steps: int) -> DetectionGANConfig:
        """The guided GAN's config for ``steps`` optimiser steps, writing to ``output_dir``."""
        return DetectionGANConfig(
            output_dir, lambda_attn=self.lambda_attn, lambda_detection=self.lambda_detection,
            lambda_background=self.lambda_background, lambda_bn=self.lambda_bn, detection_query=self.detection_query,
            layout_box_size=list(self.layout_box_size), lambda_box=self.lambda_box,
            lambda_diversity=self.lambda_diversity, max_steps=steps, batch_size=self.gan_batch_size,
            learning_rate=self.gan_learning_rate, seed=self.seed, use_cpu=self.use_cpu, logging_steps=25,
            eval_steps=max(1, steps // 5), save_steps=max(1, steps // 5), save_total_limit=1,
            eval_images_per_class=8)

    def build_teacher(self, class_names: list[str]) -> PreTrainedModel:
        """A fresh DETR teacher of these sizes (the data owner's model when none is given)."""
        return build_detector(
            "detr", class_names=class_names, image_size=(self.image_size, self.image_size),
            num_queries=self.num_queries, d_model=self.teacher_d_model, encoder_layers=self.teacher_layers,
            decoder_layers=self.teacher_layers, attention_heads=self.teacher_heads, ffn_dim=self.teacher_ffn_dim,
            backbone_hidden_sizes=self.teacher_backbone_hidden_sizes, backbone_depths=self.teacher_backbone_depths,
            backbone_layer_type=self.teacher_backbone_layer_type,
            backbone_embedding_size=min(64, self.teacher_backbone_hidden_sizes[0]), seed=self.seed)

    def build_student(self, class_names: list[str]) -> PreTrainedModel:
        """A fresh student of these sizes (DETR or YOLOS)."""
        return build_detector(
            self.student_family, class_names=class_names, image_size=(self.image_size, self.image_size),
            num_queries=self.num_queries, d_model=self.student_d_model, encoder_layers=self.student_layers,
            decoder_layers=self.student_layers, attention_heads=self.student_heads, ffn_dim=self.student_ffn_dim,
            backbone_hidden_sizes=self.student_backbone_hidden_sizes, backbone_depths=self.student_backbone_depths,
            backbone_embedding_size=min(64, self.student_backbone_hidden_sizes[0]),
            patch_size=self.student_patch_size, auxiliary_loss=False, seed=self.seed + 1)

    def student_config(self, output_dir: str, target_mode: str, num_images: int, num_processes: int = 1,
                       **overrides) -> DetrDistillationConfig:
        """The :class:`DetrDistillationConfig` of one student stage: these epochs, batch size, learning rate,
        temperature and threshold, a cosine schedule, about 20 log lines, no checkpoints; ``overrides`` win."""
        steps = self.student_epochs * -(-num_images // (self.student_batch_size * num_processes))
        settings = dict(
            target_mode=target_mode, num_train_epochs=self.student_epochs, learning_rate=self.student_learning_rate,
            per_device_train_batch_size=self.student_batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
            temperature=self.temperature, confidence_threshold=self.confidence_threshold, seed=self.seed,
            use_cpu=self.use_cpu, report_to="none", save_strategy="no",
            logging_steps=max(1, min(50, round(steps / 20))), dataloader_drop_last=True)
        return DetrDistillationConfig(output_dir, **{**settings, **overrides})


def run_detection_chain(args: DetectionChainArguments) -> dict:
    """Teacher → guided generator → synthetic detection set → students (both target modes) → mAP on the real split.

    Re-running with the same arguments resumes: finished artifacts are loaded, not recomputed.
    """
    out = args.output_dir
    state = PartialState(cpu=args.use_cpu or not torch.cuda.is_available())
    if state.is_main_process:
        _claim_output_dir(args, volatile=("overwrite", "stop_after"))
    state.wait_for_everyone()
    stage = Stages(state, os.path.join(out, "timings.json"))
    size = (args.image_size, args.image_size)

    train = load_detection_dataset(args.dataset_name, args.train_split, seed=args.seed)
    test = load_detection_dataset(args.dataset_name, args.test_split, seed=args.seed)
    names = detection_class_names(train, args.objects_column)
    check = dict(image_column=args.image_column, objects_column=args.objects_column, invalid_boxes=args.invalid_boxes)
    train = check_detection_dataset(train, class_names=names, where=f"split {args.train_split!r}", **check)
    test = check_detection_dataset(test, class_names=names, where=f"split {args.test_split!r}", **check)

    def make_teacher():
        model = args.build_teacher(names)
        return train_detector(model, train, os.path.join(out, "teacher"), image_size=size,
                              epochs=args.teacher_epochs, learning_rate=args.teacher_learning_rate,
                              batch_size=args.teacher_batch_size, seed=args.seed, use_cpu=args.use_cpu,
                              image_column=args.image_column, objects_column=args.objects_column,
                              augmentation=args.teacher_augmentation)

    teacher = stage("teacher", args.teacher_name_or_path or os.path.join(out, "teacher"),
                    lambda p: load_detector(p, "teacher"), make_teacher, everyone=True).eval()
    if args.stop_after == "teacher":
        return {}

    # 2. detection class probes: per class, where the teacher's decoder looks when it detects that class
    def make_probes():
        subset = train.shuffle(seed=args.seed).select(range(min(args.probe_images, len(train)))) \
            if args.probe_images else train
        probes = compute_detection_class_probes(teacher, subset, args.image_size, image_column=args.image_column,
                                                objects_column=args.objects_column)
        probes.save(out)
        return probes

    probes = stage("detection class probes", os.path.join(out, DETECTION_PROBES_FILE), DetectionClassProbes.load,
                   make_probes) if args.lambda_attn > 0 else None

    # 3. the DETR-guided conditional GAN, packaged as a pipeline with the teacher as annotator
    gan_dir = os.path.join(out, "gan")

    def make_pipeline():
        with_objects = sum(1 for o in train[args.objects_column] if len(o["category"]))
        steps = args.gan_steps if args.gan_steps > 0 else max(1, round(
            args.gan_epochs * (with_objects // (args.gan_batch_size * state.num_processes))))
        config = args.gan_config(gan_dir, steps)
        return train_detection_generator(
            teacher, train, config, image_size=args.image_size, class_probes=probes,
            generator_channels=tuple(args.generator_channels), discriminator_channels=tuple(args.discriminator_channels),
            image_column=args.image_column, objects_column=args.objects_column)

    pipe = stage("guided cGAN", os.path.join(gan_dir, "pipeline"), DetectionSyntheticPipeline.from_pretrained,
                 make_pipeline, everyone=True)
    if args.stop_after == "generator":
        return {}

    # 4. the synthetic detection set: generated images, annotated by the teacher
    synthetic_dir = os.path.join(out, "synthetic")
    pipe.set_progress_bar_config(desc="Writing synthetic images")
    synthetic = stage("synthetic dataset", synthetic_dir, load_from_disk, lambda: pipe.write_dataset(
        args.num_synthetic, synthetic_dir, seed=args.seed, score_threshold=args.score_threshold,
        quality=read_sidecar(os.path.join(gan_dir, "pipeline")).get("quality")))
    if args.stop_after == "synthetic":
        return {}

    # 5. one student per target mode on the synthetic images; with real_data_reference, the same students on the
    # real train images for the same optimiser steps: what the synthetic set costs (the paper's real-data KD, not
    # data-free)
    sources = [("", synthetic, pipe.config.mode, f"synthetic, written by the pipeline in {gan_dir}/pipeline",
                ("image", "objects"), {})]
    if args.real_data_reference:
        steps = int(args.student_epochs * (len(synthetic) // (args.student_batch_size * state.num_processes)))
        sources.append(("-real-data", train, "real-data", f"the real split {args.train_split!r} of {args.dataset_name}",
                        (args.image_column, args.objects_column), {"max_steps": steps}))
    student_dirs = {}
    for suffix, images, mode, description, (image_column, objects_column), overrides in sources:
        for target_mode in args.target_modes:
            key = target_mode + suffix
            student_dir = student_dirs[key] = os.path.join(out, f"student-{key}")

            def make_student(target_mode=target_mode, student_dir=student_dir, images=images, mode=mode,
                             description=description, image_column=image_column, objects_column=objects_column,
                             overrides=overrides):
                config = args.student_config(student_dir, target_mode, len(images), state.num_processes, **overrides)
                distill_detector(args.build_student(names), teacher, images, config, image_size=size, mode=mode,
                                 train_description=description, image_column=image_column,
                                 objects_column=objects_column, augmentation=args.student_augmentation)

            stage(f"student ({key})", student_dir, lambda p: None, make_student, everyone=True)
    if args.stop_after == "students":
        return {}

    # 6. mAP of the teacher and every student on the real held-out split
    rows = stage("evaluation", None, lambda p: {}, lambda: evaluate_detection_students(
        student_dirs, teacher, test, image_size=size, dataset_name=args.dataset_name, split=args.test_split,
        image_column=args.image_column, objects_column=args.objects_column))
    if not state.is_main_process:
        return rows
    timings = json.load(open(stage.timings_path))
    results = {
        "mode": pipe.config.mode,
        "dataset_name": args.dataset_name,
        "split": args.test_split,
        **rows,
        "student_over_teacher_map_50": {k: rows[k]["map_50"] / rows["teacher"]["map_50"]
                                        if rows["teacher"]["map_50"] > 0 else None for k in student_dirs},
        "teacher_over_student_parameters": {k: rows["teacher"]["parameters"] / rows[k]["parameters"]
                                            for k in student_dirs},
        "synthetic_images": len(synthetic),
        "synthetic_quality": read_sidecar(synthetic_dir).get("quality", {}),
        "seconds": timings | {"total": round(sum(timings.values()), 1)},
        "processes": state.num_processes,
        "command": command_line(),
        "args": asdict(args),
    }
    tmp = os.path.join(out, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(out, "results.json"))
    print(detection_summary_table(results), flush=True)
    return results


def detection_summary_table(r: dict) -> str:
    """A Markdown table of teacher and students on the real split (from :func:`run_detection_chain`'s results)."""
    lines = ["", f"| model | parameters | latency/image ({r['evaluation']['device']}) | mAP@[.5:.95] | mAP@0.5 | "
             f"mAP@0.5 / teacher's |", "|---|---|---|---|---|---|"]
    for key in ["teacher", *r["student_over_teacher_map_50"]]:
        row = r[key]
        ratio = r["student_over_teacher_map_50"].get(key)
        name = "teacher" if key == "teacher" else f"student, target mode {key.removesuffix('-real-data')}" + (
            ", real-data KD (reference, not data-free)" if key.endswith("-real-data") else "")
        lines.append(f"| {name} | {row['parameters']:,} | {1000 * row['latency_s_per_image']:.2f} ms | "
                     f"{row['map']:.4f} | {row['map_50']:.4f} | {'-' if key == 'teacher' or ratio is None else f'{ratio:.3f}'} |")
    lines += ["", f"{r['synthetic_images']} synthetic images; stage seconds: {r['seconds']}"]
    return "\n".join(lines)
