"""Image datasets and transforms: the embedded scikit-learn digits set and a model-sized image transform."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from torch import nn

__all__ = ["ImageTransform", "TeacherInputAdapter", "batch_pixel_values", "load_digits_dataset"]


def load_digits_dataset(test_size: float = 0.2, seed: int = 0) -> DatasetDict:
    """scikit-learn's handwritten digits (1,797 real 8×8 grey images, 10 classes) as a ``DatasetDict``.

    The embedded default of hf_dfkd: it ships with scikit-learn, so it needs no download. Pixel values (0..16) are
    scaled to 0..255 and stored as ``image`` (PIL, mode ``L``) with a ``label`` ClassLabel ``"0"``…``"9"``; the
    ``train``/``test`` split is stratified and fixed by ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels
    )
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})

    def split(indices: np.ndarray) -> Dataset:
        return Dataset.from_dict(
            {"image": [PILImage.fromarray(images[i], mode="L") for i in indices], "label": labels[indices].tolist()},
            features=features,
        )

    return DatasetDict({"train": split(idx_train), "test": split(idx_test)})


def batch_pixel_values(batch: dict, transform=None) -> torch.Tensor:
    """``(B, C, H, W)`` pixel values of a raw dataset batch, through ``transform`` when given."""
    inputs = transform(batch) if transform is not None else batch
    pixel_values = inputs["pixel_values"]
    if not torch.is_tensor(pixel_values):
        pixel_values = torch.stack([torch.as_tensor(x) for x in pixel_values])
    return pixel_values


class ImageTransform:
    """Batched transform from PIL images to normalised ``pixel_values`` sized for a model.

    Use with ``dataset.with_transform(ImageTransform.from_model_config(model.config))``. Every other column (labels,
    cached ``teacher_logits``…) is passed through unchanged.

    Args:
        image_size: output ``(height, width)`` or one int for square images.
        num_channels: 1 (grey, mode ``L``) or 3 (RGB).
        image_mean, image_std: per-channel normalisation ``(x/255 - mean) / std``.
        image_column: the column that holds the images.
        resize: resize images to ``image_size``; when False a wrong size is an error.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        num_channels: int = 3,
        image_mean: float | Sequence[float] = 0.5,
        image_std: float | Sequence[float] = 0.5,
        image_column: str = "image",
        resize: bool = True,
    ):
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.num_channels = num_channels
        self.mode = "L" if num_channels == 1 else "RGB"
        self.mean = torch.as_tensor(image_mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(image_std, dtype=torch.float32).reshape(-1, 1, 1)
        self.image_column = image_column
        self.resize = resize

    @classmethod
    def from_model_config(cls, config, **kwargs) -> ImageTransform:
        """Size and channels from a ViT-style config (``image_size``, ``num_channels``)."""
        return cls(image_size=config.image_size, num_channels=getattr(config, "num_channels", 3), **kwargs)

    def to_tensor(self, image: PILImage.Image) -> torch.Tensor:
        image = image.convert(self.mode)
        if image.size != (self.size[1], self.size[0]):
            if not self.resize:
                raise ValueError(f"image is {image.size[1]}x{image.size[0]}, expected {self.size[0]}x{self.size[1]}")
            image = image.resize((self.size[1], self.size[0]), PILImage.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).reshape(self.size[0], self.size[1], self.num_channels).permute(2, 0, 1)
        return (tensor - self.mean) / self.std

    def __call__(self, batch: dict) -> dict:
        if self.image_column not in batch:
            raise KeyError(
                f"no {self.image_column!r} column in the batch (columns: {sorted(batch)}); "
                "pass image_column= or keep the column (remove_unused_columns=False)"
            )
        out = {k: v for k, v in batch.items() if k != self.image_column}
        out["pixel_values"] = [self.to_tensor(image) for image in batch[self.image_column]]
        return out


class TeacherInputAdapter(nn.Module):
    """Differentiable map from generator outputs in [-1, 1] to the teacher's input: ``((x + 1) / 2 - mean) / std``.

    Sits between the generator and the teacher so that the teacher sees images normalised as in its training, and
    resizes them (bilinear) when ``image_size`` is given and differs from the generator's.
    """

    def __init__(
        self,
        image_mean: float | Sequence[float] = 0.5,
        image_std: float | Sequence[float] = 0.5,
        image_size: int | Sequence[int] | None = None,
    ):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(image_mean, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(image_std, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(image_size) if image_size is not None else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1) / 2
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
