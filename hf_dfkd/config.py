"""Configuration of :class:`~hf_dfkd.DistillationTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from .probes import parse_layer_pairs

__all__ = ["DistillationConfig"]


@dataclass
class DistillationConfig(TrainingArguments):
    r"""Training arguments for :class:`~hf_dfkd.DistillationTrainer`.

    All of :class:`transformers.TrainingArguments`, plus the distillation loss
    ``L = λ_KD·T²·KL(softmax(t/T) ‖ softmax(s/T)) + λ_CE·CE(s, y) + λ_patch·L_patch``.
    Parsable with :class:`transformers.HfArgumentParser` (command line, JSON or YAML).

    Defaults differ from ``TrainingArguments`` where image distillation needs it: ``remove_unused_columns=False``
    (transforms read the ``image`` column) and the paper's optimiser (AdamW, lr 7.5e-4, betas (0.5, 0.999),
    weight decay 0.025).
    """

    temperature: float = field(default=4.0, metadata={"help": "Softmax temperature T of the KD loss (> 0)."})
    lambda_kd: float = field(default=1.0, metadata={"help": "Weight of the T²-scaled KL distillation loss."})
    lambda_ce: float = field(default=1.0, metadata={"help": "Weight of the cross-entropy loss on hard labels."})
    lambda_patch: float = field(
        default=1.0,
        metadata={"help": "Weight of the patch attention-probe loss (0 disables it, e.g. for timm models)."},
    )
    patch_layer_pairs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Student:teacher block pairs for the patch probe, 1-based, e.g. '1:2 2:4 3:6'. "
            "Default: evenly spaced pairs with the last blocks aligned."
        },
    )
    patch_probe_interpolation: bool = field(
        default=False,
        metadata={"help": "Resize the teacher's probes to the student's patch grid when the grids differ."},
    )
    label_source: Literal["dataset", "teacher"] = field(
        default="dataset",
        metadata={"help": "Hard labels of the CE loss: the dataset's 'labels' or the teacher's argmax."},
    )

    # Defaults for image distillation (overriding TrainingArguments).
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep all dataset columns (image transforms need the 'image' column)."}
    )
    learning_rate: float = field(default=7.5e-4, metadata={"help": "AdamW learning rate (the paper: 7.5e-4)."})
    adam_beta1: float = field(default=0.5, metadata={"help": "AdamW beta1 (the paper: 0.5)."})
    weight_decay: float = field(default=0.025, metadata={"help": "AdamW weight decay (the paper: 0.025)."})
    optim: str = field(default="adamw_torch", metadata={"help": "Optimizer name, as in TrainingArguments."})

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}: the KD loss divides logits by it")
        for name in ("lambda_kd", "lambda_ce", "lambda_patch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lambda_kd == 0 and self.lambda_ce == 0 and self.lambda_patch == 0:
            raise ValueError("lambda_kd, lambda_ce and lambda_patch are all 0: there is nothing to train on")
        if self.label_source not in ("dataset", "teacher"):
            raise ValueError(f"label_source must be 'dataset' or 'teacher', got {self.label_source!r}")
        if self.patch_layer_pairs is not None:
            self.patch_layer_pairs = [f"{s}:{t}" for s, t in parse_layer_pairs(self.patch_layer_pairs)]

    @property
    def layer_pairs(self) -> list[tuple[int, int]] | None:
        """``patch_layer_pairs`` parsed into ``(student_block, teacher_block)`` tuples, or None for the default."""
        return None if self.patch_layer_pairs is None else parse_layer_pairs(self.patch_layer_pairs)
