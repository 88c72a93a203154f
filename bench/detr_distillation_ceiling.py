"""Where data-free DETR distillation loses: the recipe's students distilled from the same teacher on the **real**
train frames (the teacher labels every image; the ground truth is never read) against the same students distilled
on a synthetic set, both target modes, then mAP@0.5 on the real test split.

    python bench/detr_distillation_ceiling.py --dataset ../shared/datasets/drone-detection \
        --teacher runs/detr_drone_teacher_more --images real runs/detr_drone_bn/synthetic --output_dir runs/detr_ceiling

Real frames are the best a synthetic set could do for this teacher and student: if the students distilled on them
fall short of the teacher too, the student (size, initialisation, step budget) limits the result before the
synthetic images do. ``--student_*`` options override the preset's student (a larger one still within 1/10 of the
teacher, more epochs); ``--student_steps`` fixes the optimiser steps so that sets of different sizes get the same
budget. Everything else (learning rate, temperature, threshold; the seed unless `--seed`) is the preset's.
"""

import argparse
import dataclasses
import os

from datasets import load_from_disk

from hf_dfkd.detection import (
    DetectionChainArguments,
    count_parameters,
    detection_class_names,
    evaluate_detectors,
    load_detection_dataset,
    load_detector,
)

from _recipes import distill_and_evaluate, recipe_presets  # bench/ helpers

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True, help="real detection dataset (train split distilled on, test split)")
parser.add_argument("--teacher", required=True)
parser.add_argument("--images", nargs="+", required=True,
                    help="'real' (the dataset's train split) and/or saved synthetic sets (load_from_disk folders)")
parser.add_argument("--output_dir", required=True)
parser.add_argument("--preset", default="cpu")
parser.add_argument("--target_modes", nargs="+", default=["paired", "hungarian"])
parser.add_argument("--student_steps", type=int, default=None,
                    help="optimiser steps per student (default: the preset's epochs over each set)")
parser.add_argument("--student_backbone_hidden_sizes", type=int, nargs=3, default=None)
parser.add_argument("--student_backbone_depths", type=int, nargs=3, default=None)
parser.add_argument("--student_d_model", type=int, default=None)
parser.add_argument("--student_layers", type=int, default=None)
parser.add_argument("--student_heads", type=int, default=None)
parser.add_argument("--student_learning_rate", type=float, default=None)
parser.add_argument("--seed", type=int, default=None,
                    help="seed of the students' initialisation and batch order (default: the preset's); the test split "
                         "is the same for every seed")
args = parser.parse_args()

overrides = {k: v for k, v in vars(args).items() if k.startswith("student_") and k != "student_steps" and v is not None}
chain = dataclasses.replace(DetectionChainArguments(**recipe_presets("detr_drone")[args.preset]), **overrides)
test = load_detection_dataset(args.dataset, "test", seed=chain.seed)
if args.seed is not None:
    chain = dataclasses.replace(chain, seed=args.seed)
names = detection_class_names(test)
teacher = load_detector(args.teacher, "teacher").eval()
size = (chain.image_size, chain.image_size)
teacher_map = evaluate_detectors({"t": teacher}, test, image_size=size, latency_repeats=0, disable_tqdm=True)["t"]
print(f"teacher ({count_parameters(teacher):,} parameters): test mAP@0.5 {teacher_map['map_50']:.6f}", flush=True)
for source in args.images:
    if source == "real":
        images = load_detection_dataset(args.dataset, "train", seed=chain.seed)
    else:
        images = load_from_disk(source)
    label = "real" if source == "real" else os.path.basename(os.path.dirname(os.path.abspath(source))) or source
    label += f"-seed{chain.seed}" if args.seed is not None else ""
    for mode in args.target_modes:
        student, steps, seconds, row = distill_and_evaluate(
            chain, teacher, names, images, test, os.path.join(args.output_dir, f"{label}-{mode}"), mode,
            config_overrides={"max_steps": args.student_steps} if args.student_steps else None,
            train_description=f"bench: {source}")
        print(f"{label} ({len(images)} images) {mode:9s} ({count_parameters(student):,} parameters, "
              f"{steps} steps, {seconds:.1f} s): test mAP@0.5 {row['map_50']:.6f} "
              f"({row['map_50'] / max(teacher_map['map_50'], 1e-12):.3f} of the teacher), mAP {row['map']:.6f}",
              flush=True)
