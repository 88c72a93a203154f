"""The `hf-dfkd` command line: the whole chain on digits (tiny sizes), each step on its own, and bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk
from safetensors.torch import load_file

from hf_dfkd.cli import main
from hf_dfkd.io import atomic_folder

TINY = ["--teacher_hidden_size", "32", "--teacher_layers", "2", "--teacher_heads", "2", "--teacher_epochs", "6", "--teacher_learning_rate", "3e-3", "--teacher_batch_size", "32",
        "--generator_channels", "32", "16", "8", "--discriminator_channels", "16", "32", "32", "--gan_steps", "10",
        "--gan_batch_size", "32", "--num_synthetic", "105", "--student_hidden_size", "16", "--student_layers", "1",
        "--student_epochs", "1", "--student_batch_size", "32", "--seed", "3"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain") / "demo"
    assert main(["demo", "--output_dir", str(out), *TINY]) == 0
    return out


def test_demo_writes_every_artifact_and_results(demo_run):
    out = demo_run
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "cgan" and results["synthetic_images"] == 105
    assert results["num_examples"] == 360 and results["split"] == "test"  # the real held-out digits
    assert 0 <= results["student_accuracy"] <= 1 and results["teacher_parameters"] > results["student_parameters"]
    assert set(results["seconds"]) >= {"teacher", "class attention probes", "guided cGAN", "synthetic dataset",
                                       "data-free student", "evaluation", "total"}
    for name in ("samples.png", "gan_curves.png", "distillation_curves.png", "class_attention_probes.safetensors"):
        assert (out / name).is_file(), name
    assert load_file(str(out / "class_attention_probes.safetensors"))["probes"].shape == (10, 16)
    # the student is a plain checkpoint with a model card carrying its real-split accuracy; no pickle in it
    student = out / "student"
    assert {"config.json", "model.safetensors", "README.md", "hf_dfkd.json"} <= {p.name for p in student.iterdir()}
    assert not (student / "training_args.bin").exists()
    card = (student / "README.md").read_text()
    assert "model-index" in card and f"{results['student_accuracy']:.6f}".rstrip("0") in card and "mode-cgan" in card
    # the synthetic set: balanced (105 = 10 x 10 + 5), named classes, teacher logits, a card with the mode
    synthetic = load_from_disk(str(out / "synthetic"))
    assert len(synthetic) == 105 and synthetic.features["label"].names == [str(i) for i in range(10)]
    assert "teacher_logits" in synthetic.column_names
    card = (out / "synthetic" / "README.md").read_text()
    assert "mode-cgan" in card and "teacher-feature FID vs the real test split (105 vs 360 images)" in card
    assert (out / "gan" / "pipeline" / "model_index.json").is_file() and (out / "gan" / "pipeline" / "README.md").is_file()
    # nothing half-written is left behind
    assert not [p for p in out.rglob("*.tmp")]


def test_rerun_resumes_and_other_arguments_are_refused(demo_run, capsys):
    timings = json.loads((demo_run / "timings.json").read_text())
    assert main(["demo", "--output_dir", str(demo_run), *TINY]) == 0
    after = json.loads((demo_run / "timings.json").read_text())
    # nothing was remade but the evaluation
    assert {k: v for k, v in after.items() if k != "evaluation"} == {k: v for k, v in timings.items() if k != "evaluation"}
    assert main(["demo", "--output_dir", str(demo_run), *TINY[:-2], "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "other arguments" in err and "seed: 3 -> 4" in err and "--overwrite true" in err


def test_each_step_on_its_own(demo_run, tmp_path):
    teacher = str(demo_run / "teacher")
    data = ["--dataset_name", "sklearn:digits"]
    assert main(["probes", "--teacher", teacher, *data, "--output_dir", str(tmp_path / "probes")]) == 0
    probes = tmp_path / "probes" / "class_attention_probes.safetensors"
    assert load_file(str(probes))["probes"].shape == (10, 16)

    gan = tmp_path / "gan"
    assert main(["train-generator", "--teacher", teacher, *data, "--probes", str(probes), "--output_dir", str(gan),
                 "--max_steps", "4", "--batch_size", "16", "--generator_channels", "16", "8", "8",
                 "--discriminator_channels", "8", "8", "8", "--eval_steps", "2", "--save_steps", "2"]) == 0
    assert (gan / "pipeline" / "model_index.json").is_file() and (gan / "samples").is_dir()

    config = tmp_path / "synth.yaml"  # arguments from a YAML file, the command line overriding them
    config.write_text(f"pipeline: {gan / 'pipeline'}\noutput_dir: {tmp_path / 'synthetic'}\nnum_images: 50\nseed: 1\n")
    assert main(["synthesize", "--config", str(config), "--num_images", "23"]) == 0
    synthetic = load_from_disk(str(tmp_path / "synthetic"))
    assert len(synthetic) == 23 and len(synthetic[0]["teacher_logits"]) == 10

    student = tmp_path / "student"
    assert main(["distill", "--teacher", teacher, "--dataset_name", str(tmp_path / "synthetic"), "--output_dir",
                 str(student), "--student_hidden_size", "16", "--student_layers", "1", "--num_train_epochs", "1",
                 "--per_device_train_batch_size", "8", "--use_cpu", "true"]) == 0
    provenance = json.loads((student / "hf_dfkd.json").read_text())["provenance"]
    assert provenance["mode"] == "cgan" and provenance["train_dataset"].startswith("23 images")

    assert main(["evaluate", "--student", str(student), "--teacher", teacher, *data, "--split", "test"]) == 0
    evaluation = json.loads((student / "hf_dfkd.json").read_text())["evaluation"]
    assert evaluation["num_examples"] == 360 and "model-index" in (student / "README.md").read_text()


def _bad(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_bad_paths_and_artifacts_give_clear_errors(demo_run, tmp_path, capsys):
    teacher = str(demo_run / "teacher")
    _bad(["probes", "--teacher", str(tmp_path / "missing"), "--dataset_name", "sklearn:digits",
          "--output_dir", str(tmp_path / "p")], capsys, "does not exist")
    # a folder that is not an image classifier: the generator pipeline, and a text model's config
    _bad(["evaluate", "--student", teacher, "--teacher", str(demo_run / "gan" / "pipeline"),
          "--dataset_name", "sklearn:digits"], capsys, "no config.json")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    _bad(["probes", "--teacher", str(tmp_path / "bert"), "--dataset_name", "sklearn:digits", "--output_dir",
          str(tmp_path / "p")], capsys, "not an image classifier", "BertModel")
    _bad(["probes", "--teacher", teacher, "--dataset_name", str(tmp_path / "nope"), "--output_dir",
          str(tmp_path / "p")], capsys, "does not exist")
    _bad(["synthesize", "--pipeline", teacher, "--output_dir", str(tmp_path / "s")], capsys, "not a pipeline folder")
    _bad(["synthesize", "--pipeline", str(demo_run / "gan" / "pipeline"), "--output_dir", str(demo_run)], capsys,
         "exists", "--overwrite")
    assert not (tmp_path / "p").exists()


def test_dataset_without_the_needed_columns(demo_run, tmp_path, capsys):
    Dataset.from_dict({"img": [[0]], "y": [1]}).save_to_disk(str(tmp_path / "odd"))
    _bad(["probes", "--teacher", str(demo_run / "teacher"), "--dataset_name", str(tmp_path / "odd"),
          "--output_dir", str(tmp_path / "p")], capsys, "'label'", "it has ['img', 'y']")
    _bad(["demo", "--output_dir", str(tmp_path / "d"), "--dataset_name", str(tmp_path / "odd"), "--test_split",
          "train", "--teacher_name_or_path", str(demo_run / "teacher")], capsys, "'image' (the images)", "['img', 'y']")
    _bad(["evaluate", "--student", str(demo_run / "student"), "--teacher", str(demo_run / "teacher"),
          "--dataset_name", "sklearn:digits", "--split", "validation"], capsys, "no split 'validation'", "['train', 'test']")


def test_contradicting_options(demo_run, tmp_path, capsys):
    _bad(["train-generator", "--teacher", str(demo_run / "teacher"), "--dataset_name", "sklearn:digits",
          "--output_dir", str(tmp_path / "g")], capsys, "--lambda_attn > 0 needs --probes")
    _bad(["demo", "--output_dir", str(tmp_path / "d"), "--test_split", "train"], capsys, "held out")
    _bad(["push", "--student", str(demo_run / "student")], capsys, "--student and --student_repo_id go together")
    _bad(["push"], capsys, "nothing to push")
    _bad(["push", "--student", str(demo_run / "student"), "--student_repo_id", "me/s"], capsys, "offline mode")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"num_imgs": 3}))
    _bad(["synthesize", "--config", str(config)], capsys, "unknown arguments ['num_imgs']")
    _bad(["distill", "--teacher", str(demo_run / "teacher"), "--dataset_name", str(demo_run / "synthetic"),
          "--output_dir", str(tmp_path / "s"), "--temperature", "0"], capsys, "temperature must be > 0")
    assert not (tmp_path / "s").exists() and not (tmp_path / "g" / "pipeline").exists()
    assert main(["frobnicate"]) == 2


def test_atomic_folder_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "artifact") as tmp:
            Path(tmp, "weights").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(tmp_path / "artifact") as tmp:
        Path(tmp, "weights").write_text("whole")
    assert (tmp_path / "artifact" / "weights").read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_console_script_is_installed():
    exe = shutil.which("hf-dfkd") or str(Path(sys.executable).with_name("hf-dfkd"))
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "demo" in proc.stdout and "train-generator" in proc.stdout
