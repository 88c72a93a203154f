#!/usr/bin/env python
"""Does the generator use its latent? The demo's chain with and without the mode-seeking (diversity) loss.

    python bench/digits_diversity.py --lambda_diversity 0 0.2

For each weight: the whole `hf-dfkd demo` chain (same seed, same teacher), then the within-class pixel standard
deviation of the 10,000 synthetic images (mean over classes and pixels, images in [-1, 1]) against the real training
digits', the teacher's accuracy on the synthetic images, and the data-free student's accuracy on the real test split.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from datasets import load_from_disk

from hf_dfkd import load_digits_dataset
from hf_dfkd.demo import run_demo


def within_class_std(images: np.ndarray, labels: np.ndarray) -> float:
    x = images.astype(np.float32) / 127.5 - 1
    return float(np.mean([x[labels == c].std(axis=0).mean() for c in np.unique(labels)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lambda_diversity", type=float, nargs="+", default=[0.0, 0.2])
    p.add_argument("--output_dir", default="bench/results/digits_diversity")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    real = load_digits_dataset(seed=args.seed)["train"].with_format("numpy")[:]
    rows = {"real train digits": {"within_class_std": within_class_std(real["image"], real["label"])}}
    for lam in args.lambda_diversity:
        out = os.path.join(args.output_dir, f"lambda_diversity_{lam:g}")
        results = run_demo(output_dir=out, lambda_diversity=lam, seed=args.seed, overwrite=True)
        synthetic = load_from_disk(os.path.join(out, "synthetic")).with_format("numpy")[:]
        rows[f"lambda_diversity={lam:g}"] = {
            "within_class_std": within_class_std(synthetic["image"], synthetic["label"]),
            "teacher_accuracy_on_synthetic": results["synthetic_quality"]["teacher accuracy on the images (vs their class)"],
            "teacher_accuracy": results["teacher_accuracy"],
            "student_accuracy": results["student_accuracy"],
            "gan_seconds": results["seconds"]["guided cGAN"],
        }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n| images | within-class pixel std | teacher acc. on them | student acc. (real test) | teacher acc. |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['within_class_std']:.3f} | {r.get('teacher_accuracy_on_synthetic', float('nan')):.4f} | "
              f"{r.get('student_accuracy', float('nan')):.4f} | {r.get('teacher_accuracy', float('nan')):.4f} |")


if __name__ == "__main__":
    main()
