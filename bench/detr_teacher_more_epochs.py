"""Train a saved DETR teacher for more epochs (optionally with ``detection_augmentation``), then print its mAP on the
real test split and on frames of its training split: does longer, augmented training make it detect on new videos?

    python bench/detr_teacher_more_epochs.py --dataset ../shared/datasets/drone-detection \
        --teacher runs/detr_drone_cpu/teacher --output_dir runs/detr_drone_teacher_more --epochs 60 --augmentation

The output folder is a normal detector folder: pass it to the chain as ``--teacher_name_or_path``.
"""

import argparse

from hf_dfkd.detection import (
    evaluate_detectors,
    load_detection_dataset,
    load_detector,
    make_backbone_trainable,
    train_detector,
)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True)
parser.add_argument("--teacher", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--epochs", type=float, default=60)
parser.add_argument("--learning_rate", type=float, default=1e-4)
parser.add_argument("--batch_size", type=int, default=16)
parser.add_argument("--image_size", type=int, default=128)
parser.add_argument("--augmentation", action="store_true")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

train = load_detection_dataset(args.dataset, "train", seed=args.seed)
test = load_detection_dataset(args.dataset, "test", seed=args.seed)
size = (args.image_size, args.image_size)
# a reloaded DETR has frozen batch norm: make it trainable again, statistics kept
model = make_backbone_trainable(load_detector(args.teacher, "teacher"))
model = train_detector(model, train, args.output_dir, image_size=size, epochs=args.epochs,
                       learning_rate=args.learning_rate, batch_size=args.batch_size, seed=args.seed,
                       augmentation=args.augmentation)
model = load_detector(args.output_dir, "teacher")
frames = train.shuffle(seed=0).select(range(200))
for name, split in (("test", test), ("200 train frames", frames)):
    row = evaluate_detectors({"t": model}, split, image_size=size, latency_repeats=0, disable_tqdm=True)["t"]
    print(f"{name}: mAP@0.5 {row['map_50']:.4f}, mAP {row['map']:.4f}, mAR@100 {row['mar_100']:.4f}")
