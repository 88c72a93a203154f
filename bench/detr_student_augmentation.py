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
import time

from datasets import load_from_disk

from hf_dfkd.detection import (
    DetectionChainArguments,
    count_parameters,
    detection_class_names,
    distill_detector,
    evaluate_detectors,
    load_detection_dataset,
    load_detector,
)

from _recipes import recipe_presets  # bench/ helper

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
size = (chain.image_size, chain.image_size)
for variant in args.variants:
    for mode in args.target_modes:
        folder = os.path.join(args.output_dir, f"{variant}-{mode}")
        config = chain.student_config(folder, mode, len(synthetic), disable_tqdm=True)
        start = time.perf_counter()
        trainer = distill_detector(chain.build_student(names), teacher, synthetic, config, image_size=size,
                                   augmentation=variant == "augmented")
        seconds = time.perf_counter() - start
        student = trainer.accelerator.unwrap_model(trainer.model).eval()
        row = evaluate_detectors({"s": student}, test, image_size=size, latency_repeats=0, disable_tqdm=True)["s"]
        print(f"{variant:9s} {mode:9s} ({count_parameters(student):,} parameters, {trainer.state.global_step} steps, "
              f"{seconds:.1f} s): test mAP@0.5 {row['map_50']:.6f}, mAP {row['map']:.6f}, "
              f"mAR@100 {row['mar_100']:.6f}", flush=True)
