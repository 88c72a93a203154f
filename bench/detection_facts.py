"""Facts the drone section of BENCHMARKS.md cites: objects per real frame, a teacher's mAP on its own training
frames, and the parameters of the recipe's presets.

    python bench/detection_facts.py --dataset ../shared/datasets/drone-detection --teacher runs/detr_drone_cpu/teacher
"""

import argparse

import datasets

from hf_dfkd.detection import DetectionChainArguments, count_parameters, evaluate_detectors, load_detector

from _recipes import recipe_presets  # bench/ helper

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True)
parser.add_argument("--teacher", required=True)
parser.add_argument("--image_size", type=int, default=128)
parser.add_argument("--train_frames", type=int, default=200)
args = parser.parse_args()

data = datasets.load_dataset(args.dataset)
for split in data:
    objects = sum(len(o["category"]) for o in data[split]["objects"])
    print(f"{split}: {len(data[split])} frames, {objects} objects, {objects / len(data[split]):.3f} per frame")
names = data["train"].features["objects"]["category"].feature.names
frames = data["train"].shuffle(seed=0).select(range(args.train_frames))
row = evaluate_detectors({"teacher": load_detector(args.teacher)}, frames, image_size=(args.image_size,) * 2,
                         latency_repeats=0, disable_tqdm=True)["teacher"]
print(f"teacher on {args.train_frames} of its training frames: mAP {row['map']:.4f}, mAP@0.5 {row['map_50']:.4f}")

presets = recipe_presets("detr_drone")
for preset in ("cpu", "paper"):
    chain = DetectionChainArguments(**presets[preset])
    teacher, student = count_parameters(chain.build_teacher(names)), count_parameters(chain.build_student(names))
    print(f"preset {preset}: teacher {teacher:,}, student {student:,}, ratio {teacher / student:.2f}")
