"""Detection data: the embedded digits set, the checks on bad input, the transform (mixed sizes), mAP."""

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, List, Value
from PIL import Image

from hf_dfkd.detection import (
    DetectionCollator,
    DetectionTransform,
    check_detection_dataset,
    detection_augmentation,
    detection_features,
    detection_processor,
    evaluate_detectors,
    make_digits_detection_dataset,
)

NAMES = ["airplane", "bird", "drone"]


def detection_rows(rows, names=NAMES):
    """A dataset in the Hub's detection layout from (width, height, boxes, categories) tuples."""
    data = []
    for i, (w, h, boxes, cats) in enumerate(rows):
        data.append({"image_id": i, "width": w, "height": h, "image": Image.new("RGB", (w, h), (20, 40, 60)),
                     "objects": {"id": list(range(len(boxes))), "area": [b[2] * b[3] for b in boxes],
                                 "bbox": boxes, "category": cats}})
    return Dataset.from_list(data, features=detection_features(names))


def test_embedded_set_is_in_hub_layout_with_boxes_on_the_digits():
    data = make_digits_detection_dataset(num_train=20, num_test=10, image_size=64, seed=3)
    assert set(data) == {"train", "test"} and len(data["train"]) == 20
    feature = data["train"].features["objects"]["category"].feature
    assert isinstance(feature, ClassLabel) and feature.names == [str(i) for i in range(10)]
    check_detection_dataset(data["train"], class_names=feature.names)  # valid boxes
    row = data["train"][0]
    pixels = np.asarray(row["image"]).mean(-1)
    for x, y, w, h in row["objects"]["bbox"]:
        inside = pixels[int(y) : int(y + h), int(x) : int(x + w)].max()
        assert inside > pixels.mean() + 40  # a bright digit stroke lies inside every box
    again = make_digits_detection_dataset(num_train=20, num_test=10, image_size=64, seed=3)
    assert again["train"][5]["objects"] == data["train"][5]["objects"]  # seeded


@pytest.mark.parametrize("box, message", [
    ([50.0, 10.0, 20.0, 10.0], "outside the 64x48 image"),
    ([-5.0, 10.0, 10.0, 10.0], "outside"),
    ([10.0, 10.0, 0.0, 5.0], "zero or negative area"),
    ([10.0, 10.0, 5.0, -1.0], "zero or negative area"),
])
def test_invalid_boxes_are_an_error_naming_the_row(box, message):
    data = detection_rows([(64, 48, [[1.0, 1.0, 5.0, 5.0]], [0]), (64, 48, [box], [1])])
    with pytest.raises(ValueError, match=rf"row 1: box 0 .*{message}.*invalid_boxes='clip'"):
        check_detection_dataset(data, class_names=NAMES)


def test_invalid_boxes_can_be_clipped_or_dropped():
    data = detection_rows([(64, 48, [[50.0, 10.0, 20.0, 10.0], [1.0, 1.0, 0.0, 3.0], [2.0, 2.0, 4.0, 4.0]],
                            [2, 1, 0])])
    clipped = check_detection_dataset(data, invalid_boxes="clip")[0]["objects"]
    assert clipped["bbox"] == [[50.0, 10.0, 14.0, 10.0], [2.0, 2.0, 4.0, 4.0]]  # clipped; the empty one dropped
    assert clipped["category"] == [2, 0] and clipped["area"] == [140.0, 16.0]
    dropped = check_detection_dataset(data, invalid_boxes="drop")[0]["objects"]
    assert dropped["bbox"] == [[2.0, 2.0, 4.0, 4.0]] and dropped["category"] == [0] and dropped["id"] == [2]


def test_category_outside_the_label_set_is_an_error():
    # categories stored as plain integers (no ClassLabel): they index the model's label set
    features = detection_features(NAMES)
    features["objects"]["category"] = List(Value("int64"))
    data = Dataset.from_list([{"image_id": 0, "width": 32, "height": 32, "image": Image.new("RGB", (32, 32)),
                               "objects": {"id": [0, 1], "area": [25.0, 25.0], "bbox": [[1.0, 1.0, 5.0, 5.0]] * 2,
                                           "category": [1, 7]}}], features=features)
    with pytest.raises(ValueError, match=r"row 0: category id 7 is outside the label set \(0..2"):
        check_detection_dataset(data, class_names=NAMES)
    with pytest.raises(ValueError, match="not a ClassLabel"):
        check_detection_dataset(data)  # without a label set the ids mean nothing


def test_label_set_mismatch_with_the_model_is_an_error():
    data = detection_rows([(32, 32, [[1.0, 1.0, 5.0, 5.0]], [0])])
    with pytest.raises(ValueError, match="differ from the model's"):
        check_detection_dataset(data, class_names=["airplane", "drone", "bird"])
    with pytest.raises(ValueError, match="no 'objects' column"):
        check_detection_dataset(data.remove_columns("objects"))


def test_mixed_image_sizes_come_out_at_one_size_with_boxes_normalised_per_image():
    data = detection_rows([(64, 48, [[16.0, 12.0, 32.0, 24.0]], [0]), (200, 100, [[0.0, 50.0, 100.0, 50.0]], [2])])
    check_detection_dataset(data, class_names=NAMES)
    transform = DetectionTransform(detection_processor((32, 32)), (32, 32))
    batch = DetectionCollator()([data.with_transform(transform)[i] for i in range(2)])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    torch.testing.assert_close(batch["labels"][0]["boxes"], torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    torch.testing.assert_close(batch["labels"][1]["boxes"], torch.tensor([[0.25, 0.75, 0.5, 0.5]]))
    assert batch["labels"][1]["class_labels"].tolist() == [2]
    assert batch["labels"][1]["orig_size"].tolist() == [100, 200]


def test_augmentation_flips_and_crops_boxes_with_the_image():
    torch.manual_seed(0)
    data = detection_rows([(64, 48, [[8.0, 12.0, 16.0, 8.0]], [1])] * 64)
    flip_only = detection_augmentation((48, 64), crop_probability=0.0, color_jitter=0.0)
    batch = DetectionTransform(detection_processor((48, 64)), (48, 64), augmentation=flip_only)(data[:64])
    boxes = {tuple(round(v, 4) for v in label["boxes"][0].tolist()) for label in batch["labels"]}
    # cx = (8 + 8) / 64 = 0.25, or mirrored 0.75; cy, w, h unchanged
    assert boxes == {(0.25, 0.3333, 0.25, 0.1667), (0.75, 0.3333, 0.25, 0.1667)}
    crop = detection_augmentation((32, 32), crop_probability=1.0, min_crop_scale=0.1)
    batch = DetectionTransform(detection_processor((32, 32)), (32, 32), augmentation=crop)(data[:64])
    assert all(p.shape == (3, 32, 32) for p in batch["pixel_values"])
    kept = [label for label in batch["labels"] if len(label["class_labels"])]
    assert 0 < len(kept) < 64  # small crops miss the object: it is dropped, not kept outside the image
    for label in kept:
        assert label["class_labels"].tolist() == [1]
        cx, cy, w, h = label["boxes"][0].tolist()
        assert 0 <= cx - w / 2 + 1e-6 and cx + w / 2 <= 1 + 1e-6 and 0 <= cy - h / 2 + 1e-6 and cy + h / 2 <= 1 + 1e-6
    with pytest.raises(ValueError, match="min_crop_scale"):
        detection_augmentation((32, 32), min_crop_scale=0.0)


class _Oracle(torch.nn.Module):
    """Always predicts one box (normalised cxcywh) of one class with high confidence."""

    def __init__(self, box, label, num_labels=3):
        super().__init__()
        self.box, self.label, self.num_labels = torch.tensor(box), label, num_labels
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        logits = torch.full((b, 2, self.num_labels + 1), -10.0)
        logits[:, 0, self.label] = 10.0
        logits[:, 1, -1] = 10.0
        boxes = self.box.expand(b, 2, 4).clone()
        return type("Out", (), {"logits": logits, "pred_boxes": boxes})()


def test_map_is_one_for_exact_boxes_and_zero_for_wrong_class():
    data = detection_rows([(64, 48, [[16.0, 12.0, 32.0, 24.0]], [1])] * 4)
    results = evaluate_detectors({"right": _Oracle([0.5, 0.5, 0.5, 0.5], 1), "wrong": _Oracle([0.5, 0.5, 0.5, 0.5], 0),
                                  "shifted": _Oracle([0.3, 0.5, 0.5, 0.5], 1)},
                                 data, image_size=(32, 32), latency_repeats=0, disable_tqdm=True)
    assert results["right"]["map"] == pytest.approx(1.0) and results["right"]["map_per_class"]["bird"] == 1.0
    assert results["wrong"]["map_50"] == 0.0
    # a box shifted by 0.2 of the width: IoU 0.43, below 0.5
    assert results["shifted"]["map_50"] == 0.0
    assert results["right"]["parameters"] == 1
