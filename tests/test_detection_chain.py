"""The detection chain end to end on the embedded set, resuming, and the drone recipe's smoke preset."""

import importlib.util
import json
import os

import pytest
import torch

from hf_dfkd.detection import DetectionChainArguments, run_detection_chain
from hf_dfkd.hub import read_sidecar

# a DETR small enough to build and train in a test
TINY_DETR = dict(class_names=[str(i) for i in range(10)], image_size=(64, 64), num_queries=5, d_model=16,
                 encoder_layers=1, decoder_layers=1, attention_heads=2, backbone_hidden_sizes=(8, 8, 16))
RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "detr_drone.py")


def load_recipe():
    spec = importlib.util.spec_from_file_location("detr_drone", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_args(out, **kw):
    preset = {**load_recipe().PRESETS["smoke"], "output_dir": out, "use_cpu": True, **kw}
    return DetectionChainArguments(**preset)


def test_chain_writes_every_artifact_with_cards_and_resumes(tmp_path):
    out = str(tmp_path / "run")
    results = run_detection_chain(smoke_args(out))
    assert {"teacher", "paired", "hungarian"} <= set(results)
    for key in ("teacher", "paired", "hungarian"):
        assert {"map", "map_50", "parameters", "latency_s_per_image", "map_per_class"} <= set(results[key])
    assert results["teacher_over_student_parameters"]["paired"] > 1
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["synthetic_images"] == results["synthetic_images"] > 0
    assert set(saved["seconds"]) >= {"teacher", "guided cGAN", "synthetic dataset", "student (paired)",
                                     "student (hungarian)", "evaluation", "total"}
    for mode in ("paired", "hungarian"):
        folder = os.path.join(out, f"student-{mode}")
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(os.listdir(folder))
        sidecar = read_sidecar(folder)
        assert sidecar["task"] == "object-detection" and sidecar["provenance"]["target_mode"] == mode
        card = open(os.path.join(folder, "README.md")).read()
        assert "pipeline_tag: object-detection" in card and f"target-mode-{mode}" in card
    assert read_sidecar(os.path.join(out, "synthetic"))["task"] == "object-detection"
    assert os.path.isfile(os.path.join(out, "gan", "pipeline", "model_index.json"))

    # a second run with the same arguments loads every artifact instead of making it again
    timings = open(os.path.join(out, "timings.json")).read()
    stamp = os.path.getmtime(os.path.join(out, "student-paired", "model.safetensors"))
    again = run_detection_chain(smoke_args(out))
    assert again["paired"]["map"] == results["paired"]["map"]
    assert os.path.getmtime(os.path.join(out, "student-paired", "model.safetensors")) == stamp
    assert json.loads(open(os.path.join(out, "timings.json")).read()).keys() == json.loads(timings).keys()
    with pytest.raises(FileExistsError, match="num_synthetic"):
        run_detection_chain(smoke_args(out, num_synthetic=30))


def test_recipe_smoke_preset_runs_one_target_mode(tmp_path):
    out = str(tmp_path / "recipe")
    results = load_recipe().main(["--preset", "smoke", "--output_dir", out, "--use_cpu", "true",
                                  "--target_modes", "hungarian", "--student_family", "yolos",
                                  "--student_patch_size", "16", "--lambda_bn", "0.01", "--real_data_reference", "true",
                                  "--detection_query", "layout", "--layout_box_size", "0.1", "0.4"])
    assert "hungarian" in results and "paired" not in results
    # the real-data KD reference: same student, same steps, real train images, recorded as not data-free
    reference_key = "hungarian-real-data"
    assert "map_50" in results[reference_key] and reference_key in results["student_over_teacher_map_50"]
    data_free, reference = (read_sidecar(os.path.join(out, f"student-{k}")) for k in ("hungarian", reference_key))
    assert reference["provenance"]["mode"] == "real-data" and data_free["provenance"]["mode"] == "cgan"
    assert reference["log_history"][-1]["step"] == data_free["log_history"][-1]["step"]
    card = open(os.path.join(out, "student-hungarian-real-data", "README.md")).read()
    assert "mode-real-data" in card and "data-free-knowledge-distillation" not in card
    assert "the real training images" in card
    assert json.load(open(os.path.join(out, "student-hungarian", "config.json")))["model_type"] == "yolos"
    generator = read_sidecar(os.path.join(out, "gan", "pipeline"))  # the batch-norm prior reached the GAN
    assert generator["gan"]["detection_query"] == "layout" and generator["gan"]["layout_box_size"] == [0.1, 0.4]
    assert "median IoU of the teacher's box with the layout box (eval grid)" in generator["quality"]
    assert generator["gan"]["lambda_bn"] == 0.01 and "batch-norm statistics loss (eval grid)" in generator["quality"]


@pytest.mark.parametrize("kw, message", [
    ({"target_modes": ["index"]}, "target_modes"),
    ({"image_size": 50}, "multiple of 16"),
    ({"score_threshold": 0.0}, "score_threshold"),
    ({"test_split": "train"}, "held out"),
    ({"detection_query": "layout", "layout_box_size": [0.3, 0.1]}, "layout_box_size"),
    ({"lambda_box": -1.0}, "lambda_box must be >= 0"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        DetectionChainArguments(output_dir=str(tmp_path), **kw)
    assert not os.listdir(tmp_path)


def test_bad_boxes_in_the_real_data_stop_the_chain_before_training(tmp_path, monkeypatch):
    from hf_dfkd.detection import chain, make_digits_detection_dataset

    data = make_digits_detection_dataset(num_train=8, num_test=4)
    broken = data["train"].map(lambda o: {"objects": {**o, "bbox": [[60.0, 60.0, 24.0, 24.0]] * len(o["bbox"])}},
                               input_columns=["objects"], features=data["train"].features)
    monkeypatch.setattr(chain, "load_detection_dataset", lambda name, split, seed=0: broken if split == "train"
                        else data["test"])
    with pytest.raises(ValueError, match="lies outside the 64x64 image"):
        run_detection_chain(smoke_args(str(tmp_path / "run")))
    assert not os.path.exists(tmp_path / "run" / "teacher")


def test_detection_student_and_dataset_push_with_detection_cards(tmp_path):
    import shutil

    import yaml

    from hf_dfkd.hub import push_student, push_synthetic_dataset

    class RecordingApi:
        def __init__(self):
            self.folders = {}

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, *, repo_id, folder_path, repo_type, commit_message):
            self.folders[repo_id] = tmp_path / "hub" / repo_id.replace("/", "__")
            shutil.copytree(folder_path, self.folders[repo_id])

    out = str(tmp_path / "run")
    run_detection_chain(smoke_args(out, target_modes=["hungarian"]))
    api = RecordingApi()
    files = push_student(os.path.join(out, "student-hungarian"), "me/tiny-detr", api=api)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    meta = yaml.safe_load(open(api.folders["me/tiny-detr"] / "README.md").read().split("---\n")[1])
    assert meta["pipeline_tag"] == "object-detection"
    metrics = {m["name"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert {"student mAP@0.5", "teacher mAP@0.5"} <= metrics
    push_synthetic_dataset(os.path.join(out, "synthetic"), "me/synthetic-digits", api=api)
    card = open(api.folders["me/synthetic-digits"] / "README.md").read()
    assert "- object-detection" in card and "me/synthetic-digits" in card


def test_output_dir_claim_accepts_arguments_added_since_with_their_defaults(tmp_path):
    from hf_dfkd.chain import _claim_output_dir

    args = DetectionChainArguments(output_dir=str(tmp_path / "run"))
    _claim_output_dir(args)
    path = tmp_path / "run" / "chain_args.json"
    saved = json.loads(path.read_text())
    del saved["student_ffn_dim"]  # a run made before that argument existed
    path.write_text(json.dumps(saved))
    _claim_output_dir(args)  # same run: resumes
    saved["num_queries"] = 7
    path.write_text(json.dumps(saved))
    with pytest.raises(FileExistsError, match="num_queries: 7 -> 10"):
        _claim_output_dir(args)


def test_a_synthetic_set_smaller_than_one_batch_is_a_clear_error(tmp_path):
    from hf_dfkd.detection import (DetrDistillationConfig, build_detector, distill_detector,
                                   make_digits_detection_dataset)

    kw = TINY_DETR
    tiny_set = make_digits_detection_dataset(num_train=3, num_test=1)["train"]
    config = DetrDistillationConfig(str(tmp_path / "student"), per_device_train_batch_size=8, use_cpu=True,
                                    dataloader_drop_last=True, report_to="none")
    with pytest.raises(ValueError, match="has 3 images, fewer than one batch of 8"):
        distill_detector(build_detector("detr", **kw), build_detector("detr", **kw), tiny_set, config,
                         image_size=(64, 64))
    assert not os.path.exists(tmp_path / "student")


def test_student_augmentation_shows_the_student_new_views_labelled_by_the_teacher(tmp_path):
    from hf_dfkd.detection import (DetrDistillationConfig, build_detector, distill_detector,
                                   make_digits_detection_dataset)

    kw = TINY_DETR
    data = make_digits_detection_dataset(num_train=8, num_test=1)["train"]
    config = DetrDistillationConfig(str(tmp_path / "student"), per_device_train_batch_size=8, use_cpu=True,
                                    max_steps=1, report_to="none", save_strategy="no")
    torch.manual_seed(0)
    trainer = distill_detector(build_detector("detr", **kw), build_detector("detr", **kw), data, config,
                               image_size=(64, 64), augmentation=True)
    views = [trainer.train_dataset[0]["pixel_values"] for _ in range(4)]
    assert any(not torch.equal(views[0], v) for v in views[1:])  # a new view at every fetch
    assert read_sidecar(str(tmp_path / "student"))["provenance"]["training"]["augmentation"] is True
