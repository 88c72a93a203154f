"""Student-vs-teacher evaluation on a real split: accuracy, agreement, size and latency."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from datasets import Dataset
from torch import nn

from .data import batch_pixel_values

__all__ = ["count_parameters", "evaluate_classifiers", "latency_per_image", "size_on_disk"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's ``save_pretrained`` folder (safetensors weights and config)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(tmp) for f in files)


@torch.no_grad()
def latency_per_image(model: nn.Module, pixel_values: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of a batch-1 forward pass (the edge-device case), on the model's device."""
    model.eval()
    x = pixel_values[:1].to(next(model.parameters()).device)
    times = []
    for i in range(warmup + repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(pixel_values=x)
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def evaluate_classifiers(
    student: nn.Module,
    teacher: nn.Module,
    dataset: Dataset,
    transform: Callable[[dict], dict] | None = None,
    label_column: str = "label",
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy of both models, the student's top-1 agreement with the teacher, parameters, size and latency."""
    if label_column not in dataset.column_names:
        raise ValueError(f"the evaluation split has no {label_column!r} column (columns: {dataset.column_names})")
    student.eval()
    teacher.eval()
    device = next(student.parameters()).device
    correct_s = correct_t = agree = total = 0
    first = None
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        x = batch_pixel_values(batch, transform).to(device)
        first = x if first is None else first
        y = torch.as_tensor(batch[label_column], device=device)
        s = student(pixel_values=x).logits.argmax(-1)
        t = teacher(pixel_values=x.to(next(teacher.parameters()).device)).logits.argmax(-1).to(device)
        correct_s += (s == y).sum().item()
        correct_t += (t == y).sum().item()
        agree += (s == t).sum().item()
        total += len(y)
    sp, tp = count_parameters(student), count_parameters(teacher)
    return {
        "student_accuracy": correct_s / total,
        "teacher_accuracy": correct_t / total,
        "agreement": agree / total,
        "num_examples": total,
        "student_parameters": sp,
        "teacher_parameters": tp,
        "compression_ratio": tp / sp,
        "student_size_bytes": size_on_disk(student),
        "teacher_size_bytes": size_on_disk(teacher),
        "student_latency_ms": 1000 * latency_per_image(student, first),
        "teacher_latency_ms": 1000 * latency_per_image(teacher, first),
    }
