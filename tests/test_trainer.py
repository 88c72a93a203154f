import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import NAMES, tensor_dataset, tiny_vit
from safetensors.torch import load_file

from hf_dfkd import (
    DistillationConfig,
    DistillationTrainer,
    ImageTransform,
    NonFiniteLossError,
    UnsupportedModelError,
    add_teacher_outputs,
)


def make_args(out, **kw):
    defaults = dict(output_dir=out, report_to=[], disable_tqdm=True, save_strategy="no", logging_steps=1,
                    per_device_train_batch_size=4, per_device_eval_batch_size=8, use_cpu=True, seed=0)
    defaults.update(kw)
    return DistillationConfig(**defaults)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_matches_double_batch(tmp_path):
    data = tensor_dataset(n=8)
    runs = {}
    for bs, ga in [(8, 1), (4, 2)]:
        student, teacher = tiny_vit(seed=1), tiny_vit(hidden=48, layers=3, seed=2)
        args = make_args(str(tmp_path / f"ga{ga}"), per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                         max_steps=1, optim="sgd", learning_rate=0.1, lr_scheduler_type="constant", max_grad_norm=0)
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
        trainer.train()
        runs[ga] = (trainer.state.log_history[0], params(student))
    (log1, p1), (log2, p2) = runs[1], runs[2]
    assert log1["loss"] == pytest.approx(log2["loss"], rel=1e-5)
    for key in ("kd_loss", "ce_loss", "patch_loss"):
        assert log1[key] == pytest.approx(log2[key], rel=1e-5)
    for k in p1:
        assert torch.allclose(p1[k], p2[k], atol=1e-6), k


def test_teacher_frozen_and_not_in_checkpoint_and_student_reloads_without_hf_dfkd(tmp_path):
    student, teacher = tiny_vit(seed=1), tiny_vit(hidden=48, layers=3, seed=2)
    before = params(teacher)
    args = make_args(str(tmp_path / "run"), max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="no")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(16))
    trainer.train()
    after = params(trainer.teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())

    ckpt = tmp_path / "run" / "checkpoint-4"
    saved = load_file(str(ckpt / "model.safetensors"))
    # exactly the student's tensors (transformers may store them under legacy names), none of the teacher's
    assert sum(v.numel() for v in saved.values()) == sum(v.numel() for v in student.state_dict().values())
    assert not any("teacher" in k for k in saved)
    assert sorted(v.shape[-1] for v in saved.values()) == sorted(v.shape[-1] for v in student.state_dict().values())

    final = tmp_path / "student"
    trainer.save_model(str(final))
    x = torch.randn(2, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = student.eval()(pixel_values=x).logits
    script = (
        "import sys, torch, json\n"
        "from transformers import AutoModelForImageClassification\n"
        f"m = AutoModelForImageClassification.from_pretrained({str(final)!r}).eval()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        "with torch.no_grad(): y = m(pixel_values=x).logits\n"
        "assert not any(k.startswith('hf_dfkd') for k in sys.modules)\n"
        "print(json.dumps({'logits': y.tolist(), 'labels': m.config.id2label}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path), check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-5)
    assert list(result["labels"].values()) == NAMES


def test_loss_components_logged_and_eval_reports_accuracy_and_agreement(tmp_path):
    student, teacher = tiny_vit(seed=1), tiny_vit(hidden=48, layers=3, seed=2)
    args = make_args(str(tmp_path), max_steps=3, eval_strategy="steps", eval_steps=3)
    eval_data = tensor_dataset(n=10, seed=5)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=tensor_dataset(12), eval_dataset=eval_data)
    trainer.train()
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert train_logs and all({"kd_loss", "ce_loss", "patch_loss", "total_loss"} <= set(h) for h in train_logs)
    assert train_logs[0]["total_loss"] == pytest.approx(train_logs[0]["loss"], rel=1e-4)

    metrics = trainer.evaluate()
    for key in ("eval_loss", "eval_kd_loss", "eval_ce_loss", "eval_patch_loss", "eval_accuracy", "eval_agreement"):
        assert key in metrics, key
    with torch.no_grad():
        x, y = eval_data[:]["pixel_values"], eval_data[:]["label"]
        s = trainer.model.eval()(pixel_values=x).logits.argmax(-1)
        t = teacher(pixel_values=x).logits.argmax(-1)
    assert metrics["eval_accuracy"] == pytest.approx((s == y).float().mean().item())
    assert metrics["eval_agreement"] == pytest.approx((s == t).float().mean().item())
    assert metrics["eval_total_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert any("eval_agreement" in h for h in trainer.state.log_history)


def test_label_source_teacher_needs_no_labels(tmp_path):
    student, teacher = tiny_vit(seed=1), tiny_vit(seed=2)
    args = make_args(str(tmp_path), max_steps=2, label_source="teacher")
    data = tensor_dataset(n=8, with_labels=False)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_agreement" in metrics and "eval_accuracy" not in metrics


def count_forward_calls(model):
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("lambda_patch", [0.0, 1.0])
def test_teacher_cache_skips_teacher_and_gives_same_loss(tmp_path, lambda_patch):
    from hf_dfkd.teacher_cache import TEACHER_LOGITS_COLUMN, TEACHER_PROBES_COLUMN

    student, teacher = tiny_vit(seed=1), tiny_vit(hidden=48, layers=4, seed=2)
    args = make_args(str(tmp_path), max_steps=2, lambda_patch=lambda_patch)
    raw = tensor_dataset(n=8)
    plain = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=raw)
    cached = plain.cache_teacher_outputs(raw)
    assert TEACHER_LOGITS_COLUMN in cached.column_names
    assert (TEACHER_PROBES_COLUMN in cached.column_names) == (lambda_patch > 0)
    if lambda_patch:
        assert plain.layer_pairs == [(1, 2), (2, 4)]
        assert cached.with_format("torch")[0][TEACHER_PROBES_COLUMN].shape == (2, 16)

    batch_plain = plain.data_collator([raw[i] for i in range(4)])
    cached = cached.with_format("torch")
    batch_cached = plain.data_collator([cached[i] for i in range(4)])
    calls = count_forward_calls(plain.teacher)
    plain.model.eval()
    with torch.no_grad():
        loss_plain = plain.compute_loss(plain.model, batch_plain)
        n_plain = len(calls)
        loss_cached = plain.compute_loss(plain.model, batch_cached)
    assert n_plain == 1 and len(calls) == 1  # the cached batch never ran the teacher
    assert loss_cached.item() == pytest.approx(loss_plain.item(), rel=1e-5)

    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=cached)
    calls = count_forward_calls(trainer.teacher)
    trainer.train()
    assert calls == []


def test_cache_with_image_transform_on_real_images(tmp_path):
    from hf_dfkd import load_digits_dataset

    data = load_digits_dataset()["test"].select(range(20))
    transform = ImageTransform(8, 1)
    teacher = tiny_vit(num_labels=10, names=None, seed=3)
    cached = add_teacher_outputs(data, teacher, transform, teacher_layers=[2], batch_size=8)
    assert cached.column_names == ["image", "label", "teacher_logits", "teacher_patch_probes"]
    row = cached.with_transform(transform)[0]
    with torch.no_grad():
        expected = teacher(pixel_values=row["pixel_values"][None]).logits[0]
    assert torch.allclose(torch.tensor(row["teacher_logits"]), expected, atol=1e-5)
    with pytest.raises(ValueError, match="pixel_values"):
        add_teacher_outputs(data, teacher)
    with pytest.raises(ValueError, match="out of range"):
        add_teacher_outputs(data, teacher, transform, teacher_layers=[3])


def test_timm_models_work_for_logits_only_kd(tmp_path):
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    def timm_vit(dim, depth):
        torch.manual_seed(0)
        return TimmWrapperForImageClassification(TimmWrapperConfig(
            architecture="vit_tiny_patch16_224", num_labels=4,
            model_args={"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": dim, "depth": depth, "num_heads": 2}))

    teacher = timm_vit(32, 2)
    student = tiny_vit(seed=1)
    args = make_args(str(tmp_path), max_steps=2, lambda_patch=0.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(8))
    trainer.train()
    assert "kd_loss" in trainer.state.log_history[0]
    with pytest.raises(UnsupportedModelError, match="lambda_patch=0"):
        DistillationTrainer(model=tiny_vit(), teacher_model=teacher, args=make_args(str(tmp_path), lambda_patch=1.0))
    # a timm student gets its input checked by a dry run
    with pytest.raises(ValueError, match="do not fit the student"):
        DistillationTrainer(model=timm_vit(16, 1), teacher_model=tiny_vit(image_size=16), train_dataset=tensor_dataset(4, image_size=16),
                            args=make_args(str(tmp_path), lambda_patch=0.0))


def test_models_load_from_folders_like_hub_ids(tmp_path):
    tiny_vit(seed=1).save_pretrained(tmp_path / "student")
    tiny_vit(hidden=48, seed=2).save_pretrained(tmp_path / "teacher")
    trainer = DistillationTrainer(model=str(tmp_path / "student"), teacher_model=str(tmp_path / "teacher"),
                                  args=make_args(str(tmp_path / "out"), max_steps=1), train_dataset=tensor_dataset(4))
    trainer.train()
    assert trainer.model.dtype == torch.float32 and trainer.teacher.config.hidden_size == 48


# ---- bad input: a clear error before training starts ---------------------------------------------------------------


def test_different_label_sets_are_rejected(tmp_path):
    args = make_args(str(tmp_path))
    with pytest.raises(ValueError, match="teacher predicts 4 classes, the student 3"):
        DistillationTrainer(model=tiny_vit(num_labels=3, names=NAMES[:3]), teacher_model=tiny_vit(), args=args)
    with pytest.raises(ValueError, match="different label sets"):
        DistillationTrainer(model=tiny_vit(names=["a", "b", "c", "d"]), teacher_model=tiny_vit(), args=args)
    # a student without names inherits the teacher's
    trainer = DistillationTrainer(model=tiny_vit(names=None), teacher_model=tiny_vit(), args=args)
    assert list(trainer.model.config.id2label.values()) == NAMES


@pytest.mark.parametrize(
    "data, match",
    [
        (lambda: tensor_dataset(4, image_size=16), r"images are \(1, 16, 16\).*expects \(1, 8, 8\)"),
        (lambda: tensor_dataset(4, channels=3), r"images are \(3, 8, 8\).*expects \(1, 8, 8\)"),
    ],
)
def test_images_that_do_not_fit_are_rejected(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        DistillationTrainer(model=tiny_vit(), teacher_model=tiny_vit(), args=make_args(str(tmp_path)), train_dataset=data())


def test_images_not_fitting_the_teacher_only(tmp_path):
    with pytest.raises(ValueError, match="the teacher expects"):
        DistillationTrainer(model=tiny_vit(), teacher_model=tiny_vit(image_size=16, patch_size=4),
                            args=make_args(str(tmp_path)), train_dataset=tensor_dataset(4))


def test_raw_images_without_transform_are_rejected(tmp_path):
    from hf_dfkd import load_digits_dataset

    data = load_digits_dataset()["test"].select(range(4)).remove_columns("image").add_column("x", [0] * 4)
    with pytest.raises(ValueError, match="no 'pixel_values'.*ImageTransform"):
        DistillationTrainer(model=tiny_vit(), teacher_model=tiny_vit(), args=make_args(str(tmp_path)), train_dataset=data)


def test_patch_grids_must_match_unless_interpolated(tmp_path):
    student = tiny_vit(image_size=8, patch_size=2)        # 4x4 grid
    teacher = tiny_vit(image_size=8, patch_size=4, seed=3)  # 2x2 grid
    with pytest.raises(ValueError, match=r"student's is \(4, 4\) while the teacher's is \(2, 2\).*patch_probe_interpolation"):
        DistillationTrainer(model=student, teacher_model=teacher, args=make_args(str(tmp_path)))
    args = make_args(str(tmp_path), patch_probe_interpolation=True, max_steps=2)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(8))
    trainer.train()
    assert trainer.state.log_history[0]["patch_loss"] > 0
    # and no patch loss at all works whatever the grids
    DistillationTrainer(model=student, teacher_model=teacher, args=make_args(str(tmp_path), lambda_patch=0.0))


def test_layer_pairs_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="out of range.*student has blocks 1..2"):
        DistillationTrainer(model=tiny_vit(), teacher_model=tiny_vit(), args=make_args(str(tmp_path), patch_layer_pairs=["3:1"]))


def test_missing_label_column_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="label_source='dataset' but train_dataset has no label column.*label_source='teacher'"):
        DistillationTrainer(model=tiny_vit(), teacher_model=tiny_vit(), args=make_args(str(tmp_path)),
                            train_dataset=tensor_dataset(4, with_labels=False))


def test_cache_without_probes_is_rejected_when_patch_loss_is_on(tmp_path):
    teacher = tiny_vit(seed=2)
    cached = add_teacher_outputs(tensor_dataset(4), teacher).with_format("torch")
    with pytest.raises(ValueError, match="not 'teacher_patch_probes'"):
        DistillationTrainer(model=tiny_vit(), teacher_model=teacher, args=make_args(str(tmp_path)), train_dataset=cached)


def test_temperature_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_args(str(tmp_path), temperature=0.0)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    from transformers import TrainerCallback

    class Diverge(TrainerCallback):  # the weights blow up just before the third step
        def on_step_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 2:
                with torch.no_grad():
                    model.classifier.weight.fill_(float("inf"))

    out = tmp_path / "run"
    args = make_args(str(out), max_steps=4, save_strategy="steps", save_steps=1)
    trainer = DistillationTrainer(model=tiny_vit(), teacher_model=tiny_vit(seed=2), args=args,
                                  train_dataset=tensor_dataset(16), callbacks=[Diverge()])
    with pytest.raises(NonFiniteLossError, match=r"during training at step 3 .*checkpoint-2, is kept"):
        trainer.train()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-1", "checkpoint-2"]
    saved = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
