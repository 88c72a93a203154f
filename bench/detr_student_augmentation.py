"""A/B of student-side augmentation on one synthetic detection set: the recipe's student distilled from the same
teacher on the same synthetic images, with and without ``distill_detector(augmentation=True)``, both target modes,
then mAP on the real test split.

    python bench/detr_student_augmentation.py --dataset ../shared/datasets/drone-detection \
        --teacher runs/detr_drone_teacher_more --synthetic runs/detr_drone_bn/synthetic --output_dir runs/detr_student_aug

Everything but ``augmentation`` is the preset's (epochs, batch size, learning rate, temperature, seed), as the
chain's student stage sets it; the synthetic set is loaded, not regenerated, so only augmentation differs.
"""

import argparse
import os

from datasets import load_from_disk

from hf_dfkd.detection import (
    DetectionChainArguments,
    count_parameters,
    detection_class_names,
    load_detection_dataset,
    load_detector,
)

from _recipes import distill_and_evaluate, recipe_presets  # bench/ helpers

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True)
parser.add_argument("--teacher", required=True)
parser.add_argument("--synthetic", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--preset", default="cpu")
parser.add_argument("--target_modes", nargs="+", default=["paired", "hungarian"])
parser.add_argument("--variants", nargs="+", default=["plain", "augmented"], choices=["plain", "augmented"])
args = parser.parse_args()

chain = DetectionChainArguments(**recipe_presets("detr_drone")[args.preset])
test = load_detection_dataset(args.dataset, "test", seed=chain.seed)
names = detection_class_names(test)
teacher = load_detector(args.teacher, "teacher").eval()
synthetic = load_from_disk(args.synthetic)
for variant in args.variants:
    for mode in args.target_modes:
        student, steps, seconds, row = distill_and_evaluate(
            chain, teacher, names, synthetic, test, os.path.join(args.output_dir, f"{variant}-{mode}"), mode,
            augmentation=variant == "augmented")
        print(f"{variant:9s} {mode:9s} ({count_parameters(student):,} parameters, {steps} steps, "
              f"{seconds:.1f} s): test mAP@0.5 {row['map_50']:.6f}, mAP {row['map']:.6f}, "
              f"mAR@100 {row['mar_100']:.6f}", flush=True)
