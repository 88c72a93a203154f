"""``DetrDistillationConfig`` + ``DetrDistillationTrainer``: distil a DETR/YOLOS teacher into a smaller detector."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput
from transformers.trainer_utils import get_last_checkpoint

from ..trainer import NonFiniteLossError
from .data import DetectionCollator
from .evaluation import map_inputs
from .losses import hungarian_detection_loss, paired_detection_loss
from .models import check_detection_pair, load_detector

__all__ = ["DetrDistillationConfig", "DetrDistillationTrainer", "num_queries"]


def num_queries(model: PreTrainedModel) -> int:
    """Object queries of a DETR (``num_queries``) or detection tokens of a YOLOS (``num_detection_tokens``)."""
    config = model.config
    return getattr(config, "num_queries", None) or config.num_detection_tokens


@dataclass
class DetrDistillationConfig(TrainingArguments):
    r"""Training arguments for :class:`DetrDistillationTrainer`: all of ``TrainingArguments`` plus the loss.

    ``target_mode="paired"`` is the paper's (query q of the student learns from query q of the teacher: BCE on the
    expanded targets + smooth-L1 on boxes + T²·KL); ``"hungarian"`` matches student queries to the teacher's
    detections with score ≥ ``confidence_threshold`` (CE + L1 + GIoU + T²·KL on matched queries). See
    :mod:`hf_dfkd.detection.losses` for the formulas. Defaults differ from ``TrainingArguments`` as DETR training
    wants: ``remove_unused_columns=False``, lr 2e-4, weight decay 1e-4, gradients clipped at 0.1.
    """

    target_mode: Literal["paired", "hungarian"] = field(default="hungarian", metadata={
        "help": "'paired': the paper's query-by-index targets; 'hungarian': matched to confident teacher detections."})
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature T of the KL term (> 0)."})
    lambda_cls: float = field(default=1.0, metadata={"help": "Weight of the class loss (BCE paired, CE hungarian)."})
    lambda_box: float = field(default=5.0, metadata={"help": "Weight of the box loss (smooth-L1 paired, L1 hungarian)."})
    lambda_giou: float = field(default=2.0, metadata={"help": "Weight of the GIoU loss (hungarian only)."})
    lambda_kd: float = field(default=1.0, metadata={"help": "Weight of the T²-scaled KL loss."})
    confidence_threshold: float = field(default=0.5, metadata={
        "help": "Teacher detections with a score at least this become targets (hungarian only)."})
    eos_coef: float = field(default=0.1, metadata={"help": "CE weight of the no-object class (hungarian only)."})

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image/objects columns."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (DETR: 1e-4)."})
    max_grad_norm: float = field(default=0.1, metadata={"help": "Gradient clipping (DETR: 0.1)."})

    def __post_init__(self):
        super().__post_init__()
        if self.target_mode not in ("paired", "hungarian"):
            raise ValueError(f"target_mode must be 'paired' or 'hungarian', got {self.target_mode!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("lambda_cls", "lambda_box", "lambda_giou", "lambda_kd", "eos_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.confidence_threshold < 1:
            raise ValueError(f"confidence_threshold must be in (0, 1), got {self.confidence_threshold}")

    def loss_kwargs(self) -> dict[str, float]:
        """The keyword arguments of the loss function of ``target_mode``."""
        common = dict(temperature=self.temperature, lambda_cls=self.lambda_cls, lambda_box=self.lambda_box,
                      lambda_kd=self.lambda_kd)
        if self.target_mode == "paired":
            return common
        return dict(common, lambda_giou=self.lambda_giou, threshold=self.confidence_threshold, eos_coef=self.eos_coef)


class DetrDistillationTrainer(Trainer):
    """A ``transformers.Trainer`` that distils a frozen detection teacher into a student detector.

    Each step runs the teacher on the batch's ``pixel_values`` (no labels are needed: synthetic images work) and
    trains the student on the loss of ``args.target_mode``; the loss components are logged. When the evaluation
    batches carry real ``labels`` (DETR format, as :class:`~hf_dfkd.detection.DetectionTransform` makes them),
    ``evaluate()`` also reports the student's ``map``, ``map_50`` and ``map_75`` (torchmetrics, boxes in each
    image's own pixels). Teacher and student must be softmax detectors (DETR, YOLOS) with the same label set.

    Args:
        model: the student (a model, a Hub id or a local folder).
        teacher_model: the teacher (same).
        args: a :class:`DetrDistillationConfig`.
        Other arguments are those of :class:`transformers.Trainer` (default collator: :class:`DetectionCollator`).
    """

    _tag_names = ["hf_dfkd", "distillation", "object-detection"]

    def __init__(self, model: str | PreTrainedModel | None = None, teacher_model: str | PreTrainedModel | None = None,
                 args: DetrDistillationConfig | None = None, data_collator: Callable | None = None,
                 train_dataset=None, eval_dataset=None, processing_class=None, callbacks=None,
                 optimizers=(None, None)):
        if args is None:
            args = DetrDistillationConfig(output_dir="hf_dfkd_detr_student")
        elif not isinstance(args, DetrDistillationConfig):
            raise TypeError(f"args must be a DetrDistillationConfig, got {type(args).__name__}: it holds the loss")
        if model is None or teacher_model is None:
            raise ValueError("DetrDistillationTrainer needs a student model= and a teacher_model=")
        model = load_detector(model, "student")
        teacher = load_detector(teacher_model, "teacher")
        check_detection_pair(teacher, model)
        if args.target_mode == "paired" and num_queries(teacher) != num_queries(model):
            raise ValueError(f"target_mode='paired' pairs queries by index, but the teacher has {num_queries(teacher)} "
                             f"queries and the student {num_queries(model)}: give them the same number, or use "
                             "target_mode='hungarian'")
        super().__init__(model=model, args=args, data_collator=data_collator or DetectionCollator(),
                         train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
                         callbacks=callbacks, optimizers=optimizers)
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, defaultdict[str, list]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._map = None
        teacher.eval().requires_grad_(False)
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        pixel_values = inputs["pixel_values"]
        with torch.no_grad():
            teacher_out = self.teacher(pixel_values=pixel_values)
        out = model(pixel_values=pixel_values)
        loss_fn = paired_detection_loss if self.args.target_mode == "paired" else hungarian_detection_loss
        parts = loss_fn(out.logits, out.pred_boxes, teacher_out.logits.float(), teacher_out.pred_boxes.float(),
                        **self.args.loss_kwargs())
        loss = parts.pop("loss")
        values = torch.stack([loss.detach(), *(v.detach().float() for v in parts.values())])
        gathered = self.accelerator.gather(values[None]).mean(0)
        if not torch.isfinite(gathered).all():
            last = get_last_checkpoint(self.args.output_dir) if self.args.output_dir else None
            raise NonFiniteLossError(
                f"non-finite detection distillation loss at step {self.state.global_step + 1} "
                f"({dict(zip(['loss', *parts], gathered.tolist()))}); last checkpoint: {last}. Lower the learning "
                "rate or a loss weight, then resume with trainer.train(resume_from_checkpoint=True)")
        for key, value in zip(parts, gathered[1:].tolist()):
            self._metrics[mode][key].append(value)
        if mode == "eval" and inputs.get("labels") is not None:
            self._update_map(out, inputs["labels"])
        if return_outputs:
            return loss, DetrObjectDetectionOutput(loss=loss, logits=out.logits, pred_boxes=out.pred_boxes)
        return loss

    def _update_map(self, out, labels: list[dict]) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        if self._map is None:
            self._map = MeanAveragePrecision(box_format="xyxy")
        self._map.update(*map_inputs(out, labels))

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._metrics["eval"].clear()
        self._map = None
        output = super().evaluation_loop(dataloader, description, True, ignore_keys, metric_key_prefix)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self._pop_metrics("eval").items()})
        if self._map is not None:
            m = self._map.compute()
            output.metrics.update({f"{metric_key_prefix}_{k}": m[k].item() for k in ("map", "map_50", "map_75")})
            self._map = None
        return output

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        self._metrics[mode].clear()
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = {**logs, **self._pop_metrics("train")}
        super().log(logs, start_time)
