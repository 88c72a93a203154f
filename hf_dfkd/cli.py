"""``hf-dfkd``: the data-free distillation chain from the command line, one subcommand per step.

    hf-dfkd demo                                   # the whole chain on scikit-learn's digits (CPU, minutes)
    hf-dfkd chain --dataset_name ylecun/mnist --output_dir run    # the whole chain on any labelled image dataset
    hf-dfkd probes --teacher T --dataset_name D --output_dir run
    hf-dfkd train-generator --teacher T --dataset_name D --probes run --output_dir run/gan
    hf-dfkd synthesize --pipeline run/gan/pipeline --num_images 10000 --output_dir run/synthetic
    hf-dfkd distill --teacher T --dataset_name run/synthetic --output_dir run/student
    hf-dfkd evaluate --student run/student --teacher T --dataset_name D --split test
    hf-dfkd push --student run/student --student_repo_id me/student ...
    hf-dfkd detection                              # the DETR chain on the embedded digits-detection set (CPU)
    hf-dfkd detection --dataset_name ../drone-detection --output_dir run   # ... on any Hub detection dataset

Each step reads and writes standard artifacts (a model folder, a probes file, a pipeline folder, a dataset folder),
so steps can run on different machines. Arguments are dataclasses parsed by ``HfArgumentParser``; every
subcommand also takes ``--config FILE.yaml|.json`` whose values become defaults that the command line overrides.
Bad input ends with a one-line error naming the problem and exit status 2, before any long work.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml
from accelerate import PartialState
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from transformers import HfArgumentParser

from .chain import (
    ChainArguments,
    distill_student,
    evaluate_student,
    image_transform_for,
    run_chain,
    summary_table,
    train_generator,
)
from .class_probes import ClassAttentionProbes, compute_class_attention_probes
from .config import DistillationConfig
from .demo import DEMO_DEFAULTS
from .detection.chain import DetectionChainArguments
from .gan_trainer import GANConfig
from .hub import push_pipeline, push_student, push_synthetic_dataset, read_sidecar
from .io import check_image_dataset, load_classifier, load_image_dataset
from .models import build_classifier
from .pipeline import SyntheticImagePipeline

__all__ = ["main", "parse_arguments"]


@dataclass
class DataArguments:
    """A labelled image dataset: Hub id, local folder (Hub layout or ``save_to_disk``), or ``sklearn:digits``."""

    dataset_name: str = field(metadata={"help": "Hub id, local folder, or 'sklearn:digits' (embedded)."})
    split: str = field(default="train", metadata={"help": "Split to read."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class labels."})
    max_images: int | None = field(default=None, metadata={"help": "Use only this many images (shuffled)."})
    dataset_seed: int = field(default=0, metadata={"help": "Seed of the shuffle (and of the digits split)."})

    def load(self, labels: bool = True):
        """The split, checked for the image column (and the label column when ``labels``) before any work."""
        dataset = load_image_dataset(self.dataset_name, self.split, seed=self.dataset_seed)
        check_image_dataset(dataset, self.image_column, self.label_column if labels else None,
                            f"split {self.split!r} of {self.dataset_name}")
        if self.max_images and self.max_images < len(dataset):
            dataset = dataset.shuffle(seed=self.dataset_seed).select(range(self.max_images))
        return dataset


@dataclass
class ProbesArguments:
    teacher: str = field(metadata={"help": "The teacher: Hub id or model folder (a ViT/DeiT classifier)."})
    output_dir: str = field(metadata={"help": "Folder (or .safetensors path) for the class attention probes."})
    layer: int = field(default=-1, metadata={"help": "Teacher block of the CLS attention probe (-1: last)."})
    head_reduction: Literal["mean", "max"] = field(default="mean", metadata={"help": "How heads are combined."})
    only_correct: bool = field(default=True, metadata={"help": "Average only images the teacher gets right."})
    batch_size: int = field(default=256, metadata={"help": "Images per teacher forward pass."})


@dataclass
class GeneratorArguments:
    teacher: str = field(metadata={"help": "The teacher: Hub id or model folder."})
    probes: str | None = field(default=None, metadata={
        "help": "Class attention probes (file or folder); required unless --lambda_attn 0."})
    generator_channels: list[int] = field(default_factory=lambda: [512, 256, 128], metadata={
        "help": "Hidden widths of the generator (the paper: 512 256 128)."})
    discriminator_channels: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={
        "help": "Hidden widths of the discriminator (the paper: 64 128 256)."})
    latent_dim: int = field(default=100, metadata={"help": "Size of the generator's latent vector."})


@dataclass
class SynthesizeArguments:
    pipeline: str = field(metadata={"help": "A SyntheticImagePipeline folder (from train-generator) or Hub id."})
    output_dir: str = field(metadata={"help": "Folder of the synthetic dataset (datasets save_to_disk layout)."})
    num_images: int = field(default=10_000, metadata={"help": "Images, balanced over classes (rest spread)."})
    seed: int = field(default=0, metadata={"help": "Same seed, same dataset, byte for byte."})
    batch_size: int = field(default=256, metadata={"help": "Images per generator forward pass."})
    teacher_logits: bool = field(default=True, metadata={"help": "Store the teacher's logits (distillation cache)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace output_dir if it exists."})


@dataclass
class StudentArguments:
    teacher: str = field(metadata={"help": "The teacher: Hub id or model folder."})
    student_name_or_path: str | None = field(default=None, metadata={
        "help": "Start from this student (Hub id or folder); default: build one from the sizes below."})
    student_model_type: Literal["vit", "deit"] = field(default="deit", metadata={"help": "Student family."})
    student_patch_size: int | None = field(default=None, metadata={"help": "Default: the teacher's."})
    student_hidden_size: int = field(default=128, metadata={"help": "Student width."})
    student_layers: int = field(default=4, metadata={"help": "Student blocks."})
    student_heads: int = field(default=2, metadata={"help": "Student attention heads."})
    student_mlp_ratio: float = field(default=2.0, metadata={"help": "MLP width / hidden width."})


@dataclass
class EvaluateArguments:
    student: str = field(metadata={"help": "The student folder (from distill); its card and sidecar are updated."})
    teacher: str = field(metadata={"help": "The teacher: Hub id or model folder."})


@dataclass
class PushArguments:
    student: str | None = field(default=None, metadata={"help": "Student folder (evaluated) to push."})
    student_repo_id: str | None = field(default=None, metadata={"help": "Hub repo of the student."})
    dataset: str | None = field(default=None, metadata={"help": "Synthetic dataset folder to push."})
    dataset_repo_id: str | None = field(default=None, metadata={"help": "Hub dataset repo."})
    pipeline: str | None = field(default=None, metadata={"help": "Generator pipeline folder to push."})
    pipeline_repo_id: str | None = field(default=None, metadata={"help": "Hub repo of the pipeline."})
    private: bool = field(default=False, metadata={"help": "Create private repositories."})


# ---- the subcommands ------------------------------------------------------------------------------------------------


def _probes(probes: ProbesArguments, data: DataArguments) -> None:
    teacher = load_classifier(probes.teacher, "teacher")
    dataset = data.load()
    if data.label_column != "label":
        dataset = dataset.rename_column(data.label_column, "label")
    result = compute_class_attention_probes(teacher, dataset, image_transform_for(teacher, data.image_column),
                                            layer=probes.layer, head_reduction=probes.head_reduction,
                                            only_correct=probes.only_correct, batch_size=probes.batch_size)
    path = result.save(probes.output_dir)
    print(f"class attention probes {tuple(result.probes.shape)} (layer {result.layer}, {result.head_reduction} over "
          f"heads, {sum(result.counts)} images) -> {path}")


def _train_generator(generator: GeneratorArguments, data: DataArguments, gan: GANConfig) -> None:
    if gan.lambda_attn > 0 and not generator.probes:
        raise ValueError("--lambda_attn > 0 needs --probes (run `hf-dfkd probes` first), or pass --lambda_attn 0 "
                         "for the vanilla cGAN")
    teacher = load_classifier(generator.teacher, "teacher")
    probes = ClassAttentionProbes.load(generator.probes, teacher) if gan.lambda_attn > 0 else None
    pipe = train_generator(teacher, data.load(), gan, class_probes=probes,
                           generator_channels=tuple(generator.generator_channels),
                           discriminator_channels=tuple(generator.discriminator_channels),
                           latent_dim=generator.latent_dim, image_column=data.image_column,
                           label_column=data.label_column)
    print(f"generator pipeline ({pipe.num_classes} classes) -> {os.path.join(gan.output_dir, 'pipeline')}")


def _synthesize(args: SynthesizeArguments) -> None:
    if not os.path.isfile(os.path.join(args.pipeline, "model_index.json")) and os.path.exists(args.pipeline):
        raise FileNotFoundError(f"{args.pipeline} is not a pipeline folder (no model_index.json): pass the "
                                "`pipeline` folder written by `hf-dfkd train-generator`")
    if os.path.exists(args.output_dir) and not args.overwrite:
        raise FileExistsError(f"{args.output_dir} exists: pass --overwrite true or another --output_dir")
    pipe = SyntheticImagePipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(desc="Writing synthetic images")
    quality = read_sidecar(args.pipeline).get("quality")
    dataset = pipe.write_dataset(args.num_images, args.output_dir, seed=args.seed, batch_size=args.batch_size,
                                 teacher_logits=args.teacher_logits, quality=quality, overwrite=args.overwrite)
    print(f"{len(dataset)} synthetic images -> {args.output_dir}")


def _distill(student_args: StudentArguments, data: DataArguments, config: DistillationConfig) -> None:
    teacher = load_classifier(student_args.teacher, "teacher")
    dataset = data.load(labels=config.label_source == "dataset")
    if student_args.student_name_or_path:
        student = load_classifier(student_args.student_name_or_path, "student")
    else:
        t = teacher.config
        names = [t.id2label[i] for i in range(t.num_labels)]
        student = build_classifier(student_args.student_model_type, image_size=t.image_size,
                                   num_channels=t.num_channels, class_names=names,
                                   patch_size=student_args.student_patch_size or t.patch_size,
                                   hidden_size=student_args.student_hidden_size,
                                   num_hidden_layers=student_args.student_layers,
                                   num_attention_heads=student_args.student_heads,
                                   mlp_ratio=student_args.student_mlp_ratio, seed=config.seed)
    info = read_sidecar(data.dataset_name) if os.path.isdir(data.dataset_name) else {}
    distill_student(student, teacher, dataset, config, image_column=data.image_column, label_column=data.label_column,
                    mode=info.get("mode", "real-data"), train_description=f"from {data.dataset_name}")
    print(f"student ({sum(p.numel() for p in student.parameters()):,} parameters) -> {config.output_dir}")


def _evaluate(args: EvaluateArguments, data: DataArguments) -> None:
    results = evaluate_student(args.student, load_classifier(args.teacher, "teacher"), data.load(),
                               dataset_name=data.dataset_name, split=data.split, image_column=data.image_column,
                               label_column=data.label_column)
    mode = read_sidecar(args.student).get("provenance", {}).get("mode", "real-data")
    print(summary_table({**results, "mode": mode}))
    print(f"results and model card -> {args.student}")


def _push(args: PushArguments) -> None:
    jobs = [(args.student, args.student_repo_id, push_student, "--student"),
            (args.dataset, args.dataset_repo_id, push_synthetic_dataset, "--dataset"),
            (args.pipeline, args.pipeline_repo_id, push_pipeline, "--pipeline")]
    if not any(folder for folder, *_ in jobs):
        raise ValueError("nothing to push: pass --student, --dataset and/or --pipeline with their --*_repo_id")
    for folder, repo_id, _, flag in jobs:
        if bool(folder) != bool(repo_id):
            raise ValueError(f"{flag} and {flag}_repo_id go together: pass both or neither")
        if folder and not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag} {folder} does not exist")
    for folder, repo_id, push, _ in jobs:
        if folder:
            files = push(folder, repo_id, private=args.private)
            print(f"pushed {folder} -> {repo_id}: {', '.join(files)}")


def _chain(args: ChainArguments) -> None:
    run_chain(args)


def _detection(args) -> None:
    from .detection import run_detection_chain

    run_detection_chain(args)


# name -> (help, argument dataclasses, function, defaults)
COMMANDS: dict[str, tuple[str, tuple, Callable, dict]] = {
    "demo": ("The whole chain on scikit-learn's digits, on the CPU (README's first command).",
             (ChainArguments,), _chain, DEMO_DEFAULTS),
    "chain": ("The whole chain on a labelled image dataset: teacher, probes, guided cGAN, synthetic set, student, "
              "evaluation.", (ChainArguments,), _chain, {}),
    "detection": ("The data-free DETR chain: teacher, DETR-guided cGAN, synthetic detection set, students in both "
                  "target modes, mAP on the real split (default: the embedded digits-detection set, CPU).",
                  (DetectionChainArguments,), _detection, {"output_dir": "hf_dfkd_detection_demo"}),
    "probes": ("Class attention probes of a teacher on real images (safetensors).",
               (ProbesArguments, DataArguments), _probes, {}),
    "train-generator": ("Train the attention-guided conditional GAN; writes a generator pipeline.",
                        (GeneratorArguments, DataArguments, GANConfig), _train_generator, {}),
    "synthesize": ("Write a synthetic dataset (with a dataset card) from a generator pipeline.",
                   (SynthesizeArguments,), _synthesize, {}),
    "distill": ("Distil the teacher into a student on a (synthetic) dataset.",
                (StudentArguments, DataArguments, DistillationConfig), _distill,
                {"report_to": "none", "save_strategy": "no", "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
                 "label_source": "teacher", "lambda_patch": 0.0}),
    "evaluate": ("Evaluate a student against its teacher on a real split; writes its model card.",
                 (EvaluateArguments, DataArguments), _evaluate, {"split": "test"}),
    "push": ("Push the student, the synthetic dataset and/or the generator pipeline to the Hub, with cards.",
             (PushArguments,), _push, {}),
}


def _read_config(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path} does not exist")
    with open(path) as f:
        data = yaml.safe_load(f) if path.endswith((".yaml", ".yml")) else json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of argument names to values")
    return data


def _pop_option(argv: list[str], option: str) -> tuple[str | None, list[str]]:
    if option not in argv:
        return None, argv
    i = argv.index(option)
    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise ValueError(f"{option} needs a value")
    return argv[i + 1], argv[:i] + argv[i + 2:]


def parse_arguments(types: tuple, argv: Sequence[str], *, defaults: dict | None = None,
                    presets: dict[str, dict] | None = None, default_preset: str | None = None,
                    prog: str | None = None, description: str | None = None) -> tuple:
    """Parse ``argv`` into the dataclasses ``types`` with ``HfArgumentParser``, with layered defaults.

    From weakest to strongest: the dataclasses' defaults, ``defaults``, the chosen ``--preset NAME`` (one of
    ``presets``), a ``--config FILE`` (YAML or JSON), and the command line. Unknown keys in a config file are an
    error that names them.
    """
    argv = list(argv)
    parser = HfArgumentParser(types, prog=prog, description=description)
    parser.add_argument("--config", default=None, help="YAML or JSON file of arguments (the command line wins).")
    config_path, argv = _pop_option(argv, "--config")
    values = dict(defaults or {})
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=default_preset,
                            help=f"Settings for a machine (default: {default_preset}).")
        preset, argv = _pop_option(argv, "--preset")
        preset = preset or default_preset
        if preset not in presets:
            raise ValueError(f"unknown --preset {preset!r}; the presets are {sorted(presets)}")
        values.update(presets[preset])
    config = _read_config(config_path) if config_path else {}
    fields = {f for t in types for f in t.__dataclass_fields__}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"unknown arguments {unknown} in --config {config_path}; -h lists them")
    values.update(config)
    parser.set_defaults(**values)
    for action in parser._actions:
        if action.dest in values:
            action.required = False  # given by a preset or the config file
    # the extra namespace holds --config/--preset, already read above
    return tuple(parser.parse_args_into_dataclasses(argv)[: len(types)])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hf-dfkd`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [__doc__.strip().split("\n")[0], "", "commands:"]
        lines += [f"  {name:<16} {help_text}" for name, (help_text, *_) in COMMANDS.items()]
        lines += ["", "`hf-dfkd COMMAND -h` lists a command's arguments."]
        print("\n".join(lines), file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nhf-dfkd: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    try:
        help_text, types, run, defaults = COMMANDS[name]
        run(*parse_arguments(types, rest, defaults=defaults, prog=f"hf-dfkd {name}", description=help_text))
        # under accelerate launch an undestroyed gloo/nccl group can abort the process at exit
        PartialState().destroy_process_group()
    except (ValueError, FileNotFoundError, FileExistsError, OfflineModeIsEnabled, HfHubHTTPError) as err:
        print(f"hf-dfkd {name}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
