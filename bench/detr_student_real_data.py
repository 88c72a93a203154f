"""Real-data reference for a data-free detection student: the recipe's student architecture trained on the real
train frames (DETR's own loss, no teacher), then its mAP on the real test split. What a student of that size reaches
when data is not the limit.

    python bench/detr_student_real_data.py --dataset ../shared/datasets/drone-detection --output_dir runs/detr_drone_student_real --epochs 22

``--epochs 22`` over the 1,362 real frames at batch 16 is about the 1,875 optimiser steps each data-free student of
the ``cpu`` preset takes (15 epochs over 2,000 synthetic images).
"""

import argparse

from hf_dfkd.detection import (
    DetectionChainArguments,
    count_parameters,
    detection_class_names,
    evaluate_detectors,
    load_detection_dataset,
    train_detector,
)

from _recipes import recipe_presets  # bench/ helper

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--preset", default="cpu")
parser.add_argument("--epochs", type=float, default=22)
parser.add_argument("--augmentation", action="store_true")
args = parser.parse_args()

presets = recipe_presets("detr_drone")
chain = DetectionChainArguments(**presets[args.preset])
train = load_detection_dataset(args.dataset, "train", seed=chain.seed)
test = load_detection_dataset(args.dataset, "test", seed=chain.seed)
student = chain.build_student(detection_class_names(train))
size = (chain.image_size, chain.image_size)
student = train_detector(student, train, args.output_dir, image_size=size, epochs=args.epochs,
                         learning_rate=chain.student_learning_rate, batch_size=chain.student_batch_size,
                         seed=chain.seed, augmentation=args.augmentation)
row = evaluate_detectors({"s": student.eval()}, test, image_size=size, latency_repeats=0, disable_tqdm=True)["s"]
print(f"student ({count_parameters(student):,} parameters) trained on real frames, test: mAP@0.5 {row['map_50']:.4f}, "
      f"mAP {row['map']:.4f}, mAR@100 {row['mar_100']:.4f}")
