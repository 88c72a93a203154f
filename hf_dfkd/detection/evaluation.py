"""mAP (torchmetrics ``MeanAveragePrecision``), parameters and latency of detectors on a real split."""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.image_transforms import center_to_corners_format

from .data import DetectionCollator, DetectionTransform, detection_class_names, detection_processor
from .models import count_parameters

__all__ = ["center_to_corners", "evaluate_detectors", "map_inputs", "measure_latency", "query_predictions"]


center_to_corners = center_to_corners_format
"""``(…, 4)`` ``cx, cy, w, h`` → ``x0, y0, x1, y1`` (transformers' own conversion)."""


def query_predictions(logits: torch.Tensor, boxes: torch.Tensor, sizes: torch.Tensor) -> list[dict]:
    """torchmetrics predictions from a softmax detector's outputs: every query, scored by its best real class (the
    no-object class is last), boxes as ``x0, y0, x1, y1`` in the pixels of images of ``sizes`` ``(B, 2)`` (h, w)."""
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)
    scale = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1).to(boxes)[:, None]
    corners = center_to_corners(boxes) * scale
    return [{"boxes": b, "scores": s, "labels": l} for b, s, l in zip(corners, scores, labels)]


def map_inputs(out, labels: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(predictions, targets)`` for torchmetrics' ``MeanAveragePrecision`` from a detector's outputs and a batch's
    DETR labels (normalised ``cxcywh`` boxes, ``orig_size``): both in the images' own pixels, on the CPU."""
    sizes = torch.stack([t["orig_size"] for t in labels]).cpu()
    predictions = [{k: v.cpu() for k, v in p.items()} for p in
                   query_predictions(out.logits.detach().float().cpu(), out.pred_boxes.detach().float().cpu(), sizes)]
    targets = []
    for t in labels:
        h, w = t["orig_size"].tolist()
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        targets.append({"boxes": center_to_corners(t["boxes"].float().cpu()) * scale,
                        "labels": t["class_labels"].cpu()})
    return predictions, targets


@torch.no_grad()
def measure_latency(model: PreTrainedModel, image_size: tuple[int, int], *, repeats: int = 20,
                    device: str | torch.device = "cpu") -> float:
    """Median seconds per image of a batch-1 forward pass at ``image_size`` (after 3 warm-up passes)."""
    model = model.to(device).eval()
    x = torch.randn(1, 3, *image_size, device=device)
    times = []
    for i in range(repeats + 3):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(pixel_values=x)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def evaluate_detectors(
    models: Mapping[str, PreTrainedModel],
    dataset: Dataset,
    *,
    image_size: tuple[int, int],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    image_column: str = "image",
    objects_column: str = "objects",
    latency_repeats: int = 20,
    disable_tqdm: bool = False,
) -> dict[str, dict]:
    """mAP@[.5:.95], mAP@0.5, mAP@0.75 and per-class mAP of each model on ``dataset`` (boxes in the images' own
    pixels), with parameter counts and batch-1 latency. Every model sees the same images at ``image_size``."""
    from torchmetrics.detection import MeanAveragePrecision

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = detection_class_names(dataset, objects_column)
    processor = detection_processor(image_size)  # all models here share the ImageNet normalisation
    loader = DataLoader(dataset.with_transform(DetectionTransform(processor, image_size, image_column, objects_column)),
                        batch_size=batch_size, collate_fn=DetectionCollator())
    # every process that calls this sees the whole split: no cross-process sync (it would wait on the others)
    metrics = {k: MeanAveragePrecision(box_format="xyxy", class_metrics=True, sync_on_compute=False) for k in models}
    for model in models.values():
        model.to(device).eval()
    for batch in tqdm(loader, desc="mAP", disable=disable_tqdm):
        pixels = batch["pixel_values"].to(device)
        for key, model in models.items():
            metrics[key].update(*map_inputs(model(pixel_values=pixels), batch["labels"]))
    results = {}
    for key, model in models.items():
        m = metrics[key].compute()
        row = {"map": m["map"].item(), "map_50": m["map_50"].item(), "map_75": m["map_75"].item(),
               "map_small": m["map_small"].item(), "mar_100": m["mar_100"].item()}
        classes = m["classes"].tolist() if m["classes"].ndim else [m["classes"].item()]
        per_class = m["map_per_class"].tolist() if m["map_per_class"].ndim else [m["map_per_class"].item()]
        row["map_per_class"] = {names[c]: v for c, v in zip(classes, per_class)}
        row["parameters"] = count_parameters(model)
        if latency_repeats:
            row["latency_s_per_image"] = measure_latency(model, image_size, repeats=latency_repeats, device=device)
        results[key] = row
    return results
