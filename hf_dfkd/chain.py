"""The data-free distillation chain as steps that read and write standard artifacts.

``teacher`` → ``class_attention_probes.safetensors`` → ``pipeline/`` (attention-guided cGAN) → ``synthetic/``
(a ``datasets`` folder) → ``student/`` (a transformers model) → evaluation on a real split.

Each step is a function here, used by the ``hf-dfkd`` subcommands (one step each, so steps can run on different
machines) and by :func:`run_chain` (all of them, for ``hf-dfkd demo`` and the recipes). Every folder is written
to a temporary name and renamed when complete, so :func:`run_chain` resumes a stopped run at the first missing
artifact and never mistakes a half-written one for a finished one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Literal

import torch
from accelerate import PartialState
from datasets import Dataset, load_from_disk
from transformers import PreTrainedModel, Trainer, TrainingArguments, default_data_collator

from .class_probes import CLASS_PROBES_FILE, ClassAttentionProbes, compute_class_attention_probes
from .config import DistillationConfig
from .data import ImageTransform
from .evaluation import evaluate_classifiers
from .gan_trainer import GANConfig, GANTrainer, plot_curves
from .hub import dataset_card, pipeline_card, read_sidecar, student_card, write_sidecar
from .metrics import TeacherFeatures, compute_statistics, frechet_distance, image_batches
from .io import EMBEDDED_DIGITS, atomic_folder, check_image_dataset, class_names, load_classifier, load_image_dataset
from .models import ConditionalDiscriminator, ConditionalGenerator, build_classifier
from .pipeline import SyntheticImagePipeline
from .trainer import DistillationTrainer

__all__ = [
    "ChainArguments",
    "distill_student",
    "evaluate_student",
    "image_transform_for",
    "run_chain",
    "train_generator",
    "train_teacher",
]


def command_line() -> str:
    """The command that is running, for provenance in cards and results."""
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])


def image_transform_for(model: PreTrainedModel, image_column: str = "image") -> ImageTransform:
    """The :class:`ImageTransform` that feeds ``model``: its size and channels, and its image processor's
    mean/std when its folder has a ``preprocessor_config.json`` (else 0.5/0.5, i.e. pixels in [-1, 1])."""
    mean, std = [0.5], [0.5]
    path = getattr(model.config, "_name_or_path", "")
    processor = os.path.join(path, "preprocessor_config.json") if path else ""
    if processor and os.path.isfile(processor):
        with open(processor) as f:
            config = json.load(f)
        mean, std = config.get("image_mean", mean), config.get("image_std", std)
    channels = getattr(model.config, "num_channels", 3)
    if len(mean) == 1:  # one value for every channel
        mean, std = mean * channels, std * channels
    return ImageTransform(model.config.image_size, channels, mean, std, image_column=image_column)


# ---- steps ----------------------------------------------------------------------------------------------------------


def train_teacher(
    model: PreTrainedModel,
    train_dataset: Dataset,
    output_dir: str,
    *,
    epochs: float,
    learning_rate: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    use_cpu: bool = False,
    image_column: str = "image",
    label_column: str = "label",
) -> PreTrainedModel:
    """Train an image classifier on labelled real images with the plain ``Trainer`` and save it to ``output_dir``.

    The data owner's step (a user with a trained teacher skips it). AdamW, cosine schedule with warm-up, weight
    decay 0.05; the folder appears only when training is complete.
    """
    check_image_dataset(train_dataset, image_column, label_column, "the teacher's training split")
    transform = image_transform_for(model, image_column)
    if label_column != "label":
        train_dataset = train_dataset.rename_column(label_column, "label")
    with atomic_folder(output_dir) as tmp:
        args = TrainingArguments(
            os.path.join(tmp, "run"), num_train_epochs=epochs, learning_rate=learning_rate, weight_decay=0.05,
            per_device_train_batch_size=batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
            remove_unused_columns=False, save_strategy="no", report_to="none", logging_steps=100, seed=seed,
            use_cpu=use_cpu,
        )
        trainer = Trainer(model, args, train_dataset=train_dataset.with_transform(transform),
                          data_collator=default_data_collator)
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        if trainer.is_world_process_zero():
            model.save_pretrained(tmp)
            shutil.rmtree(os.path.join(tmp, "run"), ignore_errors=True)
    model.config._name_or_path = os.fspath(output_dir)  # as if loaded from there: cards name the teacher by it
    return model


def train_generator(
    teacher: PreTrainedModel,
    train_dataset: Dataset,
    config: GANConfig,
    *,
    class_probes: ClassAttentionProbes | None,
    generator_channels: tuple[int, int, int] = (512, 256, 128),
    discriminator_channels: tuple[int, int, int] = (64, 128, 256),
    latent_dim: int = 100,
    image_column: str = "image",
    label_column: str = "label",
) -> SyntheticImagePipeline:
    """Train the (attention-guided) conditional GAN and save ``config.output_dir/pipeline`` with its card.

    The generator and discriminator follow the teacher's image size and channels; ``class_probes`` is required
    when ``config.lambda_attn > 0`` (0 trains the vanilla cGAN). A stopped run resumes from its last checkpoint.
    """
    if config.lambda_attn > 0 and class_probes is None:
        raise ValueError("lambda_attn > 0 needs class attention probes (run `hf-dfkd probes`), or set lambda_attn=0 "
                         "for the vanilla cGAN")
    check_image_dataset(train_dataset, image_column, label_column, "the GAN's real images")
    t = teacher.config
    size = t.image_size if isinstance(t.image_size, int) else t.image_size[0]
    transform = ImageTransform(size, t.num_channels, image_column=image_column)  # [-1, 1], the generator's range
    if label_column != "label":
        train_dataset = train_dataset.rename_column(label_column, "label")
    generator = ConditionalGenerator(num_classes=t.num_labels, image_size=size, num_channels=t.num_channels,
                                     latent_dim=latent_dim, channels=tuple(generator_channels))
    discriminator = ConditionalDiscriminator(num_classes=t.num_labels, image_size=size, num_channels=t.num_channels,
                                             channels=tuple(discriminator_channels))
    teacher_transform = image_transform_for(teacher)
    config.teacher_image_mean = teacher_transform.mean.flatten().tolist()
    config.teacher_image_std = teacher_transform.std.flatten().tolist()
    if config.resume_from_checkpoint is None and any(
        n.startswith("checkpoint-") for n in (os.listdir(config.output_dir) if os.path.isdir(config.output_dir) else [])
    ):
        config.resume_from_checkpoint = "latest"
    trainer = GANTrainer(teacher, generator, discriminator, config, train_dataset.with_transform(transform),
                         class_probes=class_probes)
    metrics = trainer.train()
    pipe = SyntheticImagePipeline(image_generator=trainer.accelerator.unwrap_model(trainer.generator), teacher=teacher,
                                  teacher_image_mean=config.teacher_image_mean,
                                  teacher_image_std=config.teacher_image_std, mode="cgan")
    if trainer.accelerator.is_main_process:
        quality = {"teacher accuracy on generated images (eval grid)": round(metrics["eval_teacher_accuracy"], 4)}
        if "eval_attn_loss" in metrics:
            quality["attention loss 1 - cos(AP, CAP) (eval grid)"] = round(metrics["eval_attn_loss"], 4)
        with atomic_folder(os.path.join(config.output_dir, "pipeline")) as tmp:
            pipe.save_pretrained(tmp)
            write_sidecar(tmp, teacher=getattr(t, "_name_or_path", "") or t.model_type, quality=quality,
                          generator_parameters=sum(p.numel() for p in generator.parameters()),
                          gan={"steps": trainer.global_step, "lambda_attn": config.lambda_attn,
                               "batch_size": config.batch_size, "seed": config.seed})
            pipeline_card(tmp).save(os.path.join(tmp, "README.md"))
    trainer.accelerator.wait_for_everyone()
    return pipe


def distill_student(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    train_dataset: Dataset,
    config: DistillationConfig,
    *,
    image_column: str = "image",
    label_column: str | None = "label",
    mode: str = "real-data",
    train_description: str | None = None,
) -> DistillationTrainer:
    """Distil ``teacher`` into ``student`` on ``train_dataset`` and save the student to ``config.output_dir``.

    Uses the dataset's cached ``teacher_logits`` when present (and caches the teacher's patch probes when
    ``lambda_patch > 0``). ``mode`` (see :data:`hf_dfkd.hub.MODES`) and ``train_description`` say where the
    training images came from, for the model card. The saved folder is a plain transformers checkpoint plus a sidecar ``hf_dfkd.json``
    recording the mode, teacher, training images and settings; it appears only when training is complete.
    """
    labels_needed = config.label_source == "dataset"
    check_image_dataset(train_dataset, image_column, label_column if labels_needed else None, "the distillation set")
    if label_column and label_column in train_dataset.column_names and label_column != "label":
        train_dataset = train_dataset.rename_column(label_column, "label")
    transform = image_transform_for(teacher, image_column)
    if tuple(transform.size) != _image_size(student):
        raise ValueError(f"the student's input is {_image_size(student)} but the teacher's is {tuple(transform.size)}: "
                         "build the student with the teacher's image_size")
    output_dir = config.output_dir
    with atomic_folder(output_dir) as tmp:
        config.output_dir = os.path.join(tmp, "run")
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config,
                                      train_dataset=train_dataset.with_transform(transform))
        if config.lambda_patch > 0 or "teacher_logits" not in train_dataset.column_names:
            trainer.train_dataset = trainer.cache_teacher_outputs(train_dataset, transform).with_transform(transform)
        trainer.train()
        if trainer.is_world_process_zero():
            trainer.save_model(tmp)
            shutil.rmtree(config.output_dir, ignore_errors=True)
            if os.path.exists(os.path.join(tmp, "training_args.bin")):  # a pickle has no place in a shared checkpoint
                os.remove(os.path.join(tmp, "training_args.bin"))
            plot_curves(trainer.state.log_history, os.path.join(tmp, "distillation_curves.png"),
                        keys=("total_loss", "kd_loss", "ce_loss", "patch_loss"))
            write_sidecar(tmp, provenance={
                "mode": mode,
                "teacher": getattr(teacher.config, "_name_or_path", "") or teacher.config.model_type,
                "train_dataset": f"{len(train_dataset)} images" + (f", {train_description}" if train_description else ""),
                "image_mean": transform.mean.flatten().tolist(),
                "image_std": transform.std.flatten().tolist(),
                "training": {"epochs": config.num_train_epochs, "batch_size": config.per_device_train_batch_size,
                             "learning_rate": config.learning_rate, "temperature": config.temperature,
                             "lambda_kd": config.lambda_kd, "lambda_ce": config.lambda_ce,
                             "lambda_patch": config.lambda_patch, "label_source": config.label_source,
                             "seed": config.seed},
                "command": command_line(),
            }, log_history=trainer.state.log_history)
    config.output_dir = output_dir
    return trainer


def _image_size(model: PreTrainedModel) -> tuple[int, int]:
    size = model.config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def evaluate_student(
    student_dir: str,
    teacher: PreTrainedModel,
    dataset: Dataset,
    *,
    dataset_name: str,
    split: str,
    image_column: str = "image",
    label_column: str = "label",
) -> dict:
    """Evaluate a saved student against its teacher on a real split; record the results and write the model card.

    Results (accuracy of both, agreement, parameters, size on disk, latency per image) go into the student's
    sidecar ``hf_dfkd.json``, and ``README.md`` becomes a model card with ``model-index`` results.
    """
    check_image_dataset(dataset, image_column, label_column, f"the evaluation split {split!r}")
    student = load_classifier(student_dir, "student")
    if student.config.num_labels != teacher.config.num_labels:
        raise ValueError(f"the student predicts {student.config.num_labels} classes, the teacher "
                         f"{teacher.config.num_labels}: they do not share a label set")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student.to(device)
    teacher.to(device)
    results = evaluate_classifiers(student, teacher, dataset, image_transform_for(teacher, image_column),
                                   label_column=label_column)
    results.update(dataset_name=dataset_name, split=split, device=_device_name(device))
    write_sidecar(student_dir, evaluation=results)
    student_card(student_dir).save(os.path.join(student_dir, "README.md"))
    return results


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {torch.get_num_threads()} threads"


# ---- the whole chain ------------------------------------------------------------------------------------------------


@dataclass
class ChainArguments:
    """Every setting of the chain, flat so that ``HfArgumentParser`` reads it from the command line, JSON or YAML."""

    output_dir: str = field(metadata={"help": "Folder for every artifact; an existing run resumes where it stopped."})
    dataset_name: str = field(default=EMBEDDED_DIGITS, metadata={
        "help": f"Labelled image dataset: Hub id, local folder, or {EMBEDDED_DIGITS!r} (embedded)."})
    train_split: str = field(default="train", metadata={"help": "The data owner's real images (teacher, GAN)."})
    test_split: str = field(default="test", metadata={"help": "Real split for evaluation only."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class labels."})
    seed: int = field(default=42, metadata={"help": "Seed of the models, the GAN and the synthetic set."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on the CPU even when a GPU is visible."})
    overwrite: bool = field(default=False, metadata={"help": "Start over when output_dir holds another run."})
    # teacher
    teacher_name_or_path: str | None = field(default=None, metadata={
        "help": "A trained teacher (Hub id or folder). Default: train one here on the train split."})
    teacher_model_type: Literal["vit", "deit"] = field(default="vit", metadata={"help": "Teacher trained here."})
    teacher_patch_size: int = field(default=4, metadata={"help": "Patch size of the teacher trained here."})
    teacher_hidden_size: int = field(default=256, metadata={"help": "Width of the teacher trained here."})
    teacher_layers: int = field(default=4, metadata={"help": "Blocks of the teacher trained here."})
    teacher_heads: int = field(default=4, metadata={"help": "Attention heads of the teacher trained here."})
    teacher_mlp_ratio: float = field(default=2.0, metadata={"help": "MLP width / hidden width (teacher)."})
    teacher_epochs: float = field(default=10, metadata={"help": "Epochs of the teacher trained here."})
    teacher_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the teacher."})
    teacher_batch_size: int = field(default=128, metadata={"help": "Batch size of the teacher."})
    # class attention probes
    probe_images: int | None = field(default=None, metadata={
        "help": "Real train images averaged into the class attention probes (default: all)."})
    probe_layer: int = field(default=-1, metadata={"help": "Teacher block of the CLS attention probe (-1: last)."})
    # GAN
    lambda_attn: float = field(default=1.0, metadata={"help": "Weight of the attention loss (0: vanilla cGAN)."})
    lambda_diversity: float = field(default=0.2, metadata={
        "help": "Weight of the mode-seeking loss that keeps variety within classes (0: the paper's generator loss)."})
    gan_epochs: float = field(default=1, metadata={"help": "GAN epochs over the real train split."})
    gan_steps: int = field(default=-1, metadata={"help": "If > 0: GAN steps, overriding gan_epochs."})
    gan_batch_size: int = field(default=64, metadata={"help": "Real (and fake) images per GAN step."})
    gan_learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate of G and D."})
    generator_channels: list[int] = field(default_factory=lambda: [512, 256, 128], metadata={
        "help": "Hidden widths of the generator (the paper: 512 256 128)."})
    discriminator_channels: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={
        "help": "Hidden widths of the discriminator (the paper: 64 128 256)."})
    # synthetic dataset
    num_synthetic: int = field(default=10_000, metadata={"help": "Synthetic images for the student."})
    fid_images: int = field(default=10_000, metadata={
        "help": "Real test and synthetic images compared by the teacher-feature FID of the dataset card."})
    # student
    student_model_type: Literal["vit", "deit"] = field(default="deit", metadata={"help": "Student family."})
    student_patch_size: int = field(default=4, metadata={"help": "Student patch size."})
    student_hidden_size: int = field(default=128, metadata={"help": "Student width."})
    student_layers: int = field(default=4, metadata={"help": "Student blocks."})
    student_heads: int = field(default=2, metadata={"help": "Student attention heads."})
    student_mlp_ratio: float = field(default=2.0, metadata={"help": "MLP width / hidden width (student)."})
    student_epochs: float = field(default=10, metadata={"help": "Epochs over the synthetic set."})
    student_learning_rate: float = field(default=7.5e-4, metadata={"help": "AdamW learning rate (the paper)."})
    student_batch_size: int = field(default=128, metadata={"help": "Student batch size."})
    temperature: float = field(default=4.0, metadata={"help": "KD temperature."})
    lambda_kd: float = field(default=1.0, metadata={"help": "Weight of the KD loss."})
    lambda_ce: float = field(default=1.0, metadata={"help": "Weight of the CE loss."})
    lambda_patch: float = field(default=0.0, metadata={"help": "Weight of the patch attention-probe loss."})
    label_source: Literal["dataset", "teacher"] = field(default="teacher", metadata={
        "help": "CE labels: the generator's class ('dataset') or the teacher's argmax ('teacher')."})

    def __post_init__(self):
        if self.teacher_name_or_path is None and self.train_split == self.test_split:
            raise ValueError("train_split and test_split are the same: the evaluation split must be held out")
        if self.num_synthetic < 1 or self.gan_batch_size < 1:
            raise ValueError("num_synthetic and gan_batch_size must be >= 1")
        if len(self.generator_channels) != 3 or len(self.discriminator_channels) != 3:
            raise ValueError("generator_channels and discriminator_channels take three widths each")


def run_chain(args: ChainArguments) -> dict:
    """Run every step; returns the results, also written to ``output_dir/results.json`` with a summary table.

    Re-running with the same arguments resumes: finished artifacts are loaded, not recomputed. Under
    ``accelerate launch`` the training steps use every process and the others run on the main one.
    """
    out = args.output_dir
    # cpu=True on a machine without GPU: else, before any Trainer exists, every process would believe it is the main one
    state = PartialState(cpu=args.use_cpu or not torch.cuda.is_available())
    if state.is_main_process:
        _claim_output_dir(args)
    state.wait_for_everyone()
    stage = Stages(state, os.path.join(out, "timings.json"))

    train = load_image_dataset(args.dataset_name, args.train_split, seed=args.seed)
    test = load_image_dataset(args.dataset_name, args.test_split, seed=args.seed)
    for split, data in ((args.train_split, train), (args.test_split, test)):
        check_image_dataset(data, args.image_column, args.label_column, f"split {split!r} of {args.dataset_name}")
    names = class_names(train, args.label_column)
    first = train[0][args.image_column]
    size, channels = first.size[1], (1 if first.mode in ("L", "1", "I;16") else 3)

    # 1. the data owner's teacher
    def make_teacher():
        model = build_classifier(args.teacher_model_type, image_size=size, num_channels=channels, class_names=names,
                                 patch_size=args.teacher_patch_size, hidden_size=args.teacher_hidden_size,
                                 num_hidden_layers=args.teacher_layers, num_attention_heads=args.teacher_heads,
                                 mlp_ratio=args.teacher_mlp_ratio, seed=args.seed)
        return train_teacher(model, train, os.path.join(out, "teacher"), epochs=args.teacher_epochs,
                             learning_rate=args.teacher_learning_rate, batch_size=args.teacher_batch_size,
                             seed=args.seed, use_cpu=args.use_cpu, image_column=args.image_column,
                             label_column=args.label_column)

    teacher = stage("teacher", args.teacher_name_or_path or os.path.join(out, "teacher"),
                    lambda p: load_classifier(p, "teacher"), make_teacher, everyone=True).eval()

    # 2. class attention probes: one vector per class, all the generator's guidance knows of real images
    def make_probes():
        subset = train.shuffle(seed=args.seed).select(range(min(args.probe_images, len(train)))) \
            if args.probe_images else train
        if args.label_column != "label":
            subset = subset.rename_column(args.label_column, "label")
        probes = compute_class_attention_probes(teacher, subset, image_transform_for(teacher, args.image_column),
                                                layer=args.probe_layer, batch_size=256)
        probes.save(out)
        return probes

    probes = stage("class attention probes", os.path.join(out, CLASS_PROBES_FILE),
                   lambda p: ClassAttentionProbes.load(p, teacher), make_probes)

    # 3. attention-guided conditional GAN, packaged as a pipeline
    gan_dir = os.path.join(out, "gan")

    def make_pipeline():
        steps = args.gan_steps if args.gan_steps > 0 else round(
            args.gan_epochs * (len(train) // (args.gan_batch_size * state.num_processes)))
        config = GANConfig(gan_dir, lambda_attn=args.lambda_attn, lambda_diversity=args.lambda_diversity, max_steps=steps, batch_size=args.gan_batch_size,
                           learning_rate=args.gan_learning_rate, seed=args.seed, use_cpu=args.use_cpu,
                           logging_steps=50, eval_steps=max(1, steps // 5), save_steps=max(1, steps // 5),
                           save_total_limit=1)
        return train_generator(teacher, train, config, class_probes=probes if args.lambda_attn > 0 else None,
                               generator_channels=tuple(args.generator_channels),
                               discriminator_channels=tuple(args.discriminator_channels),
                               image_column=args.image_column, label_column=args.label_column)

    pipe = stage("guided cGAN", os.path.join(gan_dir, "pipeline"), SyntheticImagePipeline.from_pretrained,
                 make_pipeline, everyone=True)

    # 4. the synthetic dataset, with the teacher's logits cached for the distiller
    synthetic_dir = os.path.join(out, "synthetic")

    def make_synthetic():
        pipe.set_progress_bar_config(desc="Writing synthetic images")
        staged = os.path.join(out, ".synthetic.staged")
        shutil.rmtree(staged, ignore_errors=True)
        dataset = pipe.write_dataset(args.num_synthetic, staged, seed=args.seed, teacher_logits=True,
                                     quality=read_sidecar(os.path.join(gan_dir, "pipeline")).get("quality"))
        fid = teacher_feature_fid(teacher, pipe, test, dataset, args.image_column, args.fid_images)
        info = write_sidecar(staged, quality={**read_sidecar(staged)["quality"], **fid})
        dataset_card(info).save(os.path.join(staged, "README.md"))
        os.replace(staged, synthetic_dir)
        return load_from_disk(synthetic_dir)

    synthetic = stage("synthetic dataset", synthetic_dir, load_from_disk, make_synthetic)

    # 5. the student: it sees synthetic images only
    student_dir = os.path.join(out, "student")

    def make_student():
        total_steps = args.student_epochs * -(-len(synthetic) // (args.student_batch_size * state.num_processes))
        student = build_classifier(args.student_model_type, image_size=size, num_channels=channels, class_names=names,
                                   patch_size=args.student_patch_size, hidden_size=args.student_hidden_size,
                                   num_hidden_layers=args.student_layers, num_attention_heads=args.student_heads,
                                   mlp_ratio=args.student_mlp_ratio, seed=args.seed + 1)
        config = DistillationConfig(
            student_dir, num_train_epochs=args.student_epochs, learning_rate=args.student_learning_rate,
            per_device_train_batch_size=args.student_batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
            temperature=args.temperature, lambda_kd=args.lambda_kd, lambda_ce=args.lambda_ce,
            lambda_patch=args.lambda_patch, label_source=args.label_source, seed=args.seed, use_cpu=args.use_cpu,
            report_to="none", save_strategy="no", logging_steps=max(1, min(50, round(total_steps / 20))),
        )
        distill_student(student, teacher, synthetic, config, mode=pipe.config.mode,
                        train_description=f"synthetic, written by the pipeline in {gan_dir}/pipeline")

    stage("data-free student", student_dir, lambda p: None, make_student, everyone=True)

    # 6. evaluation of both on the real held-out split, on the main process
    results = stage("evaluation", None, lambda p: {}, lambda: evaluate_student(
        student_dir, teacher, test, dataset_name=args.dataset_name, split=args.test_split,
        image_column=args.image_column, label_column=args.label_column))
    if not state.is_main_process:
        return results
    timings = json.load(open(stage.timings_path))
    results = {
        "mode": pipe.config.mode,
        **results,
        "student_over_teacher": results["student_accuracy"] / results["teacher_accuracy"],
        "synthetic_images": len(synthetic),
        "synthetic_quality": read_sidecar(synthetic_dir).get("quality", {}),
        "seconds": timings | {"total": round(sum(timings.values()), 1)},
        "processes": state.num_processes,
        "command": command_line(),
        "args": asdict(args),
    }
    _copy_figures(out)
    tmp = os.path.join(out, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(out, "results.json"))
    print(summary_table(results), flush=True)
    return results


def teacher_feature_fid(teacher: PreTrainedModel, pipe: SyntheticImagePipeline, real: Dataset, synthetic: Dataset,
                        image_column: str = "image", num_images: int = 10_000) -> dict[str, float]:
    """Fréchet distance between real and synthetic images in the teacher's CLS features (needs nothing extra).

    Comparable only between runs with the same teacher; the standard Inception FID is in ``hf_dfkd.metrics``.
    """
    extractor = TeacherFeatures(teacher, pipe.config.teacher_image_mean, pipe.config.teacher_image_std,
                                device=next(teacher.parameters()).device)
    channels = teacher.config.num_channels
    n_real, n_fake = min(num_images, len(real)), min(num_images, len(synthetic))
    real_stats = compute_statistics(extractor, image_batches(real, 256, image_column, n_real, channels),
                                    desc="Teacher features (real)")
    fake_stats = compute_statistics(extractor, image_batches(synthetic, 256, "image", n_fake, channels),
                                    desc="Teacher features (synthetic)")
    key = f"teacher-feature FID vs the real test split ({n_fake} vs {n_real} images)"
    return {key: round(frechet_distance(real_stats, fake_stats), 3)}


class Stages:
    """Runs the steps of a resumable chain: ``stage(name, path, load, make)`` loads the artifact at ``path`` when it
    exists, else makes it (on every process, or on the main one and then loads it on the others), and records the
    seconds each artifact took to make in ``timings_path`` (kept across resumed runs)."""

    def __init__(self, state: PartialState, timings_path: str):
        self.state, self.timings_path = state, timings_path

    def __call__(self, name: str, path: str | None, load, make, everyone: bool = False):
        state = self.state
        start = time.perf_counter()
        made = path is None or not os.path.exists(path)
        if not made:
            result = load(path)
        elif everyone or state.is_main_process:
            result = make()
        state.wait_for_everyone()
        if not (everyone or state.is_main_process):
            result = load(path)
        if made and state.is_main_process:
            seconds = round(time.perf_counter() - start, 1)
            timings = json.load(open(self.timings_path)) if os.path.isfile(self.timings_path) else {}
            with open(self.timings_path, "w") as f:
                json.dump({**timings, name: seconds}, f, indent=1)
            print(f"[hf_dfkd] {name}: {seconds} s", flush=True)
        return result


def _field_default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _claim_output_dir(args, volatile: tuple[str, ...] = ("overwrite",)) -> None:
    """Refuse to mix two runs' artifacts: an existing output_dir must hold a run with the same arguments
    (except the ``volatile`` ones, which do not change any artifact)."""
    path = os.path.join(args.output_dir, "chain_args.json")
    current = {k: v for k, v in asdict(args).items() if k not in volatile}
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        previous = json.load(open(path)) if os.path.isfile(path) else None
        if previous is not None:  # an argument added since that run took its default there
            defaults = {f.name: _field_default(f) for f in fields(args)}
            previous = {**{k: defaults[k] for k in current if k not in previous}, **previous}
        if previous != current:
            if not args.overwrite:
                what = "another run's artifacts" if previous is None else "a run with other arguments (" + ", ".join(
                    f"{k}: {previous.get(k)!r} -> {v!r}" for k, v in current.items() if previous.get(k) != v) + ")"
                raise FileExistsError(f"{args.output_dir} holds {what}: pass --overwrite true to start over, or "
                                      "choose another --output_dir")
            shutil.rmtree(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(current, f, indent=2)


def _copy_figures(out: str) -> None:
    samples = sorted(p for p in os.listdir(os.path.join(out, "gan", "samples")) if p.endswith(".png")) \
        if os.path.isdir(os.path.join(out, "gan", "samples")) else []
    for src, dst in ((os.path.join(out, "gan", "samples", samples[-1]) if samples else None, "samples.png"),
                     (os.path.join(out, "gan", "gan_curves.png"), "gan_curves.png"),
                     (os.path.join(out, "student", "distillation_curves.png"), "distillation_curves.png")):
        if src and os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out, dst))


def summary_table(r: dict) -> str:
    """A Markdown table of teacher vs student on the real split (from ``evaluate_student``'s results)."""
    mb = 2**20
    notes = [f"student/teacher accuracy {r['student_accuracy'] / r['teacher_accuracy']:.3f}",
             f"agreement {r['agreement']:.4f}", f"compression {r['compression_ratio']:.1f}x"]
    if "synthetic_images" in r:
        notes.append(f"{r['synthetic_images']} synthetic images")
    if "seconds" in r:
        notes.append(f"total {r['seconds']['total']} s")
    return "\n".join([
        "",
        f"| model | parameters | size | latency/image ({r['device']}) | accuracy ({r['dataset_name']}, {r['split']}) |",
        "|---|---|---|---|---|",
        f"| teacher | {r['teacher_parameters']:,} | {r['teacher_size_bytes'] / mb:.2f} MiB | "
        f"{r['teacher_latency_ms']:.2f} ms | {r['teacher_accuracy']:.4f} |",
        f"| student (mode {r.get('mode', '?')}) | {r['student_parameters']:,} | {r['student_size_bytes'] / mb:.2f} MiB | "
        f"{r['student_latency_ms']:.2f} ms | {r['student_accuracy']:.4f} |",
        "",
        "; ".join(notes),
    ])
