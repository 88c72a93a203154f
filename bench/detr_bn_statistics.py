"""How close are image sets to the teacher's training data, as its batch norms see it? The batch-norm statistics
loss (``hf_dfkd.batchnorm_statistics_loss``) of a DETR teacher on batches of real frames and of synthetic sets.

    python bench/detr_bn_statistics.py --dataset ../shared/datasets/drone-detection \
        --teacher runs/detr_drone_teacher_more --synthetic runs/detr_drone_more/synthetic runs/detr_drone_bn/synthetic

For each image set: ``--batches`` batches of ``--batch_size`` images drawn without replacement (seed 0), resized to
``--image_size`` and normalised as the teacher's processor does; the median and range over batches are printed.
Lower is closer to the statistics the teacher stored while it trained.
"""

import argparse

import datasets
import numpy as np
import torch

from hf_dfkd import BatchNormStatistics
from hf_dfkd.detection import DetectionCollator, DetectionTransform, detection_processor, load_detector

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True)
parser.add_argument("--teacher", required=True)
parser.add_argument("--synthetic", nargs="*", default=[], help="Synthetic sets written by the chain (load_from_disk).")
parser.add_argument("--image_size", type=int, default=128)
parser.add_argument("--batch_size", type=int, default=32)
parser.add_argument("--batches", type=int, default=8)
args = parser.parse_args()

real = datasets.load_dataset(args.dataset)
sets = {f"real {split}": real[split] for split in ("train", "test")}
sets.update({path: datasets.load_from_disk(path) for path in args.synthetic})
teacher = load_detector(args.teacher).eval()
size = (args.image_size, args.image_size)
transform = DetectionTransform(detection_processor(size), size)
with BatchNormStatistics(teacher) as prior, torch.no_grad():
    print(f"teacher {args.teacher}: {len(prior.layers)} batch-norm layers; batches of {args.batch_size} at "
          f"{args.image_size}px")
    for name, data in sets.items():
        count = min(args.batches, len(data) // args.batch_size)
        items = data.shuffle(seed=0).select(range(count * args.batch_size)).with_transform(transform)
        losses = []
        for b in range(count):
            batch = DetectionCollator()([items[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)])
            teacher(pixel_values=batch["pixel_values"])
            losses.append(prior.loss().item())
        print(f"{name}: median {np.median(losses):.1f} (min {min(losses):.1f}, max {max(losses):.1f}) over "
              f"{count} batches")
