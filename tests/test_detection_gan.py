"""The DETR-guided GAN (class probes, guidance through the teacher) and the detection pipeline's dataset."""

import os

import pytest
import torch
from datasets import load_from_disk

from hf_dfkd.detection import build_detector, check_detection_dataset, make_digits_detection_dataset
from hf_dfkd.detection.gan_trainer import (
    DetectionClassProbes,
    DetectionGANConfig,
    DetectionGANTrainer,
    DetectionGANTransform,
    compute_detection_class_probes,
)
from hf_dfkd.detection.pipeline import DetectionSyntheticPipeline
from hf_dfkd.hub import read_sidecar
from hf_dfkd.models import ConditionalDiscriminator, ConditionalGenerator, layout_boxes

NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def teacher():
    return build_detector("detr", class_names=NAMES, image_size=(64, 64), num_queries=5, d_model=32,
                          encoder_layers=1, decoder_layers=1, attention_heads=2, backbone_hidden_sizes=(8, 16, 32),
                          seed=0).eval()


@pytest.fixture(scope="module")
def data():
    return make_digits_detection_dataset(num_train=24, num_test=8, seed=0)


def gan(size=64):
    return (ConditionalGenerator(num_classes=10, image_size=size, num_channels=3, channels=(32, 16, 8)),
            ConditionalDiscriminator(num_classes=10, image_size=size, num_channels=3, channels=(8, 16, 32)))


def test_class_probes_are_cross_attention_maps_per_class_and_round_trip(tmp_path, teacher, data):
    probes = compute_detection_class_probes(teacher, data["train"], 64, correct_only=False, disable_tqdm=True)
    assert probes.probes.shape == (10, 16)  # 64 px / stride 16 = 4x4 encoder tokens
    torch.testing.assert_close(probes.probes.sum(-1), torch.ones(10))  # averages of softmax rows
    assert sum(probes.counts) == sum(len(o["category"]) for o in data["train"]["objects"])
    assert teacher.config._attn_implementation == "sdpa"  # eager only inside the computation
    probes.save(str(tmp_path))
    loaded = DetectionClassProbes.load(str(tmp_path))
    torch.testing.assert_close(loaded.probes, probes.probes)
    assert loaded.image_size == 64 and loaded.counts == probes.counts


def test_guidance_flows_through_the_frozen_teacher_into_the_generator(tmp_path, teacher, data):
    probes = compute_detection_class_probes(teacher, data["train"], 64, correct_only=False, disable_tqdm=True)
    g, d = gan()
    config = DetectionGANConfig(str(tmp_path / "gan"), max_steps=2, batch_size=8, eval_steps=2, logging_steps=1,
                                use_cpu=True, eval_images_per_class=1, lambda_diversity=0.0)
    trainer = DetectionGANTrainer(teacher, g, d, config, data["train"].with_transform(DetectionGANTransform(64)),
                                  class_probes=probes)
    fake = trainer.generator(torch.randn(4, 100), torch.tensor([0, 1, 2, 3]))
    total, parts = trainer.guidance_losses(fake, torch.tensor([0, 1, 2, 3]))
    assert set(parts) == {"det_loss", "bg_loss", "attn_loss"}
    total.backward()
    assert trainer.generator.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # frozen
    metrics = trainer.train()
    assert {"eval_teacher_accuracy", "eval_teacher_detects_class", "eval_teacher_detections_per_image",
            "eval_attn_loss"} <= set(metrics)
    assert {"det_loss", "bg_loss", "attn_loss"} <= set(trainer.log_history[0])
    assert teacher.config._attn_implementation == "sdpa"  # restored after training
    assert os.path.isfile(tmp_path / "gan" / "generator" / "diffusion_pytorch_model.safetensors")


def test_the_one_object_term_is_weighted_and_can_be_turned_off(tmp_path, teacher, data):
    g, d = gan()
    transformed = data["train"].with_transform(DetectionGANTransform(64))
    labels = torch.tensor([0, 1, 2, 3])
    fake = g(torch.randn(4, 100, generator=torch.Generator().manual_seed(0)), labels).detach()
    totals = {}
    for weight in (0.0, 1.0, 3.0):
        config = DetectionGANConfig(str(tmp_path / str(weight)), max_steps=1, batch_size=8, use_cpu=True,
                                    lambda_attn=0.0, lambda_background=weight)
        total, parts = DetectionGANTrainer(teacher, g, d, config, transformed).guidance_losses(fake, labels)
        assert ("bg_loss" in parts) == (weight > 0)
        totals[weight] = total.item()
    torch.testing.assert_close(torch.tensor(totals[3.0] - totals[0.0]), torch.tensor(3 * (totals[1.0] - totals[0.0])))
    with pytest.raises(ValueError, match="lambda_background must be >= 0"):
        DetectionGANConfig(str(tmp_path), lambda_background=-1.0)


def test_latent_query_mode_asks_the_query_picked_by_each_latent_for_the_class(tmp_path, teacher, data):
    g, d = gan()
    transformed = data["train"].with_transform(DetectionGANTransform(64))
    labels = torch.tensor([0, 1, 2, 3])
    latents = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    latents[:, :5] = torch.eye(5)[[4, 0, 2, 1]] * 5  # queries 4, 0, 2, 1 (the teacher has 5)
    fake = g(latents, labels).detach()
    config = DetectionGANConfig(str(tmp_path), max_steps=1, batch_size=8, use_cpu=True, lambda_attn=0.0,
                                lambda_background=0.0, detection_query="latent")
    trainer = DetectionGANTrainer(teacher, g, d, config, transformed)
    _, parts = trainer.guidance_losses(fake, labels, latents=latents)
    with torch.no_grad():
        probs = teacher(pixel_values=trainer.to_teacher(fake)).logits.softmax(-1)
    expected = -torch.log(probs[torch.arange(4), torch.tensor([4, 0, 2, 1]), labels] + 1e-8).mean()
    torch.testing.assert_close(parts["det_loss"], expected)
    best = DetectionGANTrainer(teacher, g, d, DetectionGANConfig(str(tmp_path / "best"), max_steps=1, batch_size=8,
                                                                 use_cpu=True, lambda_attn=0.0, lambda_background=0.0),
                               transformed).guidance_losses(fake, labels, latents=latents)[1]["det_loss"]
    assert best <= parts["det_loss"]  # the best query detects the class at least as well as any assigned one
    # a latent shorter than the query count cannot pick every query
    small = ConditionalGenerator(num_classes=10, image_size=64, num_channels=3, channels=(32, 16, 8), latent_dim=4)
    with pytest.raises(ValueError, match="latent_dim >= the teacher's 5 queries"):
        DetectionGANTrainer(teacher, small, d, config, transformed)
    with pytest.raises(ValueError, match="detection_query must be"):
        DetectionGANConfig(str(tmp_path), detection_query="random")


def test_layout_boxes_are_a_function_of_the_latent_inside_the_image_and_of_the_asked_sizes():
    latents = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))
    boxes = layout_boxes(latents, 0.05, 0.4)
    cx, cy, w, h = boxes.unbind(1)
    assert torch.equal(boxes, layout_boxes(latents.clone(), 0.05, 0.4))  # the generator can read its box off z
    assert (cx - w / 2 >= 0).all() and (cx + w / 2 <= 1 + 1e-6).all() and (cy - h / 2 >= 0).all()
    assert (cy + h / 2 <= 1 + 1e-6).all()
    side = (w * h).sqrt()  # the aspect ratio cancels
    assert side.min() >= 0.05 - 1e-6 and side.max() <= 0.4 + 1e-6
    assert side.min() < 0.06 and side.max() > 0.35  # the whole range is used
    assert ((w / h) <= 4 + 1e-4).all() and ((w / h) >= 0.25 - 1e-4).all()
    assert cx.std() > 0.2 and cy.std() > 0.2  # spread over the image, not at one place
    with pytest.raises(ValueError, match="at least 4 dimensions"):
        layout_boxes(latents[:, :3], 0.05, 0.4)


def test_a_layout_generator_is_told_where_the_box_is_and_round_trips(tmp_path):
    from hf_dfkd.models import layout_heatmap

    heat = layout_heatmap(torch.tensor([[0.28125, 0.78125, 0.1, 0.2], [0.9, 0.1, 0.01, 0.01]]), 16)
    assert heat.shape == (2, 1, 16, 16) and heat.max() <= 1
    assert divmod(heat[0, 0].argmax().item(), 16) == (12, 4)  # row (y) 0.78125, column (x) 0.28125: cell centres
    assert divmod(heat[1, 0].argmax().item(), 16) == (1, 14) and heat[1].max() > 0.5  # a sub-cell box still shows
    g = ConditionalGenerator(num_classes=10, image_size=64, num_channels=3, channels=(32, 16, 8),
                             layout_box_size=[0.1, 0.5])
    latents = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    moved = latents.clone()
    moved[:, :2] = -moved[:, :2]  # same everything but the box's place
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        assert not torch.allclose(g(latents, labels), g(moved, labels))
        torch.testing.assert_close(g.layout(latents), layout_boxes(latents, 0.1, 0.5))
        g.save_pretrained(str(tmp_path))
        loaded = ConditionalGenerator.from_pretrained(str(tmp_path))
        torch.testing.assert_close(loaded(latents, labels), g.eval()(latents, labels))
    assert loaded.config.layout_box_size == [0.1, 0.5]
    with pytest.raises(ValueError, match="layout_box_size must be"):
        ConditionalGenerator(layout_box_size=[0.5, 0.1])
    with pytest.raises(ValueError, match="latent_dim must be >= 4"):
        ConditionalGenerator(latent_dim=3, layout_box_size=[0.1, 0.5])


def test_layout_mode_asks_the_teacher_for_the_class_with_its_box_at_the_latents_layout(tmp_path, teacher, data):
    g = ConditionalGenerator(num_classes=10, image_size=64, num_channels=3, channels=(32, 16, 8),
                             layout_box_size=[0.1, 0.5])
    d = gan()[1]
    transformed = data["train"].with_transform(DetectionGANTransform(64))
    labels = torch.tensor([0, 1, 2, 3])
    latents = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    config = DetectionGANConfig(str(tmp_path), max_steps=2, batch_size=8, use_cpu=True, lambda_attn=0.0,
                                detection_query="layout", layout_box_size=[0.1, 0.5], lambda_box=2.0,
                                eval_steps=2, eval_images_per_class=1, logging_steps=1, lambda_diversity=0.0)
    trainer = DetectionGANTrainer(teacher, g, d, config, transformed)
    fake = trainer.generator(latents, labels)
    total, parts = trainer.guidance_losses(fake, labels, latents=latents)
    with torch.no_grad():
        out = teacher(pixel_values=trainer.to_teacher(fake))
    target = layout_boxes(latents, 0.1, 0.5)
    # the object query is the one DETR's matcher pairs with (class, layout box); its box is regressed onto it
    from transformers.loss.loss_for_object_detection import HungarianMatcher
    matched = HungarianMatcher(class_cost=1, bbox_cost=5, giou_cost=2)(
        {"logits": out.logits, "pred_boxes": out.pred_boxes},
        [{"class_labels": labels[i:i + 1], "boxes": target[i:i + 1]} for i in range(4)])
    query = torch.cat([q for q, _ in matched])
    from hf_dfkd.detection.losses import background_query_loss, box_regression_loss
    torch.testing.assert_close(parts["box_loss"], box_regression_loss(out.pred_boxes[torch.arange(4), query], target))
    probs = out.logits.softmax(-1)[torch.arange(4), query, labels]
    torch.testing.assert_close(parts["det_loss"], -torch.log(probs + 1e-8).mean())
    expected = parts["det_loss"] + 2.0 * parts["box_loss"] + background_query_loss(out.logits, query)
    torch.testing.assert_close(total, expected)
    total.backward()
    assert trainer.generator.net[0].weight.grad.abs().sum() > 0
    metrics = DetectionGANTrainer(teacher, *gan(), config, transformed).train()  # a generator without layouts
    assert 0 <= metrics["eval_layout_iou"] <= 1
    with pytest.raises(ValueError, match=r"draws layout boxes of \[0.1, 0.5\]"):
        DetectionGANTrainer(teacher, g, d, DetectionGANConfig(str(tmp_path), detection_query="layout",
                                                               layout_box_size=[0.1, 0.3]), transformed)
    with pytest.raises(ValueError, match="needs the generator's latents"):
        trainer.guidance_losses(fake.detach(), labels)
    with pytest.raises(ValueError, match="layout_box_size must be"):
        DetectionGANConfig(str(tmp_path), layout_box_size=[0.0, 0.5])
    small = ConditionalGenerator(num_classes=10, image_size=64, num_channels=3, channels=(32, 16, 8), latent_dim=3)
    with pytest.raises(ValueError, match="latent_dim >= 4"):
        DetectionGANTrainer(teacher, small, d, config, transformed)


def test_attention_guidance_needs_probes_at_the_generators_size(tmp_path, teacher, data):
    g, d = gan()
    config = DetectionGANConfig(str(tmp_path), max_steps=1, batch_size=8, use_cpu=True)
    transformed = data["train"].with_transform(DetectionGANTransform(64))
    with pytest.raises(ValueError, match="lambda_attn > 0 needs class_probes"):
        DetectionGANTrainer(teacher, g, d, config, transformed)
    wrong = DetectionClassProbes(torch.ones(10, 4) / 4, image_size=32)
    with pytest.raises(ValueError, match="computed at 32px"):
        DetectionGANTrainer(teacher, g, d, config, transformed, class_probes=wrong)
    teacher.config._attn_implementation  # still usable
    with pytest.raises(ValueError, match="class counts differ"):
        DetectionGANTrainer(teacher, ConditionalGenerator(num_classes=4, image_size=64, channels=(8, 8, 8)), d,
                            config, transformed, class_probes=wrong)


def test_pipeline_writes_a_hub_detection_dataset_annotated_by_the_teacher(tmp_path, teacher):
    g, _ = gan()
    pipe = DetectionSyntheticPipeline(image_generator=g, teacher=teacher)
    out = str(tmp_path / "synthetic")
    data = pipe.write_dataset(20, out, seed=0, score_threshold=0.05)
    assert 0 < len(data) <= 20
    assert data.features["objects"]["category"].feature.names == NAMES
    check_detection_dataset(data, class_names=NAMES)  # every box inside its 64x64 image, positive area
    row = data[0]
    assert row["image"].size == (64, 64) and (row["width"], row["height"]) == (64, 64)
    images = pipe.image_generator(torch.randn(1, 100), torch.tensor([0]))
    assert len(pipe.detect(images, 0.05)[0]["boxes"]) == len(pipe.detect(images, 0.05)[0]["labels"])
    info = read_sidecar(out)
    assert info["task"] == "object-detection" and info["num_generated"] == 20 and info["num_images"] == len(data)
    card = open(os.path.join(out, "README.md")).read()
    assert "task_categories:\n- object-detection" in card and "COCO" in card
    again = pipe.write_dataset(20, str(tmp_path / "again"), seed=0, score_threshold=0.05)
    assert again["objects"] == data["objects"]  # seeded


def test_pipeline_leaves_no_folder_when_the_teacher_detects_nothing(tmp_path, teacher):
    g, _ = gan()
    pipe = DetectionSyntheticPipeline(image_generator=g, teacher=teacher)
    out = str(tmp_path / "synthetic")
    with pytest.raises(ValueError, match="detected nothing"):
        pipe.write_dataset(8, out, score_threshold=0.999)
    assert not os.path.exists(out) and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="score_threshold"):
        pipe.write_dataset(8, out, score_threshold=1.5)
    kept = pipe.write_dataset(8, out, score_threshold=0.999, keep_empty=True)
    assert len(kept) == 8 and all(len(o["bbox"]) == 0 for o in kept["objects"])
    assert len(load_from_disk(out)) == 8


def test_the_batch_norm_prior_is_weighted_logged_and_its_hooks_removed_after_training(tmp_path, teacher, data):
    from hf_dfkd.batchnorm_prior import batchnorm_layers

    g, d = gan()
    transformed = data["train"].with_transform(DetectionGANTransform(64))
    labels = torch.tensor([0, 1, 2, 3])
    fake = g(torch.randn(4, 100, generator=torch.Generator().manual_seed(0)), labels).detach()
    totals = {}
    for weight in (0.0, 0.5):
        config = DetectionGANConfig(str(tmp_path / str(weight)), max_steps=2, batch_size=8, use_cpu=True,
                                    lambda_attn=0.0, lambda_bn=weight, eval_steps=2, logging_steps=1,
                                    eval_images_per_class=1, lambda_diversity=0.0)
        trainer = DetectionGANTrainer(teacher, g, d, config, transformed)
        total, parts = trainer.guidance_losses(fake, labels)
        assert ("bn_loss" in parts) == (weight > 0)
        totals[weight] = (total.item(), parts.get("bn_loss"))
    torch.testing.assert_close(torch.tensor(totals[0.5][0] - totals[0.0][0]), 0.5 * totals[0.5][1].detach())
    assert totals[0.5][1] > 0
    metrics = trainer.train()  # the lambda_bn=0.5 trainer
    assert "eval_bn_loss" in metrics and "bn_loss" in trainer.log_history[0]
    assert all(not bn._forward_pre_hooks for bn in batchnorm_layers(teacher))  # the teacher goes on without hooks
    with pytest.raises(ValueError, match="lambda_bn must be >= 0"):
        DetectionGANConfig(str(tmp_path), lambda_bn=-1.0)
