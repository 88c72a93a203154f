"""Quality metrics of synthetic images: standard FID (FID Inception-v3) and a teacher-feature FID."""

from .fid import (
    FeatureStatistics,
    InceptionFeatures,
    TeacherFeatures,
    compute_statistics,
    frechet_distance,
    image_batches,
)

__all__ = [
    "FeatureStatistics",
    "InceptionFeatures",
    "TeacherFeatures",
    "compute_statistics",
    "frechet_distance",
    "image_batches",
]
