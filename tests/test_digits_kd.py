"""End-to-end check of the trainer on real images: scikit-learn digits (not yet data-free)."""

import torch
from transformers import DeiTConfig, DeiTForImageClassification, Trainer, TrainingArguments, ViTConfig, ViTForImageClassification, default_data_collator

from hf_dfkd import DistillationConfig, DistillationTrainer, ImageTransform, load_digits_dataset


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def test_kd_on_digits_brings_student_within_3_points_of_teacher(tmp_path):
    digits = load_digits_dataset(seed=0)
    names = digits["train"].features["label"].names
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    transform = ImageTransform(image_size=8, num_channels=1)
    train, test = digits["train"].with_transform(transform), digits["test"].with_transform(transform)
    common = dict(report_to=[], disable_tqdm=True, save_strategy="no", per_device_train_batch_size=64,
                  lr_scheduler_type="cosine", warmup_steps=20, use_cpu=True, seed=0, logging_steps=50)

    torch.manual_seed(0)
    teacher = ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=192, num_labels=10, **labels))
    teacher_args = TrainingArguments(str(tmp_path / "teacher"), num_train_epochs=30, learning_rate=1e-3,
                                     weight_decay=0.05, remove_unused_columns=False, **common)
    teacher_trainer = Trainer(teacher, teacher_args, train_dataset=train, eval_dataset=test,
                              data_collator=default_data_collator, compute_metrics=accuracy)
    teacher_trainer.train()
    teacher_acc = teacher_trainer.evaluate()["eval_accuracy"]
    assert teacher_acc > 0.93

    torch.manual_seed(1)
    student = DeiTForImageClassification(DeiTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, num_labels=10))
    n_student, n_teacher = (sum(p.numel() for p in m.parameters()) for m in (student, teacher))
    assert n_teacher > 8 * n_student
    args = DistillationConfig(str(tmp_path / "student"), num_train_epochs=20, learning_rate=4e-3, **common)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train, eval_dataset=test)
    trainer.train()
    metrics = trainer.evaluate()
    print(f"teacher {teacher_acc:.4f} student {metrics['eval_accuracy']:.4f} agreement {metrics['eval_agreement']:.4f}")
    assert metrics["eval_accuracy"] >= teacher_acc - 0.03
    assert metrics["eval_agreement"] > 0.9
