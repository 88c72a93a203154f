"""Does a detector find the objects, or only name the scene? mAP and localisation figures of one detector on real
test frames and on frames of its own training split.

    python bench/detector_localisation.py --dataset ../shared/datasets/drone-detection \
        --detector runs/detr_drone_cpu/teacher --image_size 128

On every test frame and on ``--frames`` train frames (shuffled with seed 0), for each true object, it reports: the best IoU of
any query's box with the object (median, and the share ≥ 0.5), the distance from the object's centre to the centre of
the top-scoring query's box (normalised by the frame's side), whether that query has the object's class, and the
spread of the query centres. A detector that names the scene from its background but does not localise shows a
high class agreement with a large centre distance.
"""

import argparse

import datasets
import numpy as np
import torch
from torchvision.ops import box_iou
from transformers.image_transforms import center_to_corners_format

from hf_dfkd.detection import (
    DetectionCollator,
    DetectionTransform,
    detection_processor,
    evaluate_detectors,
    load_detector,
)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", required=True)
parser.add_argument("--detector", required=True)
parser.add_argument("--image_size", type=int, default=128)
parser.add_argument("--frames", type=int, default=200)
parser.add_argument("--batch_size", type=int, default=40)
args = parser.parse_args()

data = datasets.load_dataset(args.dataset)
model = load_detector(args.detector).eval()
size = (args.image_size, args.image_size)
transform = DetectionTransform(detection_processor(size), size)
for split in ("test", "train"):
    frames = data[split] if split == "test" else data[split].shuffle(seed=0).select(range(args.frames))
    row = evaluate_detectors({"d": model}, frames, image_size=size, latency_repeats=0, disable_tqdm=True)["d"]
    best_iou, distance, same_class, spread = [], [], [], []
    items = frames.with_transform(transform)
    for start in range(0, len(frames), args.batch_size):
        batch = DetectionCollator()([items[i] for i in range(start, min(start + args.batch_size, len(frames)))])
        with torch.no_grad():
            out = model(pixel_values=batch["pixel_values"])
        scores, classes = out.logits.softmax(-1)[..., :-1].max(-1)  # (B, Q)
        for k, labels in enumerate(batch["labels"]):
            top = scores[k].argmax()
            spread.append(out.pred_boxes[k][:, :2].std(0).mean().item())
            for box, category in zip(labels["boxes"], labels["class_labels"]):
                ious = box_iou(center_to_corners_format(box[None]), center_to_corners_format(out.pred_boxes[k]))[0]
                best_iou.append(ious.max().item())
                distance.append((out.pred_boxes[k][top, :2] - box[:2]).norm().item())
                same_class.append(float(classes[k, top] == category))
    print(f"{split} ({len(frames)} frames, {len(best_iou)} objects, {row['parameters']:,} parameters): mAP@0.5 {row['map_50']:.4f}, "
          f"mAP {row['map']:.4f} | best IoU over queries: median {np.median(best_iou):.3f}, "
          f">= 0.5 for {np.mean(np.array(best_iou) >= 0.5):.3f} | top query: centre distance median "
          f"{np.median(distance):.3f}, class right {np.mean(same_class):.3f} | query centre spread "
          f"{np.median(spread):.3f}")
