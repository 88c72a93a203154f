"""Detection data in the Hub's object-detection layout: the embedded digits set, checks, transform and collator.

The layout (as on the Hub): an ``image`` column and an ``objects`` column holding ``bbox`` (COCO
``[x_min, y_min, width, height]`` in pixels), ``category`` (a ``ClassLabel``), and optionally ``area`` and ``id``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage
from transformers import DetrImageProcessor

__all__ = [
    "DetectionCollator",
    "DetectionTransform",
    "check_detection_dataset",
    "detection_augmentation",
    "detection_class_names",
    "detection_features",
    "detection_processor",
    "make_digits_detection_dataset",
]

EMBEDDED_DIGITS_DETECTION = "sklearn:digits-detection"
"""Dataset name of the embedded detection set (:func:`make_digits_detection_dataset`)."""


def detection_features(class_names: Sequence[str]) -> Features:
    """The Hub's object-detection features, as in the drone and COCO-style datasets."""
    return Features({
        "image_id": Value("int64"),
        "width": Value("int32"),
        "height": Value("int32"),
        "image": Image(),
        "objects": {
            "id": List(Value("int64")),
            "area": List(Value("float32")),
            "bbox": List(List(Value("float32"), length=4)),
            "category": List(ClassLabel(names=[str(n) for n in class_names])),
        },
    })


def make_digits_detection_dataset(
    num_train: int = 300,
    num_test: int = 100,
    image_size: int = 64,
    max_objects: int = 2,
    digit_scale: int = 3,
    seed: int = 0,
) -> DatasetDict:
    """The embedded detection set: scikit-learn's 8×8 digits, upscaled ×``digit_scale``, pasted without overlap on
    noisy ``image_size``² RGB canvases (1 to ``max_objects`` per image), with their boxes. Train and test use
    disjoint digit images. Made in a second; no download. Classes ``"0"`` … ``"9"``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))
    side = 8 * digit_scale
    if side > image_size:
        raise ValueError(f"digits of {side}px do not fit a {image_size}px canvas: lower digit_scale")
    pools = {"train": order[: len(order) * 3 // 4], "test": order[len(order) * 3 // 4 :]}
    splits = {}
    next_id = 0
    for split, count in (("train", num_train), ("test", num_test)):
        rows = []
        for index in range(count):
            canvas = rng.normal(30, 12, (image_size, image_size, 3)).clip(0, 255)
            tint = rng.uniform(0.6, 1.0, 3)
            boxes, categories = [], []
            for _ in range(int(rng.integers(1, max_objects + 1))):
                for _attempt in range(20):
                    x, y = rng.integers(0, image_size - side + 1, 2)
                    if all(x + side <= bx or bx + side <= x or y + side <= by or by + side <= y
                           for bx, by, _, _ in boxes):
                        break
                else:
                    continue
                k = int(rng.choice(pools[split]))
                glyph = np.kron(digits.images[k] / 16.0, np.ones((digit_scale, digit_scale)))
                canvas[y : y + side, x : x + side] = np.maximum(
                    canvas[y : y + side, x : x + side], 255 * glyph[..., None] * tint)
                boxes.append([float(x), float(y), float(side), float(side)])
                categories.append(int(digits.target[k]))
            rows.append({
                "image_id": index, "width": image_size, "height": image_size,
                "image": PILImage.fromarray(canvas.astype(np.uint8)),
                "objects": {"id": list(range(next_id, next_id + len(boxes))), "area": [b[2] * b[3] for b in boxes],
                            "bbox": boxes, "category": categories},
            })
            next_id += len(boxes)
        splits[split] = Dataset.from_list(rows, features=detection_features([str(i) for i in range(10)]))
    return DatasetDict(splits)


def detection_class_names(dataset: Dataset, objects_column: str = "objects") -> list[str]:
    """Names of the ``objects.category`` ``ClassLabel`` of a detection dataset."""
    feature = dataset.features[objects_column]["category"]
    inner = getattr(feature, "feature", feature)
    if not isinstance(inner, ClassLabel):
        raise ValueError(f"{objects_column}.category is {inner}, not a ClassLabel: cast it with "
                         "dataset.cast_column(...) so the class names are known")
    return list(inner.names)


def check_detection_dataset(
    dataset: Dataset,
    *,
    class_names: Sequence[str] | None = None,
    image_column: str = "image",
    objects_column: str = "objects",
    invalid_boxes: Literal["error", "clip", "drop"] = "error",
    where: str = "the dataset",
) -> Dataset:
    """Check a detection dataset before any long work; returns it (cleaned when ``invalid_boxes`` says so).

    - ``image_column`` and ``objects_column`` (with ``bbox`` and ``category``) exist;
    - the category names equal ``class_names`` (the model's label set), when given;
    - every category id is in ``[0, num_classes)`` (categories that are plain integers rather than a
      ``ClassLabel`` index ``class_names``);
    - every box has a positive width and height and lies inside its image (half a pixel of tolerance).

    Boxes that are outside the image or empty raise a ``ValueError`` naming the row, unless ``invalid_boxes`` is
    ``"clip"`` (clip to the image, then drop what has no area left) or ``"drop"`` (drop those boxes). Images of mixed
    sizes are fine: :class:`DetectionTransform` resizes each to the model's size and normalises boxes by each image's
    own size. Image sizes come from ``width``/``height`` columns when present, else from the images.
    """
    if invalid_boxes not in ("error", "clip", "drop"):
        raise ValueError(f"invalid_boxes must be 'error', 'clip' or 'drop', got {invalid_boxes!r}")
    for column in (image_column, objects_column):
        if column not in dataset.column_names:
            raise ValueError(f"{where} has no {column!r} column (columns: {dataset.column_names}); a detection dataset "
                             "has an image column and an objects column with 'bbox' and 'category'")
    objects_feature = dataset.features[objects_column]
    if not all(k in objects_feature for k in ("bbox", "category")):
        raise ValueError(f"{where}'s {objects_column!r} column lacks 'bbox'/'category' (has {list(objects_feature)})")
    try:
        names = detection_class_names(dataset, objects_column)
    except ValueError:
        if class_names is None:
            raise
        names = [str(n) for n in class_names]  # plain integer ids: they index the model's label set
    else:
        if class_names is not None and list(map(str, class_names)) != names:
            raise ValueError(f"{where}'s classes {names} differ from the model's {list(class_names)}: the label "
                             "sets must match in names and order (build the model with the dataset's class names)")
    sized = "width" in dataset.column_names and "height" in dataset.column_names
    columns = [objects_column] + (["width", "height"] if sized else [image_column])
    problems: list[str] = []
    fixed_rows: dict[int, dict] = {}
    for i, row in enumerate(dataset.select_columns(columns)):
        width, height = (row["width"], row["height"]) if sized else row[image_column].size
        objects = row[objects_column]
        keep_boxes, keep_categories, keep_index, changed = [], [], [], False
        for j, (box, category) in enumerate(zip(objects["bbox"], objects["category"])):
            if not 0 <= category < len(names):
                raise ValueError(f"{where}, row {i}: category id {category} is outside the label set "
                                 f"(0..{len(names) - 1}: {names}); fix the annotations or the ClassLabel names")
            x, y, w, h = box
            bad = None
            if not (w > 0 and h > 0):
                bad = f"box {j} {box} has zero or negative area"
            elif x < -0.5 or y < -0.5 or x + w > width + 0.5 or y + h > height + 0.5:
                bad = f"box {j} {box} (COCO x, y, w, h) lies outside the {width}x{height} image"
            if bad is None:
                keep_boxes.append(list(box)), keep_categories.append(category), keep_index.append(j)
                continue
            changed = True
            if invalid_boxes == "error":
                problems.append(f"row {i}: {bad}")
                continue
            if invalid_boxes == "clip":
                x0, y0 = max(x, 0.0), max(y, 0.0)
                x1, y1 = min(x + max(w, 0.0), width), min(y + max(h, 0.0), height)
                if x1 > x0 and y1 > y0:
                    keep_boxes.append([x0, y0, x1 - x0, y1 - y0]), keep_categories.append(category)
                    keep_index.append(j)
        if changed and invalid_boxes != "error":
            fixed = {"bbox": keep_boxes, "category": keep_categories}
            for key in objects:
                if key not in fixed:
                    fixed[key] = [objects[key][j] for j in keep_index]
            if "area" in fixed:
                fixed["area"] = [b[2] * b[3] for b in keep_boxes]
            fixed_rows[i] = fixed
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{where} has invalid boxes: {'; '.join(problems[:5])}{more}. Fix the annotations, or pass "
                         "invalid_boxes='clip' (clip to the image) or 'drop' (remove those boxes)")
    if not fixed_rows:
        return dataset

    def _fix(objects, index):
        return {objects_column: fixed_rows.get(index, objects)}

    return dataset.map(_fix, input_columns=[objects_column], with_indices=True, features=dataset.features,
                       desc="Fixing invalid boxes")


def detection_processor(image_size: tuple[int, int], image_mean: Sequence[float] | None = None,
                        image_std: Sequence[float] | None = None) -> DetrImageProcessor:
    """A ``DetrImageProcessor`` that resizes every image to exactly ``image_size`` = (height, width), without
    padding: saved next to a model so ``pipeline("object-detection", model=folder)`` works."""
    height, width = image_size
    kwargs = {} if image_mean is None else {"image_mean": list(image_mean), "image_std": list(image_std)}
    return DetrImageProcessor(size={"height": height, "width": width}, do_pad=False, **kwargs)


def detection_augmentation(
    image_size: tuple[int, int],
    crop_probability: float = 0.5,
    min_crop_scale: float = 0.25,
    color_jitter: float = 0.3,
) -> Callable[[dict], dict]:
    """Box-aware training augmentation, built from torchvision's ``transforms.v2``: horizontal flip, a random
    zoom-in crop (probability ``crop_probability``, crop area ``min_crop_scale``..1 of the image, output
    ``image_size``) and brightness/contrast/saturation jitter; boxes that fall out of the crop are dropped.

    The returned callable takes and returns ``{"image": PIL image, "boxes": tv_tensors.BoundingBoxes (XYWH pixels),
    "labels": LongTensor}``. :class:`DetectionTransform` applies it when given as ``augmentation``. It matters for
    small training sets of videos: frames of one video are near-duplicates, and a detector trained on them without
    augmentation memorises the backgrounds.
    """
    from torchvision.transforms import v2

    if not 0.0 <= crop_probability <= 1.0 or not 0.0 < min_crop_scale <= 1.0 or color_jitter < 0:
        raise ValueError(f"detection_augmentation: crop_probability must be in [0, 1] (got {crop_probability}), "
                         f"min_crop_scale in (0, 1] (got {min_crop_scale}) and color_jitter >= 0 "
                         f"(got {color_jitter}).")
    aspect = image_size[1] / image_size[0]
    steps = [
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0),
                                             ratio=(0.8 * aspect, 1.25 * aspect), antialias=True)],
                       p=crop_probability),
        v2.Resize(image_size, antialias=True),  # jitter the small image, not the full frame
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    # a crop cuts boxes: clamp them to the image, then drop the ones left under 1 pixel wide or high
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)


class DetectionTransform:
    """``dataset.with_transform`` function: images → ``pixel_values`` at one fixed size, COCO boxes → DETR labels.

    Uses the model's ``DetrImageProcessor`` (annotations in ``coco_detection`` format: normalised ``cxcywh`` boxes
    and ``class_labels``); ``image_size`` overrides the processor's size so that every image, whatever its own
    size, comes out as ``image_size`` (boxes are normalised by each image's own size, so they stay right).
    """

    def __init__(self, processor: DetrImageProcessor, image_size: tuple[int, int] | None = None,
                 image_column: str = "image", objects_column: str = "objects",
                 augmentation: Callable[[dict], dict] | None = None):
        self.processor = processor
        self.size = None if image_size is None else {"height": image_size[0], "width": image_size[1]}
        self.image_column, self.objects_column = image_column, objects_column
        self.augmentation = augmentation

    def __call__(self, batch: dict) -> dict:
        images = [image.convert("RGB") for image in batch[self.image_column]]
        objects = [(list(o["bbox"]), list(o["category"])) for o in batch[self.objects_column]]
        if self.augmentation is not None:
            images, objects = zip(*(self._augment(image, boxes, categories)
                                    for image, (boxes, categories) in zip(images, objects)))
        annotations = [
            {"image_id": i, "annotations": [
                {"bbox": list(b), "category_id": int(c), "area": float(b[2] * b[3]), "iscrowd": 0}
                for b, c in zip(boxes, categories)]}
            for i, (boxes, categories) in enumerate(objects)
        ]
        kwargs = {} if self.size is None else {"size": self.size, "do_pad": False}
        encoded = self.processor(images=images, annotations=annotations, return_tensors="pt", **kwargs)
        labels = [{"class_labels": t["class_labels"], "boxes": t["boxes"], "orig_size": t["orig_size"]}
                  for t in encoded["labels"]]
        return {"pixel_values": list(encoded["pixel_values"]), "labels": labels}

    def _augment(self, image: PILImage.Image, boxes: list, categories: list) -> tuple[PILImage.Image, tuple]:
        from torchvision import tv_tensors

        sample = self.augmentation({
            "image": image,
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                              format="XYWH", canvas_size=(image.height, image.width)),
            "labels": torch.tensor(categories, dtype=torch.long),
        })
        return sample["image"], (sample["boxes"].tolist(), sample["labels"].tolist())


class DetectionCollator:
    """Stacks ``pixel_values`` and keeps ``labels`` as a list of per-image dicts (DETR's format)."""

    def __call__(self, features: list[dict]) -> dict:
        pixel_values = torch.stack([f["pixel_values"] for f in features])
        return {"pixel_values": pixel_values, "labels": [f["labels"] for f in features]}
