"""Where the objects are: box positions and sizes of real and synthetic detection sets (annotations only).

For each set: annotations per image, how evenly the box centres spread over a 4×4 grid of the image (entropy of
the cell histogram over log 16: 1 = uniform, 0 = every centre in one cell), the share of centres in the fullest
cell, and the box side sqrt(w·h) as a fraction of the image side (median, 5th and 95th percentiles).

    python bench/detection_layouts.py --dataset ../shared/datasets/drone-detection runs/detr_drone_bn/synthetic
"""

import argparse

import datasets
import numpy as np

GRID = 4

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", help="a Hub-layout detection dataset: its train and test splits are listed too")
parser.add_argument("synthetic", nargs="*", help="synthetic sets written by the detection pipeline")
args = parser.parse_args()

sets = {}
if args.dataset:
    real = datasets.load_dataset(args.dataset)
    sets.update({f"real {split}": real[split] for split in ("train", "test") if split in real})
sets.update({path: datasets.load_from_disk(path) for path in args.synthetic})

print("| set | images | annotations / image | centre spread (4x4 entropy) | fullest cell | box side: median (5th-95th) |")
print("|---|---|---|---|---|---|")
for name, data in sets.items():
    columns = data.select_columns(["width", "height", "objects"])
    cells, sides = np.zeros(GRID * GRID), []
    for width, height, objects in zip(columns["width"], columns["height"], columns["objects"]):
        for x, y, w, h in objects["bbox"]:
            cx, cy = (x + w / 2) / width, (y + h / 2) / height
            cells[min(int(cy * GRID), GRID - 1) * GRID + min(int(cx * GRID), GRID - 1)] += 1
            sides.append(np.sqrt(w / width * h / height))
    p = cells / max(cells.sum(), 1)
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum() / np.log(GRID * GRID)
    lo, mid, hi = np.percentile(sides, [5, 50, 95]) if sides else (0, 0, 0)
    print(f"| {name} | {len(data)} | {len(sides) / len(data):.3f} | {entropy:.3f} | {p.max():.3f} | "
          f"{mid:.3f} ({lo:.3f}-{hi:.3f}) |")
