"""The recipes: presets parse as documented, and the CIFAR-10 recipe's chain runs on a tiny RGB set made here."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

from hf_dfkd.cli import parse_arguments
from hf_dfkd import ChainArguments

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_mnist_presets_match_the_paper_and_the_cpu_budget():
    recipe = load_recipe("mnist_vit")
    (paper,) = parse_arguments((ChainArguments,), ["--preset", "paper"], presets=recipe.PRESETS)
    assert (paper.teacher_hidden_size, paper.teacher_layers, paper.student_hidden_size, paper.student_heads) == (512, 3, 128, 2)
    (cpu,) = parse_arguments((ChainArguments,), ["--preset", "cpu", "--student_epochs", "3"], presets=recipe.PRESETS,
                             defaults={"dataset_name": "ylecun/mnist"})
    assert cpu.student_epochs == 3 and cpu.dataset_name == "ylecun/mnist" and cpu.output_dir == "outputs/mnist_cpu"
    with pytest.raises(ValueError, match="unknown --preset 'gpu'"):
        parse_arguments((ChainArguments,), ["--preset", "gpu"], presets=recipe.PRESETS)


def tiny_rgb_dataset(path: Path) -> None:
    rng = np.random.default_rng(0)
    features = Features({"img": Image(), "label": ClassLabel(names=["plane", "car", "bird"])})

    def split(n):
        labels = np.arange(n) % 3
        # one colour per class, so that even a tiny teacher tells them apart
        images = [PILImage.fromarray(np.clip(rng.normal(60 + 70 * y, 20, (32, 32, 3)), 0, 255).astype(np.uint8))
                  for y in labels]
        return Dataset.from_dict({"img": images, "label": labels.tolist()}, features=features)

    DatasetDict({"train": split(120), "test": split(30)}).save_to_disk(str(path))


def test_cifar10_recipe_smoke_preset_runs_the_chain_on_rgb_images(tmp_path):
    tiny_rgb_dataset(tmp_path / "data")
    recipe = load_recipe("cifar10_deit")
    out = tmp_path / "run"
    results = recipe.main(["--preset", "smoke", "--dataset_name", str(tmp_path / "data"), "--output_dir", str(out),
                           "--teacher_epochs", "3", "--probe_images", "120", "--gan_steps", "4", "--gan_batch_size",
                           "16", "--num_synthetic", "30", "--use_cpu", "true"])
    assert results["num_examples"] == 30 and results["mode"] == "cgan"
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["image_column"] == "img" and saved["args"]["teacher_model_type"] == "deit"
    assert json.loads((out / "student" / "config.json").read_text())["model_type"] == "vit"
    assert json.loads((out / "gan" / "pipeline" / "image_generator" / "config.json").read_text())["num_channels"] == 3


def test_digits_kd_recipe_writes_an_evaluated_student(tmp_path):
    recipe = load_recipe("digits_kd")
    results = recipe.main(["--output_dir", str(tmp_path / "kd"), "--teacher_epochs", "2", "--num_train_epochs", "1",
                           "--teacher_hidden_size", "32", "--teacher_layers", "1", "--use_cpu", "true",
                           "--disable_tqdm", "true"])
    assert results["mode"] == "real-data" and results["num_examples"] == 360
    assert json.loads((tmp_path / "kd" / "results.json").read_text())["recipe"]["teacher_layers"] == 1
    card = (tmp_path / "kd" / "student" / "README.md").read_text()
    assert "mode-real-data" in card and "model-index" in card
    assert not (tmp_path / "kd" / "student" / "training_args.bin").exists()
