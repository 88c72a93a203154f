"""``DetectionSyntheticPipeline``: a guided generator + a DETR teacher that writes an object-detection dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher
from transformers import PreTrainedModel

from ..data import TeacherInputAdapter
from ..hub import detection_dataset_card, write_sidecar
from ..models import ConditionalGenerator
from ..pipeline import SyntheticImagePipeline, _to_pil, balanced_labels, staged_dataset_folder
from .data import detection_features
from .evaluation import query_predictions
from .gan_trainer import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DetectionSyntheticPipeline"]


class DetectionSyntheticPipeline(SyntheticImagePipeline):
    """Generate synthetic detection images: ``image_generator`` makes an image of a class, the ``teacher`` (a DETR)
    annotates it with its detections above a score threshold.

    Example::

        pipe = DetectionSyntheticPipeline(image_generator=G, teacher=detr)
        images = pipe(num_images_per_class=4, generator=torch.Generator().manual_seed(0)).images
        dataset = pipe.write_dataset(5_000, "synthetic-drones", score_threshold=0.5)

    The written dataset has the Hub's object-detection layout (``objects.bbox`` COCO ``[x, y, w, h]`` in pixels,
    ``objects.category`` a ``ClassLabel`` with the teacher's class names), so any detection recipe can read it.
    """

    def __init__(
        self,
        image_generator: ConditionalGenerator,
        teacher: PreTrainedModel | None = None,
        teacher_image_mean: Sequence[float] = tuple(IMAGENET_MEAN),
        teacher_image_std: Sequence[float] = tuple(IMAGENET_STD),
        mode: str = "cgan",
    ):
        super().__init__(image_generator, teacher, teacher_image_mean, teacher_image_std, mode)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_threshold: float) -> list[dict[str, torch.Tensor]]:
        """The teacher's detections on generator outputs in [-1, 1]: per image ``scores``, ``labels`` and
        ``boxes`` (``x0, y0, x1, y1`` in pixels of the image), best real class per query, score ≥ threshold."""
        if self.teacher is None:
            raise ValueError("detect() needs a pipeline with a teacher component (the DETR that annotates)")
        adapter = TeacherInputAdapter(self.config.teacher_image_mean, self.config.teacher_image_std).to(images.device)
        self.teacher.eval()
        out = self.teacher(pixel_values=adapter(images))
        h, w = images.shape[-2:]
        sizes = torch.tensor([[h, w]] * len(images))
        results = []
        for found in query_predictions(out.logits.float().cpu(), out.pred_boxes.float().cpu(), sizes):
            boxes = found["boxes"]
            boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clamp(0, w), boxes[:, 1::2].clamp(0, h)
            keep = (found["scores"] >= score_threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            results.append({k: v[keep] for k, v in found.items()})
        return results

    def write_dataset(
        self,
        num_images: int,
        output_dir: str | os.PathLike,
        *,
        seed: int = 0,
        batch_size: int = 64,
        score_threshold: float = 0.5,
        keep_empty: bool = False,
        quality: dict[str, float] | None = None,
        overwrite: bool = False,
    ) -> Dataset:
        """Generate ``num_images`` images (balanced over classes), annotate them with the teacher's detections
        scoring ≥ ``score_threshold``, and save a ``datasets`` folder with a dataset card.

        Images where the teacher detects nothing are dropped unless ``keep_empty`` (then they are background
        images with no objects); the card reports how many were kept and how often the teacher found the
        conditioning class. The folder appears only when complete; the same ``seed`` gives the same dataset.
        """
        output_dir = os.fspath(output_dir)
        if self.teacher is None:
            raise ValueError("write_dataset needs a teacher component: its detections are the annotations")
        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        balanced_labels(num_images, self.num_classes)
        stats = {"kept": 0, "found_class": 0, "objects": 0}
        fingerprint = Hasher.hash(("hf_dfkd.detection", self._generator_checksum(), num_images, seed,
                                   score_threshold, keep_empty))
        with staged_dataset_folder(output_dir, overwrite) as (work, staged):
            empty = ValueError(f"the teacher detected nothing scoring >= {score_threshold} in {num_images} generated "
                               "images: lower score_threshold, pass keep_empty=True, or train the generator longer")
            try:
                dataset = Dataset.from_generator(
                    self._detection_examples, features=detection_features(self.class_names),
                    cache_dir=os.path.join(work, "cache"), fingerprint=fingerprint,
                    gen_kwargs={"num_images": num_images, "seed": seed, "batch_size": batch_size,
                                "score_threshold": score_threshold, "keep_empty": keep_empty, "stats": stats},
                )
            except ValueError:
                if stats["kept"] == 0:  # datasets refuses an empty split; say why it is empty
                    raise empty from None
                raise
            dataset.save_to_disk(staged)
            # a fresh cache folder: the generator always ran, so stats describe this dataset
            counts = np.bincount([c for o in dataset["objects"] for c in o["category"]], minlength=self.num_classes)
            g = self.image_generator.config
            info = {
                "task": "object-detection",
                "mode": self.config.mode,
                "teacher": getattr(self.teacher.config, "_name_or_path", None) or self.teacher.config.model_type,
                "generator": getattr(self, "name_or_path", None) or f"ConditionalGenerator({g.image_size}x{g.image_size})",
                "num_generated": num_images,
                "num_images": len(dataset),
                "seed": seed,
                "score_threshold": score_threshold,
                "keep_empty": keep_empty,
                "class_names": self.class_names,
                "counts": counts.tolist(),
                "image_size": g.image_size,
                "num_channels": g.num_channels,
                "quality": {
                    "images kept (the teacher detects something)": f"{len(dataset)} of {num_images}",
                    "objects per kept image": round(float(counts.sum()) / len(dataset), 3),
                    "teacher finds the conditioning class": round(stats["found_class"] / num_images, 4),
                    **(quality or {}),
                },
            }
            write_sidecar(staged, **info)
            detection_dataset_card(info).save(os.path.join(staged, "README.md"))
        return load_from_disk(output_dir)

    def _detection_examples(self, num_images: int, seed: int, batch_size: int, score_threshold: float,
                            keep_empty: bool, stats: dict):
        labels = balanced_labels(num_images, self.num_classes)
        g = torch.Generator().manual_seed(seed)
        device = self._execution_device
        latent_dim = self.image_generator.config.latent_dim
        object_id = 0
        for start in self.progress_bar(range(0, len(labels), batch_size)):
            batch_labels = torch.tensor(labels[start : start + batch_size])
            latents = torch.randn(len(batch_labels), latent_dim, generator=g)
            with torch.no_grad():
                images = self._generate(batch_labels, None, latents, len(batch_labels), progress=False, device=device)
                detections = self.detect(images, score_threshold)
            array = self._postprocess(images, "np")
            h, w = images.shape[-2:]
            for i, (label, found) in enumerate(zip(batch_labels.tolist(), detections)):
                stats["found_class"] += int((found["labels"] == label).any())
                if len(found["labels"]) == 0 and not keep_empty:
                    continue
                boxes = found["boxes"]
                xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
                n = len(xywh)
                stats["kept"] += 1
                stats["objects"] += n
                yield {
                    "image_id": start + i, "width": w, "height": h, "image": _to_pil(array[i]),
                    "objects": {"id": list(range(object_id, object_id + n)), "area": [b[2] * b[3] for b in xywh],
                                "bbox": xywh, "category": found["labels"].tolist()},
                }
                object_id += n
