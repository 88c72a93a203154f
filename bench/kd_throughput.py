#!/usr/bin/env python
"""Training throughput of distillation, images per second of training steps, one run, same models and batch.

    python bench/kd_throughput.py                      # CPU (or the GPU when one is visible)
    python bench/kd_throughput.py --repeats 5 --steps 30 --batch_size 64

Configurations (each a Trainer run of `warmup + steps` optimizer steps; only the last `steps` are timed):
  (a) baseline: the transformers docs' `ImageDistilTrainer` (teacher forward every step, KD + CE), rewritten as a
      current Trainer subclass below;
  (b) DistillationTrainer, KD + CE;
  (c) DistillationTrainer, KD + CE + patch attention probe;
  (d) DistillationTrainer with the teacher-output cache, KD + CE;
  (d+) the same with the patch probe (probes cached too);
  (e) the limit: the student's own training step (plain Trainer, CE from the model, no teacher).
The configurations are interleaved within each repeat; the median over repeats is reported, with ratios to (a).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification

from hf_dfkd import DistillationConfig, DistillationTrainer, add_teacher_outputs


class ImageDistilTrainer(Trainer):
    """The transformers docs' image-distillation trainer, updated only as far as the current Trainer API needs."""

    def __init__(self, teacher_model=None, student_model=None, temperature=None, lambda_param=None, *args, **kwargs):
        super().__init__(model=student_model, *args, **kwargs)
        self.teacher = teacher_model
        self.student = student_model
        self.loss_function = nn.KLDivLoss(reduction="batchmean")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.teacher.to(device)
        self.teacher.eval()
        self.temperature = temperature
        self.lambda_param = lambda_param

    def compute_loss(self, student, inputs, return_outputs=False, num_items_in_batch=None):
        student_output = student(**inputs)
        with torch.no_grad():
            teacher_output = self.teacher(**inputs)
        soft_teacher = F.softmax(teacher_output.logits / self.temperature, dim=-1)
        soft_student = F.log_softmax(student_output.logits / self.temperature, dim=-1)
        distillation_loss = self.loss_function(soft_student, soft_teacher) * (self.temperature**2)
        student_target_loss = student_output.loss
        loss = (1.0 - self.lambda_param) * student_target_loss + self.lambda_param * distillation_loss
        return (loss, student_output) if return_outputs else loss


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (synchronising the GPU so that the time is the step's own)."""

    def __init__(self):
        self.durations: list[float] = []

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.durations.append(time.perf_counter() - self._start)


def vit(hidden: int, layers: int, heads: int, seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=4, num_channels=3, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=4 * hidden, num_labels=10))


def run(kind: str, data: dict[str, Dataset], opts, out_dir: str) -> float:
    teacher = vit(opts.teacher_hidden, opts.layers, opts.teacher_heads, seed=0)
    student = vit(opts.student_hidden, opts.layers, opts.student_heads, seed=1)
    timer = StepTimer()
    common = dict(output_dir=out_dir, max_steps=opts.warmup + opts.steps, per_device_train_batch_size=opts.batch_size,
                  report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0,
                  remove_unused_columns=False, dataloader_pin_memory=False)
    if kind == "a":
        trainer = ImageDistilTrainer(teacher_model=teacher, student_model=student, temperature=4.0, lambda_param=0.5,
                                     args=TrainingArguments(**common), train_dataset=data["plain"], callbacks=[timer])
    elif kind == "e":
        trainer = Trainer(student, TrainingArguments(**common), train_dataset=data["plain"], callbacks=[timer])
    else:
        patch = kind in ("c", "d+")
        dataset = {"b": "plain", "c": "plain", "d": "cache", "d+": "cache_probes"}[kind]
        args = DistillationConfig(**common, lambda_patch=1.0 if patch else 0.0)
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data[dataset],
                                      callbacks=[timer])
    trainer.train()
    timed = timer.durations[opts.warmup:]
    return opts.batch_size * len(timed) / sum(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--teacher_hidden", type=int, default=256)
    parser.add_argument("--teacher_heads", type=int, default=8)
    parser.add_argument("--student_hidden", type=int, default=128)
    parser.add_argument("--student_heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--output", default="bench/results/kd_throughput.json")
    opts = parser.parse_args()

    n = opts.batch_size * (opts.warmup + opts.steps)
    g = torch.Generator().manual_seed(0)
    plain = Dataset.from_dict({
        "pixel_values": torch.randn(n, 3, 32, 32, generator=g).numpy(),
        "labels": torch.randint(0, 10, (n,), generator=g).tolist(),
    })
    teacher = vit(opts.teacher_hidden, opts.layers, opts.teacher_heads, seed=0)
    student = vit(opts.student_hidden, opts.layers, opts.student_heads, seed=1)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("teacher", teacher), ("student", student))}
    with tempfile.TemporaryDirectory() as tmp:
        probe_trainer = DistillationTrainer(model=student, teacher_model=teacher,
                                            args=DistillationConfig(output_dir=tmp, report_to="none"))
        t0 = time.perf_counter()
        cache = add_teacher_outputs(plain, teacher, batch_size=128)
        cache_seconds = time.perf_counter() - t0
        cache_probes = add_teacher_outputs(plain, teacher, teacher_layers=probe_trainer.teacher_layers, batch_size=128)
    data = {k: v.with_format("torch") for k, v in
            {"plain": plain, "cache": cache, "cache_probes": cache_probes}.items()}

    kinds = ["a", "b", "c", "d", "d+", "e"]
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(opts.repeats):
            for kind in kinds:
                samples[kind].append(run(kind, data, opts, os.path.join(tmp, kind)))
            print(f"repeat {rep + 1}/{opts.repeats}: " + ", ".join(f"{k}={samples[k][-1]:.1f}" for k in kinds), flush=True)

    median = {k: statistics.median(v) for k, v in samples.items()}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    labels = {"a": "(a) baseline ImageDistilTrainer, KD+CE", "b": "(b) DistillationTrainer KD+CE",
              "c": "(c) + patch probe", "d": "(d) + teacher-output cache (KD+CE)",
              "d+": "(d+) cache, KD+CE+patch", "e": "(e) limit: student alone"}
    print(f"\ndevice: {device}; torch {torch.__version__}; threads {torch.get_num_threads()}; batch {opts.batch_size}; "
          f"{opts.steps} timed steps after {opts.warmup} warm-up, median of {opts.repeats}")
    print(f"teacher {params['teacher']:,} params, student {params['student']:,} "
          f"({params['teacher'] / params['student']:.2f}x); building the cache took {cache_seconds:.1f}s for {n} images")
    print("\n| configuration | images/s (median) | ratio to (a) | all repeats |\n|---|---|---|---|")
    for k in kinds:
        print(f"| {labels[k]} | {median[k]:.1f} | {median[k] / median['a']:.2f} | "
              f"{', '.join(f'{x:.1f}' for x in samples[k])} |")
    print(f"\n(d)/(e) = {median['d'] / median['e']:.2f}; (d+)/(e) = {median['d+'] / median['e']:.2f}")
    os.makedirs(os.path.dirname(opts.output) or ".", exist_ok=True)
    with open(opts.output, "w") as f:
        json.dump({"device": device, "options": vars(opts), "parameters": params, "cache_seconds": cache_seconds,
                   "samples": samples, "median": median}, f, indent=2)


if __name__ == "__main__":
    main()
