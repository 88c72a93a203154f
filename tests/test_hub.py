"""Hub publishing: what would be uploaded (files, card metadata), checked offline with an injected HfApi."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_dataset
from transformers import AutoModelForImageClassification

from conftest import tiny_vit
from hf_dfkd import ConditionalGenerator, SyntheticImagePipeline
from hf_dfkd.hub import (push_pipeline, push_student, push_synthetic_dataset, read_sidecar, student_card,
                         write_sidecar)

NAMES = [f"digit_{i}" for i in range(10)]


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls and keeps a copy of every uploaded folder."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, repo_type, commit_message):
        self.calls.append(("upload_folder", repo_id, repo_type))
        shutil.copytree(folder_path, self.root / repo_id.replace("/", "__"))

    def uploaded(self, repo_id) -> Path:
        return self.root / repo_id.replace("/", "__")


def card_metadata(card) -> dict:
    """The YAML header of a card: a README path or a ``ModelCard``."""
    text = card.read_text() if isinstance(card, Path) else str(card)
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def api(tmp_path):
    return RecordingApi(tmp_path / "hub")


EVALUATION = {"student_accuracy": 0.9611, "teacher_accuracy": 0.9806, "agreement": 0.9667, "num_examples": 360,
              "student_parameters": 26826, "teacher_parameters": 302506, "compression_ratio": 11.28,
              "student_size_bytes": 120000, "teacher_size_bytes": 1250000, "student_latency_ms": 0.9,
              "teacher_latency_ms": 1.7, "dataset_name": "sklearn:digits", "split": "test", "device": "CPU, 2 threads"}


def saved_student(tmp_path, evaluated=True) -> Path:
    folder = tmp_path / "student"
    tiny_vit(num_labels=10, names=NAMES, deit=True).save_pretrained(folder)
    (folder / "training_args.bin").write_bytes(b"pickle")  # what Trainer.save_model leaves: must not be pushed
    write_sidecar(folder, provenance={"mode": "cgan", "teacher": "me/vit-teacher", "train_dataset": "10000 images",
                                      "training": {"epochs": 10, "seed": 42}, "command": "hf-dfkd demo"})
    if evaluated:
        write_sidecar(folder, evaluation=EVALUATION)
    return folder


def test_a_real_data_student_card_is_not_tagged_data_free(tmp_path):
    folder = saved_student(tmp_path)
    assert "data-free-knowledge-distillation" in card_metadata(student_card(folder))["tags"]
    write_sidecar(folder, provenance={**read_sidecar(folder)["provenance"], "mode": "real-data"})
    card = student_card(folder)
    meta = card_metadata(card)
    assert "mode-real-data" in meta["tags"] and "data-free-knowledge-distillation" not in meta["tags"]
    assert "imitates the teacher on the real training images" in str(card)


def test_push_student_uploads_a_loadable_model_with_model_index(tmp_path, api):
    files = push_student(saved_student(tmp_path), "me/tiny-student", api=api, private=True)
    assert files == ["README.md", "config.json", "hf_dfkd.json", "model.safetensors"]
    assert api.calls[0] == ("create_repo", "me/tiny-student", {"repo_type": "model", "private": True, "exist_ok": True})
    meta = card_metadata(api.uploaded("me/tiny-student") / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert "mode-cgan" in meta["tags"] and meta["base_model"] == "me/vit-teacher"
    results = meta["model-index"][0]["results"]
    values = {(m["type"], m["name"]): m["value"] for r in results for m in r["metrics"]}
    assert values[("accuracy", "student accuracy")] == 0.9611 and values[("accuracy", "teacher accuracy")] == 0.9806
    assert values[("compression_ratio", "teacher / student parameters")] == 11.28
    assert all(r["dataset"]["split"] == "test" for r in results)
    body = (api.uploaded("me/tiny-student") / "README.md").read_text()
    assert 'from_pretrained("me/tiny-student")' in body and "96.11%" in body and "`cgan`" in body
    model = AutoModelForImageClassification.from_pretrained(api.uploaded("me/tiny-student"))
    assert model.config.id2label[3] == "digit_3"


def test_push_student_needs_a_real_split_evaluation(tmp_path, api):
    with pytest.raises(ValueError, match="run `hf-dfkd evaluate"):
        push_student(saved_student(tmp_path, evaluated=False), "me/s", api=api)
    assert api.calls == []  # nothing created, nothing uploaded


def make_pipeline():
    torch.manual_seed(0)
    g = ConditionalGenerator(num_classes=10, image_size=8, num_channels=1, latent_dim=16, embedding_dim=8,
                             channels=(16, 8, 8))
    pipe = SyntheticImagePipeline(image_generator=g, teacher=tiny_vit(num_labels=10, names=NAMES).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_push_synthetic_dataset_in_hub_layout(tmp_path, api):
    make_pipeline().write_dataset(25, tmp_path / "synthetic", seed=0, teacher_logits=True, quality={"FID": 12.5})
    files = push_synthetic_dataset(tmp_path / "synthetic", "me/synthetic-digits", api=api)
    assert files == ["README.md", "data/train-00000-of-00001.parquet", "hf_dfkd.json"]
    assert api.calls[0][2]["repo_type"] == "dataset" and api.calls[1] == ("upload_folder", "me/synthetic-digits", "dataset")
    folder = api.uploaded("me/synthetic-digits")
    meta = card_metadata(folder / "README.md")
    assert "mode-cgan" in meta["tags"] and meta["configs"][0]["data_files"][0]["split"] == "train"
    assert meta["size_categories"] == ["n<1K"]
    body = (folder / "README.md").read_text()
    assert "| digit_0 | 3 |" in body and "FID: 12.5" in body and "teacher accuracy on the images" in body
    reloaded = load_dataset(str(folder), split="train")  # as load_dataset("me/synthetic-digits") would read it
    assert len(reloaded) == 25 and reloaded.features["label"].names == NAMES
    assert reloaded[0]["image"].size == (8, 8) and len(reloaded[0]["teacher_logits"]) == 10


def test_push_pipeline_with_card(tmp_path, api):
    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path / "pipeline")
    write_sidecar(tmp_path / "pipeline", teacher="me/vit-teacher", quality={"teacher accuracy": 0.93},
                  generator_parameters=sum(p.numel() for p in pipe.image_generator.parameters()),
                  gan={"steps": 400, "lambda_attn": 1.0})
    files = push_pipeline(tmp_path / "pipeline", "me/generator", api=api)
    assert "README.md" in files and "model_index.json" in files
    assert "image_generator/diffusion_pytorch_model.safetensors" in files and "teacher/model.safetensors" in files
    folder = api.uploaded("me/generator")
    meta = card_metadata(folder / "README.md")
    assert meta["library_name"] == "diffusers" and "mode-cgan" in meta["tags"]
    body = (folder / "README.md").read_text()
    assert "teacher accuracy: 0.93" in body and "- lambda_attn: 1.0" in body and "- steps: 400" in body
    loaded = SyntheticImagePipeline.from_pretrained(folder)
    assert loaded.class_names == NAMES


def test_bad_folders_are_refused_before_any_upload(tmp_path, api):
    with pytest.raises(FileNotFoundError, match="not a saved student"):
        push_student(tmp_path, "me/x", api=api)
    with pytest.raises(FileNotFoundError, match="not a synthetic dataset"):
        push_synthetic_dataset(tmp_path, "me/x", api=api)
    with pytest.raises(FileNotFoundError, match="not a saved pipeline"):
        push_pipeline(tmp_path, "me/x", api=api)
    assert api.calls == []
