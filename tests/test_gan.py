import json
import os

import pytest
import torch
from conftest import tiny_vit
from safetensors.torch import load_file

from hf_dfkd import (
    ClassAttentionProbes,
    CLSAttentionProbe,
    ConditionalDiscriminator,
    ConditionalGenerator,
    GANConfig,
    GANTrainer,
    ImageTransform,
    NonFiniteGANLossError,
    UnsupportedModelError,
    compute_class_attention_probes,
    load_digits_dataset,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()["train"].select(range(160))


def teacher10(**kw):
    return tiny_vit(num_labels=10, names=[str(i) for i in range(10)], **kw).eval()


def small_gan(size=8, channels=1, classes=10):
    torch.manual_seed(0)
    g = ConditionalGenerator(num_classes=classes, image_size=size, num_channels=channels, latent_dim=16,
                             embedding_dim=8, channels=(32, 16, 8))
    d = ConditionalDiscriminator(num_classes=classes, image_size=size, num_channels=channels, channels=(8, 16, 16))
    return g, d


# ---- class attention probes ----------------------------------------------------------------------------------------


def test_class_probes_are_per_class_means_and_round_trip(tmp_path, digits):
    teacher = teacher10()
    transform = ImageTransform(8, 1)
    caps = compute_class_attention_probes(teacher, digits, transform, only_correct=False, batch_size=32,
                                          show_progress=False)
    assert caps.probes.shape == (10, 16) and sum(caps.counts) == 160
    # class 3's probe is the mean hooked probe over the class-3 images
    rows = digits.filter(lambda x: x["label"] == 3)
    ap, _ = CLSAttentionProbe(teacher)(torch.stack(transform(rows[:])["pixel_values"]))
    assert torch.allclose(caps.probes[3], ap.mean(0), atol=1e-5)
    # a softmax row without the CLS token's attention to itself
    assert ((caps.probes.sum(-1) > 0) & (caps.probes.sum(-1) < 1)).all()
    path = caps.save(tmp_path)
    assert os.path.basename(path) == "class_attention_probes.safetensors"
    loaded = ClassAttentionProbes.load(tmp_path, teacher)
    assert torch.equal(loaded.probes, caps.probes) and loaded.layer == [1] and loaded.head_reduction == "mean"
    assert loaded.counts == caps.counts


def test_class_probes_refuse_a_teacher_they_do_not_fit(tmp_path, digits):
    caps = compute_class_attention_probes(teacher10(), digits, ImageTransform(8, 1), only_correct=False,
                                          show_progress=False)
    caps.save(tmp_path)
    other = tiny_vit(num_labels=10, names=None, patch_size=4)  # 2x2 grid: 4 patches
    with pytest.raises(ValueError, match=r"probes are \(10, 16\) but the teacher needs \(10, 4\)"):
        ClassAttentionProbes.load(tmp_path, other)
    with pytest.raises(ValueError, match="no correctly classified image"):
        compute_class_attention_probes(teacher10(), digits.select(range(5)), ImageTransform(8, 1), show_progress=False)


def test_teacher_without_cls_probe_is_rejected(digits):
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    timm_teacher = TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="vit_tiny_patch16_224", num_labels=10,
        model_args={"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 1, "num_heads": 2}))
    with pytest.raises(UnsupportedModelError, match="Supported model types: vit, deit"):
        compute_class_attention_probes(timm_teacher, digits, ImageTransform(8, 1), show_progress=False)


# ---- generator and discriminator -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3)])
def test_gan_components_follow_the_teacher_size(tmp_path, size, channels):
    g, d = ConditionalGenerator(num_classes=10, image_size=size, num_channels=channels), \
        ConditionalDiscriminator(num_classes=10, image_size=size, num_channels=channels)
    z, y = torch.randn(3, 100), torch.tensor([0, 4, 9])
    images = g(z, y)
    assert images.shape == (3, channels, size, size) and images.abs().max() <= 1
    assert d(images, y).shape == (3,)
    g.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "diffusion_pytorch_model.safetensors").exists()
    reloaded = ConditionalGenerator.from_pretrained(tmp_path / "g")
    g.eval(), reloaded.eval()
    assert torch.allclose(g(z, y), reloaded(z, y))
    with pytest.raises(ValueError, match="multiple of 4"):
        ConditionalGenerator(image_size=30)


# ---- GAN trainer --------------------------------------------------------------------------------------------------


def gan_trainer(tmp_path, digits, teacher=None, caps="compute", **kw):
    teacher = teacher or teacher10()
    transform = ImageTransform(8, 1)
    if caps == "compute":
        caps = compute_class_attention_probes(teacher, digits, transform, only_correct=False, show_progress=False)
    g, d = small_gan()
    defaults = dict(output_dir=str(tmp_path), max_steps=4, batch_size=16, logging_steps=1, eval_steps=2,
                    save_steps=2, use_cpu=True, disable_tqdm=True, eval_images_per_class=2)
    defaults.update(kw)
    return GANTrainer(teacher, g, d, GANConfig(**defaults), digits.with_transform(transform), class_probes=caps)


def test_gan_training_logs_samples_checkpoints_and_models(tmp_path, digits):
    trainer = gan_trainer(tmp_path, digits)
    metrics = trainer.train()
    assert set(metrics) == {"eval_teacher_accuracy", "eval_attn_loss"}
    train_logs = [h for h in trainer.log_history if "d_loss" in h]
    assert len(train_logs) == 4 and all({"adv_loss", "attn_loss", "g_loss"} <= set(h) for h in train_logs)
    assert sorted(os.listdir(tmp_path / "samples")) == ["step-0000002.png", "step-0000004.png"]
    assert (tmp_path / "checkpoint-2" / "gan_trainer_state.json").exists()
    for name in ("generator", "discriminator"):
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").exists()
    assert (tmp_path / "gan_curves.png").exists() and (tmp_path / "class_attention_probes.safetensors").exists()
    assert json.loads((tmp_path / "log_history.json").read_text())[-1]["step"] == 4


def test_attention_loss_reaches_the_generator_through_the_frozen_teacher(tmp_path, digits):
    trainer = gan_trainer(tmp_path, digits)
    g = trainer.generator
    images = g(torch.randn(4, 16), torch.tensor([0, 1, 2, 3]))
    probes = trainer.probe.probe_only(trainer.to_teacher(images))  # the training step's path
    assert torch.allclose(probes, trainer.teacher_probe(images)[0], atol=1e-6)
    (1 - torch.cosine_similarity(probes, trainer.cap[:4], dim=-1)).mean().backward()
    assert all(p.grad is None for p in trainer.teacher.parameters())
    assert sum(p.grad.abs().sum() for p in g.parameters() if p.grad is not None) > 0


def test_vanilla_cgan_needs_no_probes(tmp_path, digits):
    trainer = gan_trainer(tmp_path, digits, caps=None, lambda_attn=0.0, max_steps=2)
    trainer.train()
    assert not any("attn_loss" in h for h in trainer.log_history)
    assert any("eval_teacher_accuracy" in h for h in trainer.log_history)
    with pytest.raises(ValueError, match="lambda_attn > 0 needs class_probes"):
        gan_trainer(tmp_path, digits, caps=None)


def test_resume_is_exact(tmp_path, digits):
    straight = gan_trainer(tmp_path / "a", digits, max_steps=4, save_steps=2)
    straight.train()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    resumed = gan_trainer(tmp_path / "b", digits, max_steps=4, save_steps=2, resume_from_checkpoint=str(checkpoint))
    resumed.train()
    assert resumed.global_step == 4
    a = straight.accelerator.unwrap_model(straight.generator).state_dict()
    b = resumed.accelerator.unwrap_model(resumed.generator).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h for h in straight.log_history if "d_loss" in h] == [h for h in resumed.log_history if "d_loss" in h]


def test_generator_size_must_match_the_teacher_unless_resized(tmp_path, digits):
    teacher = teacher10(image_size=16, patch_size=4)  # 16x16 input, 4x4 grid
    g, d = small_gan(size=8)
    caps = ClassAttentionProbes(torch.full((10, 16), 1 / 16), [1], "mean", "vit")
    data = digits.with_transform(ImageTransform(8, 1))
    with pytest.raises(ValueError, match="generator output is 8x8 but the teacher's input is 16x16.*resize_to_teacher"):
        GANTrainer(teacher, g, d, GANConfig(str(tmp_path), use_cpu=True), data, class_probes=caps)
    trainer = GANTrainer(teacher, g, d, GANConfig(str(tmp_path), use_cpu=True, resize_to_teacher=True, max_steps=1,
                                                  batch_size=8, disable_tqdm=True), data, class_probes=caps)
    trainer.train()
    assert trainer.global_step == 1


def test_probes_of_the_wrong_shape_are_rejected(tmp_path, digits):
    caps = ClassAttentionProbes(torch.rand(10, 4), [1], "mean", "vit")
    with pytest.raises(ValueError, match=r"probes are \(10, 4\) but the teacher needs \(10, 16\)"):
        gan_trainer(tmp_path, digits, caps=caps)


def test_non_finite_loss_stops_and_names_it(tmp_path, digits):
    trainer = gan_trainer(tmp_path, digits, max_steps=6, save_steps=2)
    original = trainer.training_step

    def poisoned(batch):
        if trainer.global_step == 3:
            with torch.no_grad():
                for p in trainer.accelerator.unwrap_model(trainer.discriminator).parameters():
                    p.fill_(float("nan"))
        return original(batch)

    trainer.training_step = poisoned
    with pytest.raises(NonFiniteGANLossError, match=r"non-finite discriminator loss at step 4.*checkpoint-2"):
        trainer.train()
    saved = load_file(str(tmp_path / "checkpoint-2" / "model_1.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_diversity_loss_pairs_latents_of_one_class_and_is_optional(tmp_path, digits):
    trainer = gan_trainer(tmp_path / "on", digits, lambda_diversity=0.5, max_steps=2)
    seen = {}
    original = trainer.generator.forward

    def spy(latents, labels):
        seen.setdefault("labels", labels.clone())  # the first call is the training step
        return original(latents, labels)

    trainer.generator.forward = spy
    trainer.train()
    h = len(seen["labels"]) // 2
    assert torch.equal(seen["labels"][:h], seen["labels"][h : 2 * h])  # pairs: same class, two latents
    assert all("diversity_loss" in e for e in trainer.log_history if "d_loss" in e)
    off = gan_trainer(tmp_path / "off", digits, lambda_diversity=0.0, max_steps=2)
    off.train()
    assert not any("diversity_loss" in e for e in off.log_history)
    with pytest.raises(ValueError, match="lambda_diversity must be >= 0"):
        GANConfig(str(tmp_path), lambda_diversity=-1.0)
