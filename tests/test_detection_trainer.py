"""DetrDistillationTrainer: both target modes train and log their components; bad pairs are refused early."""

import pytest
import torch
from transformers import ConditionalDetrConfig, ConditionalDetrForObjectDetection, ResNetConfig

from hf_dfkd.detection import (
    DetectionTransform,
    UnsupportedDetectorError,
    build_detector,
    detection_processor,
    make_digits_detection_dataset,
)
from hf_dfkd.detection.trainer import DetrDistillationConfig, DetrDistillationTrainer

NAMES = [str(i) for i in range(10)]
SIZE = (64, 64)


def tiny(family="detr", queries=5, seed=0, names=NAMES):
    return build_detector(family, class_names=names, image_size=SIZE, num_queries=queries, d_model=32,
                          encoder_layers=1, decoder_layers=1, attention_heads=2, backbone_hidden_sizes=(8, 16, 32),
                          seed=seed)


@pytest.fixture(scope="module")
def data():
    d = make_digits_detection_dataset(num_train=32, num_test=16, seed=0)
    transform = DetectionTransform(detection_processor(SIZE), SIZE)
    return d["train"].with_transform(transform), d["test"].with_transform(transform)


def config(tmp_path, mode, **kw):
    return DetrDistillationConfig(str(tmp_path / mode), target_mode=mode, per_device_train_batch_size=8,
                                  per_device_eval_batch_size=8, report_to="none", logging_steps=2, use_cpu=True,
                                  save_strategy="no", confidence_threshold=0.05, learning_rate=1e-3, **kw)


@pytest.mark.parametrize("mode, student_family, components", [
    ("paired", "detr", {"cls_loss", "box_loss", "kd_loss"}),
    ("hungarian", "detr", {"cls_loss", "box_loss", "giou_loss", "kd_loss", "matched"}),
    ("hungarian", "yolos", {"cls_loss", "box_loss", "giou_loss", "kd_loss", "matched"}),
])
def test_both_target_modes_train_log_components_and_evaluate_map(tmp_path, data, mode, student_family, components):
    train, test = data
    trainer = DetrDistillationTrainer(tiny(student_family, seed=1), tiny(), config(tmp_path, mode, max_steps=12),
                                      train_dataset=train, eval_dataset=test)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert components <= set(logs[0])
    metrics = trainer.evaluate()
    assert {"eval_map", "eval_map_50", "eval_map_75"} <= set(metrics)
    assert {f"eval_{c}" for c in components} <= set(metrics)
    assert metrics["eval_loss"] < before  # the student moved towards the teacher


def test_sigmoid_families_are_refused_not_mis_distilled(tmp_path):
    config_ = ConditionalDetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
                                    backbone_config=ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1],
                                                                 embedding_size=8, out_features=["stage2"]),
                                    d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                    decoder_attention_heads=2, num_queries=5, num_labels=10)
    with pytest.raises(UnsupportedDetectorError, match="sigmoids without a no-object class"):
        DetrDistillationTrainer(ConditionalDetrForObjectDetection(config_), tiny(), config(tmp_path, "hungarian"))


def test_label_set_mismatch_and_query_mismatch_are_refused(tmp_path):
    other = tiny(names=[str(i) for i in range(9, -1, -1)])
    with pytest.raises(ValueError, match="different label sets"):
        DetrDistillationTrainer(other, tiny(), config(tmp_path, "hungarian"))
    with pytest.raises(ValueError, match="teacher has 5 queries and the student 3"):
        DetrDistillationTrainer(tiny(queries=3), tiny(), config(tmp_path, "paired"))
    DetrDistillationTrainer(tiny(queries=3), tiny(), config(tmp_path, "hungarian"))  # fine with matching


def test_config_validates_its_fields(tmp_path):
    with pytest.raises(ValueError, match="target_mode"):
        config(tmp_path, "index")
    with pytest.raises(ValueError, match="confidence_threshold"):
        DetrDistillationConfig(str(tmp_path), confidence_threshold=1.5)
    with pytest.raises(TypeError, match="DetrDistillationConfig"):
        from transformers import TrainingArguments

        DetrDistillationTrainer(tiny(), tiny(), TrainingArguments(str(tmp_path)))


def test_load_detector_says_what_is_wrong_before_any_download(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from hf_dfkd.detection import load_detector

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector(str(tmp_path / "missing"), "teacher")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_detector(str(tmp_path / "empty"), "teacher")
    ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=8)).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="is not an object detector"):
        load_detector(str(tmp_path / "vit"), "teacher")
    tiny().save_pretrained(tmp_path / "detr")
    assert load_detector(str(tmp_path / "detr")).config.model_type == "detr"


def test_fresh_detr_can_train_from_scratch_distinct_queries_and_trainable_backbone():
    model = tiny()
    queries = model.model.query_position_embeddings.weight
    assert 0.7 < queries.std().item() < 1.3  # N(0, 1) as in DETR, not transformers' 0.02 (queries would collapse)
    backbone = model.model.backbone.model
    assert all(p.requires_grad for p in backbone.parameters())  # DETR freezes the stem for pretrained weights
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_parameter_count_is_the_same_after_a_reload(tmp_path):
    from hf_dfkd.detection import count_parameters, load_detector

    model = tiny()
    model.save_pretrained(tmp_path / "m")
    assert count_parameters(load_detector(str(tmp_path / "m"))) == count_parameters(model)


def test_a_trained_backbone_reloads_into_detrs_frozen_batch_norm_without_unexpected_keys(tmp_path):
    from safetensors.torch import load_file

    from hf_dfkd.detection import load_detector

    model = tiny().train()
    model(pixel_values=torch.randn(2, 3, 64, 64))  # updates the batch-norm statistics
    model.eval().save_pretrained(tmp_path / "m")
    assert not any(k.endswith("num_batches_tracked") for k in load_file(tmp_path / "m" / "model.safetensors"))
    reloaded = load_detector(str(tmp_path / "m"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).pred_boxes, model(pixel_values=x).pred_boxes)
