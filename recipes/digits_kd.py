#!/usr/bin/env python
"""Distil a ViT teacher into a DeiT student on scikit-learn's digits (the embedded default, real images).

    python recipes/digits_kd.py --output_dir outputs/digits_kd
    accelerate launch recipes/digits_kd.py --output_dir outputs/digits_kd
    python recipes/digits_kd.py --config recipes/digits_kd.json   # arguments from JSON (or .yaml)

Trains the teacher here (or loads one with --teacher_name_or_path, a Hub id or a folder), distils the student with
KD + CE + patch attention-probe losses, evaluates both on the held-out split, saves the student (loadable with
``AutoModelForImageClassification.from_pretrained``) and writes ``results.json``. This is knowledge distillation on
real images: the data-free chain (generator, synthetic dataset) builds on it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    default_data_collator,
)

from hf_dfkd import DistillationConfig, DistillationTrainer, ImageTransform, load_digits_dataset


@dataclass
class RecipeArguments:
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained teacher (Hub id or folder). Default: train one here."}
    )
    teacher_hidden_size: int = field(default=96, metadata={"help": "Width of the teacher trained here."})
    teacher_layers: int = field(default=4, metadata={"help": "Blocks of the teacher trained here."})
    teacher_epochs: int = field(default=30, metadata={"help": "Epochs of the teacher trained here."})
    student_hidden_size: int = field(default=32, metadata={"help": "Width of the DeiT student."})
    student_layers: int = field(default=3, metadata={"help": "Blocks of the DeiT student."})
    student_heads: int = field(default=2, metadata={"help": "Attention heads of the DeiT student."})
    use_teacher_cache: bool = field(
        default=True, metadata={"help": "Precompute the teacher's outputs once instead of every step."}
    )


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def parse_args() -> tuple[RecipeArguments, DistillationConfig]:
    parser = HfArgumentParser((RecipeArguments, DistillationConfig))
    if len(sys.argv) == 3 and sys.argv[1] == "--config":
        path = sys.argv[2]
        if path.endswith((".yaml", ".yml")):
            return parser.parse_yaml_file(path)
        return parser.parse_json_file(path)
    defaults = {"num_train_epochs": 20, "learning_rate": 4e-3, "per_device_train_batch_size": 64,
                "lr_scheduler_type": "cosine", "warmup_steps": 20, "eval_strategy": "epoch", "save_strategy": "no",
                "logging_steps": 20, "report_to": "none"}
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses()


def main() -> None:
    recipe, args = parse_args()
    digits = load_digits_dataset(seed=args.seed)
    names = digits["train"].features["label"].names
    label_maps = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    transform = ImageTransform(image_size=8, num_channels=1)
    train, test = digits["train"].with_transform(transform), digits["test"].with_transform(transform)
    started = time.perf_counter()

    if recipe.teacher_name_or_path:
        teacher = recipe.teacher_name_or_path
        teacher_seconds = 0.0
    else:
        torch.manual_seed(args.seed)
        teacher = ViTForImageClassification(ViTConfig(
            image_size=8, patch_size=2, num_channels=1, hidden_size=recipe.teacher_hidden_size,
            num_hidden_layers=recipe.teacher_layers, num_attention_heads=4,
            intermediate_size=2 * recipe.teacher_hidden_size, **label_maps, num_labels=len(names)))
        teacher_args = TrainingArguments(
            os.path.join(args.output_dir, "teacher"), num_train_epochs=recipe.teacher_epochs, learning_rate=1e-3,
            weight_decay=0.05, per_device_train_batch_size=64, lr_scheduler_type="cosine", warmup_steps=20,
            remove_unused_columns=False, save_strategy="no", report_to="none", logging_steps=50, seed=args.seed,
            use_cpu=args.use_cpu, disable_tqdm=args.disable_tqdm)
        Trainer(teacher, teacher_args, train_dataset=train, data_collator=default_data_collator).train()
        teacher.save_pretrained(os.path.join(args.output_dir, "teacher"))
        teacher_seconds = time.perf_counter() - started

    torch.manual_seed(args.seed + 1)
    student = DeiTForImageClassification(DeiTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=recipe.student_hidden_size,
        num_hidden_layers=recipe.student_layers, num_attention_heads=recipe.student_heads,
        intermediate_size=2 * recipe.student_hidden_size, num_labels=len(names), **label_maps))
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train,
                                  eval_dataset=test, compute_metrics=accuracy)
    if recipe.use_teacher_cache:
        cached = trainer.cache_teacher_outputs(digits["train"], transform)
        trainer.train_dataset = cached.with_transform(transform)
    distill_started = time.perf_counter()
    trainer.train()
    distill_seconds = time.perf_counter() - distill_started
    student_metrics = trainer.evaluate()
    trainer.save_model(os.path.join(args.output_dir, "student"))

    teacher_model = trainer.accelerator.unwrap_model(trainer.teacher)
    teacher_eval = Trainer(teacher_model, TrainingArguments(os.path.join(args.output_dir, "teacher_eval"), report_to="none",
                           remove_unused_columns=False, use_cpu=args.use_cpu, disable_tqdm=True),
                           eval_dataset=test, data_collator=default_data_collator, compute_metrics=accuracy)
    teacher_acc = teacher_eval.evaluate()["eval_accuracy"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    results = {
        "dataset": "scikit-learn digits (real images), stratified 80/20 split, seed %d" % args.seed,
        "mode": "real-data KD (not data-free)",
        "teacher_accuracy": teacher_acc,
        "student_accuracy": student_metrics["eval_accuracy"],
        "student_teacher_agreement": student_metrics["eval_agreement"],
        "teacher_parameters": count(teacher_model),
        "student_parameters": count(trainer.model),
        "teacher_train_seconds": round(teacher_seconds, 1),
        "distill_seconds": round(distill_seconds, 1),
        "device": str(args.device),
        "recipe": asdict(recipe),
    }
    if trainer.is_world_process_zero():
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        print("\n| model | parameters | accuracy (digits test) |\n|---|---|---|")
        print(f"| teacher ViT | {results['teacher_parameters']:,} | {teacher_acc:.4f} |")
        print(f"| student DeiT | {results['student_parameters']:,} | {results['student_accuracy']:.4f} |")
        print(f"agreement {results['student_teacher_agreement']:.4f}; distillation {distill_seconds:.1f}s; "
              f"student saved to {os.path.join(args.output_dir, 'student')}")


if __name__ == "__main__":
    main()
