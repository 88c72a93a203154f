import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_vit
from PIL import Image

from hf_dfkd import ConditionalGenerator, SyntheticImagePipeline
from hf_dfkd.pipeline import balanced_labels

NAMES = [f"digit_{i}" for i in range(10)]


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    g = ConditionalGenerator(num_classes=10, image_size=8, num_channels=1, latent_dim=16, embedding_dim=8,
                             channels=(32, 16, 8))
    teacher = tiny_vit(num_labels=10, names=NAMES).eval()
    pipe = SyntheticImagePipeline(image_generator=g, teacher=teacher)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def folder_digest(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(path).rglob("*") if p.is_file()}


def test_call_output_types_and_seeding(pipe):
    out = pipe(num_images_per_class=2, generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 20 and isinstance(out.images[0], Image.Image) and out.images[0].size == (8, 8)
    a = pipe(class_labels=[1, 2, 3], output_type="np", generator=torch.Generator().manual_seed(1)).images
    b = pipe(class_labels=[1, 2, 3], output_type="pt", generator=torch.Generator().manual_seed(1)).images
    assert a.shape == (3, 8, 8, 1) and b.shape == (3, 1, 8, 8)
    assert np.allclose(a, b.permute(0, 2, 3, 1).numpy()) and 0 <= a.min() and a.max() <= 1
    (c,) = pipe(class_labels=[1, 2, 3], output_type="np", generator=torch.Generator().manual_seed(2), return_dict=False)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="exactly one of"):
        pipe()
    with pytest.raises(ValueError, match="outside 0..9"):
        pipe(class_labels=[10])
    with pytest.raises(ValueError, match="output_type"):
        pipe(class_labels=[1], output_type="jpeg")


def test_save_and_load_pipeline_offline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    index = (tmp_path / "pipe" / "model_index.json").read_text()
    assert "ConditionalGenerator" in index and "ViTForImageClassification" in index
    assert (tmp_path / "pipe" / "image_generator" / "diffusion_pytorch_model.safetensors").exists()
    loaded = SyntheticImagePipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    kw = dict(class_labels=[0, 5, 9], output_type="np")
    assert np.array_equal(pipe(**kw, generator=torch.Generator().manual_seed(3)).images,
                          loaded(**kw, generator=torch.Generator().manual_seed(3)).images)
    assert loaded.class_names == NAMES and loaded.config.mode == "cgan"


def test_balanced_labels_spread_the_rest():
    counts = np.bincount(balanced_labels(23, 10), minlength=10)
    assert counts.tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2] and counts.sum() == 23


def test_write_dataset_features_counts_card_and_determinism(pipe, tmp_path):
    ds = pipe.write_dataset(23, tmp_path / "a", seed=5, teacher_logits=True, batch_size=8,
                            quality={"teacher-feature FID vs digits test": 12.5})
    assert len(ds) == 23 and ds.features["label"].names == NAMES
    assert np.bincount(ds["label"], minlength=10).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert ds[0]["image"].size == (8, 8) and len(ds[0]["teacher_logits"]) == 10
    card = (tmp_path / "a" / "README.md").read_text()
    assert "mode-cgan" in card and "| digit_0 | 3 |" in card and "12.5" in card
    pipe.write_dataset(23, tmp_path / "b", seed=5, teacher_logits=True, batch_size=8,
                       quality={"teacher-feature FID vs digits test": 12.5})
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")
    other = pipe.write_dataset(23, tmp_path / "c", seed=6, batch_size=8)
    assert other[0]["image"].tobytes() != ds[0]["image"].tobytes()
    # the teacher logits are those of the generated images (before PNG quantisation)
    images = pipe(class_labels=ds["label"][:8], output_type="pt",
                  latents=torch.randn(23, 16, generator=torch.Generator().manual_seed(5))[:8]).images
    with torch.no_grad():
        logits = pipe.teacher(pixel_values=images * 2 - 1).logits
    assert torch.allclose(torch.tensor(ds[:8]["teacher_logits"]), logits, atol=1e-4)


def test_write_dataset_never_leaves_a_partial_folder(pipe, tmp_path, monkeypatch):
    with pytest.raises(FileExistsError):
        (tmp_path / "taken").mkdir()
        pipe.write_dataset(10, tmp_path / "taken")
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return torch.zeros(8, 1, 8, 8)

    monkeypatch.setattr(pipe, "_generate", failing)
    with pytest.raises(Exception) as excinfo:  # datasets wraps it in DatasetGenerationError
        pipe.write_dataset(20, tmp_path / "out", batch_size=8)
    assert "disk full" in str(excinfo.value) + str(excinfo.value.__cause__)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # the staging folder is gone too
    with pytest.raises(ValueError, match="needs a pipeline with a teacher"):
        SyntheticImagePipeline(image_generator=pipe.image_generator).write_dataset(4, tmp_path / "x", teacher_logits=True)
