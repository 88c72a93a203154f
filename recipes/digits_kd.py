#!/usr/bin/env python
"""Knowledge distillation on real images (not data-free): ViT teacher → DeiT student on scikit-learn's digits.

    python recipes/digits_kd.py --output_dir outputs/digits_kd
    accelerate launch recipes/digits_kd.py --output_dir outputs/digits_kd
    python recipes/digits_kd.py --config args.yaml          # arguments from YAML or JSON, the command line wins

The reference point for the data-free chain (`hf-dfkd demo`): the same teacher and student, but the student learns
from the 1,437 real training digits instead of synthetic ones. Trains the teacher here (or loads one with
`--teacher_name_or_path`, a Hub id or a folder), distils with KD + CE + patch attention-probe losses (the teacher's
outputs cached once), evaluates both on the 360 held-out digits, and writes the student (with its model card) and
`results.json`. Every `DistillationConfig` argument can be set (`--lambda_patch 0 --temperature 2`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

from accelerate import PartialState

from hf_dfkd import (
    DistillationConfig,
    build_classifier,
    distill_student,
    evaluate_student,
    load_classifier,
    load_digits_dataset,
    train_teacher,
)
from hf_dfkd.chain import summary_table
from hf_dfkd.cli import parse_arguments


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


DEFAULTS = {"output_dir": "outputs/digits_kd", "num_train_epochs": 20, "learning_rate": 4e-3,
            "per_device_train_batch_size": 64, "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
            "save_strategy": "no", "logging_steps": 20, "report_to": "none", "seed": 42}


def main(argv: list[str] | None = None) -> dict:
    recipe, args = parse_arguments((RecipeArguments, DistillationConfig), sys.argv[1:] if argv is None else argv,
                                   defaults=DEFAULTS, prog="digits_kd.py", description=__doc__.split("\n")[0])
    digits = load_digits_dataset(seed=args.seed)
    names = digits["train"].features["label"].names
    output_dir, started = args.output_dir, time.perf_counter()
    if recipe.teacher_name_or_path:
        teacher = load_classifier(recipe.teacher_name_or_path, "teacher")
    else:
        teacher = build_classifier("vit", image_size=8, num_channels=1, class_names=names, patch_size=2,
                                   hidden_size=recipe.teacher_hidden_size, num_hidden_layers=recipe.teacher_layers,
                                   num_attention_heads=4, seed=args.seed)
        teacher = train_teacher(teacher, digits["train"], os.path.join(output_dir, "teacher"),
                                epochs=recipe.teacher_epochs, learning_rate=1e-3, batch_size=64, seed=args.seed,
                                use_cpu=args.use_cpu)
    teacher_seconds = time.perf_counter() - started

    student = build_classifier("deit", image_size=8, num_channels=1, class_names=names, patch_size=2,
                               hidden_size=recipe.student_hidden_size, num_hidden_layers=recipe.student_layers,
                               num_attention_heads=recipe.student_heads, seed=args.seed + 1)
    args.output_dir = os.path.join(output_dir, "student")
    started = time.perf_counter()
    trainer = distill_student(student, teacher, digits["train"], args, mode="real-data",
                              train_description="the real scikit-learn digits training split")
    distill_seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return {}
    results = evaluate_student(args.output_dir, teacher, digits["test"], dataset_name="sklearn:digits", split="test")
    results.update(mode="real-data", teacher_train_seconds=round(teacher_seconds, 1),
                   distill_seconds=round(distill_seconds, 1), recipe=asdict(recipe))
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(summary_table(results))
    print(f"teacher {teacher_seconds:.1f} s, distillation {distill_seconds:.1f} s; student saved to {args.output_dir}")
    return results


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # a clean exit under accelerate launch
