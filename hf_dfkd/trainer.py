"""``DistillationTrainer``: a ``transformers.Trainer`` that distils an image-classification teacher into a student."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, Trainer, default_data_collator
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.trainer_utils import get_last_checkpoint

from .config import DistillationConfig
from .io import load_classifier
from .losses import ce_loss, kd_loss, patch_probe_loss, total_distillation_loss
from .probes import (
    default_layer_pairs,
    interpolate_probes,
    num_prefix_tokens,
    patch_grid,
    patch_probes_from_hidden_states,
)
from .teacher_cache import TEACHER_LOGITS_COLUMN, TEACHER_PROBES_COLUMN, add_teacher_outputs

__all__ = ["DistillationTrainer", "NonFiniteLossError"]

_COMPONENTS = ("kd_loss", "ce_loss", "patch_loss", "total_loss")


class NonFiniteLossError(RuntimeError):
    """The distillation loss became NaN or infinite; training stopped before the bad update."""


def _id2label(config) -> dict[int, str]:
    return {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}


def _is_default_names(names: dict[int, str]) -> bool:
    return all(v == f"LABEL_{k}" for k, v in names.items())


def _check_label_sets(student: nn.Module, teacher: nn.Module) -> None:
    ns, nt = student.config.num_labels, teacher.config.num_labels
    if ns != nt:
        raise ValueError(
            f"teacher and student have different label sets: the teacher predicts {nt} classes, the student {ns}. "
            f"Build the student with num_labels={nt} and the teacher's id2label."
        )
    s_names, t_names = _id2label(student.config), _id2label(teacher.config)
    if s_names != t_names:
        if _is_default_names(s_names):
            # a student built from a bare config inherits the teacher's class names, so its checkpoint has them
            student.config.id2label = dict(t_names)
            student.config.label2id = {v: k for k, v in t_names.items()}
        elif not _is_default_names(t_names):
            diff = {k: (s_names.get(k), t_names.get(k)) for k in t_names if s_names.get(k) != t_names.get(k)}
            raise ValueError(
                "teacher and student have different label sets (id: (student, teacher)): "
                f"{dict(list(diff.items())[:5])}. Give the student the teacher's id2label/label2id."
            )


def _expected_pixel_shape(model: nn.Module) -> tuple[int, int, int] | None:
    config = model.config
    if not (hasattr(config, "image_size") and hasattr(config, "num_channels")):
        return None
    size = config.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(config.num_channels), int(h), int(w)


class DistillationTrainer(Trainer):
    r"""Distil a teacher image classifier into a student with KD, cross-entropy and patch attention-probe losses.

    ``L = λ_KD·T²·KL(softmax(t/T) ‖ softmax(s/T)) + λ_CE·CE(s, y) + λ_patch·L_patch`` (see :mod:`hf_dfkd.losses`),
    each term logged under ``kd_loss``, ``ce_loss``, ``patch_loss`` (train) and ``eval_*`` (evaluation), with the
    student's ``eval_accuracy`` (when labels exist) and its top-1 ``eval_agreement`` with the teacher.

    The teacher is frozen, placed on the right device by Accelerate, never wrapped by DDP and never saved into the
    student's checkpoints. When a batch carries ``teacher_logits`` (and ``teacher_patch_probes`` when the patch
    loss is on), made once by :meth:`cache_teacher_outputs`, the teacher's forward pass is skipped entirely.

    Args:
        model: the student, a ``*ForImageClassification`` model or a Hub id / local folder.
        teacher_model: the teacher, a model or a Hub id / local folder, with the same label set as the student.
        args: a :class:`DistillationConfig`.
        data_collator: defaults to ``default_data_collator`` (stacks ``pixel_values``, ``labels`` and cached
            teacher columns).
        Other arguments are those of :class:`transformers.Trainer`.
    """

    _tag_names = ["hf_dfkd", "distillation"]

    def __init__(
        self,
        model: str | PreTrainedModel | None = None,
        teacher_model: str | PreTrainedModel | None = None,
        args: DistillationConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init: Callable | None = None,
        compute_metrics: Callable | None = None,
        callbacks=None,
        optimizers=(None, None),
        preprocess_logits_for_metrics: Callable | None = None,
    ):
        if args is None:
            args = DistillationConfig(output_dir="hf_dfkd_student")
        elif not isinstance(args, DistillationConfig):
            raise TypeError(
                f"args must be a hf_dfkd.DistillationConfig, got {type(args).__name__}: it holds the loss weights"
            )
        if teacher_model is None:
            raise ValueError("DistillationTrainer needs a teacher_model= (a model or a Hub id / local folder)")
        if model is None:
            raise ValueError("DistillationTrainer needs a student model= (a model or a Hub id / local folder)")
        model = load_classifier(model, "model")
        teacher = load_classifier(teacher_model, "teacher_model")
        _check_label_sets(model, teacher)
        self._setup_patch_probe(model, teacher, args)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator if data_collator is not None else default_data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        # Our losses are batch means: let Trainer divide them by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._metrics: dict[str, defaultdict[str, list]] = {"train": defaultdict(list), "eval": defaultdict(list)}

        teacher.eval().requires_grad_(False)
        if self.is_deepspeed_enabled:
            raise NotImplementedError("DeepSpeed is not supported yet by DistillationTrainer: use DDP or FSDP")
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)

        if train_dataset is not None:
            self._preflight(train_dataset, "train_dataset")
        if eval_dataset is not None:
            sets = eval_dataset if isinstance(eval_dataset, dict) else {"": eval_dataset}
            for name, dataset in sets.items():
                self._preflight(dataset, f"eval_dataset{'[' + repr(name) + ']' if name else ''}")

    # ---- set-up and checks -------------------------------------------------------------------------------------

    def _setup_patch_probe(self, student: nn.Module, teacher: nn.Module, args: DistillationConfig) -> None:
        self.layer_pairs: list[tuple[int, int]] = []
        if args.lambda_patch == 0:
            return
        # Both raise UnsupportedModelError (naming the supported families) for e.g. timm models.
        self._student_prefix, self._teacher_prefix = num_prefix_tokens(student), num_prefix_tokens(teacher)
        self._student_grid, self._teacher_grid = patch_grid(student), patch_grid(teacher)
        if self._student_grid != self._teacher_grid and not args.patch_probe_interpolation:
            raise ValueError(
                f"the patch probe compares patch grids, and the student's is {self._student_grid} while the teacher's "
                f"is {self._teacher_grid}: set patch_probe_interpolation=True to resize the teacher's probes, give "
                "both models the same image_size/patch_size, or set lambda_patch=0"
            )
        ls, lt = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        pairs = args.layer_pairs or default_layer_pairs(ls, lt)
        bad = [(s, t) for s, t in pairs if not (1 <= s <= ls and 1 <= t <= lt)]
        if bad:
            raise ValueError(
                f"patch_layer_pairs {bad} out of range: the student has blocks 1..{ls}, the teacher 1..{lt}"
            )
        self.layer_pairs = pairs

    @property
    def teacher_layers(self) -> list[int]:
        """Teacher blocks (1-based) whose patch probes the loss uses; empty when ``lambda_patch == 0``."""
        return [t for _, t in self.layer_pairs]

    def _preflight(self, dataset, name: str) -> None:
        """Collate two examples and check them against both models before any long work starts."""
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
            return
        columns = list(getattr(dataset, "column_names", None) or [])
        batch = self.data_collator([dataset[i] for i in range(min(2, len(dataset)))])
        found = f"columns: {columns}" if columns else f"batch keys: {sorted(batch)}"
        if "pixel_values" not in batch:
            raise ValueError(
                f"{name} yields no 'pixel_values' ({found}). Turn images into tensors with a transform, e.g. "
                "dataset.with_transform(hf_dfkd.ImageTransform.from_model_config(student.config))"
            )
        if self.args.label_source == "dataset" and batch.get("labels") is None:
            raise ValueError(
                f"label_source='dataset' but {name} has no label column ({found}); add a 'label'/'labels' column "
                "or set label_source='teacher' to train on the teacher's argmax"
            )
        if self.args.lambda_patch > 0 and TEACHER_LOGITS_COLUMN in batch and TEACHER_PROBES_COLUMN not in batch:
            raise ValueError(
                f"{name} caches '{TEACHER_LOGITS_COLUMN}' but not '{TEACHER_PROBES_COLUMN}', which lambda_patch > 0 "
                "needs: rebuild the cache with trainer.cache_teacher_outputs(dataset), or set lambda_patch=0"
            )
        if self.args.lambda_patch > 0 and TEACHER_PROBES_COLUMN in batch:
            expected = (len(self.layer_pairs), self._teacher_grid[0] * self._teacher_grid[1])
            got = tuple(batch[TEACHER_PROBES_COLUMN].shape[1:])
            if got != expected:
                raise ValueError(
                    f"{name} caches teacher patch probes of shape {got}, but these layer pairs need {expected} "
                    f"(teacher blocks {self.teacher_layers}): rebuild it with trainer.cache_teacher_outputs(dataset)"
                )
        pixel_values = batch["pixel_values"]
        for role, model in (("student", self.model), ("teacher", self.teacher)):
            expected = _expected_pixel_shape(model)
            got = tuple(pixel_values.shape[1:])
            if expected is not None and got != expected:
                raise ValueError(
                    f"{name} images are {got} (channels, height, width) but the {role} expects {expected}: resize or "
                    f"convert them in the transform, e.g. hf_dfkd.ImageTransform.from_model_config({role}.config)"
                )
            if expected is None:  # e.g. timm: let the model itself say whether the input fits
                try:
                    with torch.no_grad():
                        model(pixel_values=pixel_values.to(self.args.device))
                except Exception as err:
                    raise ValueError(f"{name} images of shape {got} do not fit the {role}: {err}") from err

    # ---- the loss ------------------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        mode = "train" if model.training else "eval"
        args = self.args
        use_patch = args.lambda_patch > 0
        pixel_values = inputs["pixel_values"]
        labels = inputs.get("labels")
        teacher_logits = inputs.get(TEACHER_LOGITS_COLUMN)
        teacher_probes = inputs.get(TEACHER_PROBES_COLUMN)

        student_out = model(pixel_values=pixel_values, output_hidden_states=use_patch)
        student_logits = student_out.logits

        if teacher_logits is None or (use_patch and teacher_probes is None):
            self.teacher.eval()
            with torch.no_grad():
                teacher_out = self.teacher(pixel_values=pixel_values, output_hidden_states=use_patch)
            teacher_logits = teacher_out.logits
            if use_patch:
                teacher_probes = patch_probes_from_hidden_states(
                    teacher_out.hidden_states, self.teacher_layers, self._teacher_prefix
                )

        kd = kd_loss(student_logits, teacher_logits, args.temperature)
        targets = labels if args.label_source == "dataset" else teacher_logits.argmax(dim=-1)
        ce = ce_loss(student_logits, targets)
        patch = None
        if use_patch:
            student_probes = patch_probes_from_hidden_states(
                student_out.hidden_states, [s for s, _ in self.layer_pairs], self._student_prefix
            )
            teacher_probes = interpolate_probes(teacher_probes, self._teacher_grid, self._student_grid)
            patch = patch_probe_loss(student_probes, teacher_probes)
        loss = total_distillation_loss(kd, ce, patch, args.lambda_kd, args.lambda_ce, args.lambda_patch)

        self._record(mode, kd, ce, patch, loss, student_logits.shape[0])
        if mode == "eval":
            predictions = student_logits.argmax(dim=-1)
            agree = (predictions == teacher_logits.argmax(dim=-1)).float()
            self._metrics["eval"]["agreement"].append(self.accelerator.gather_for_metrics(agree).cpu())
            if labels is not None:
                correct = (predictions == labels).float()
                self._metrics["eval"]["accuracy"].append(self.accelerator.gather_for_metrics(correct).cpu())

        if return_outputs:
            return loss, ImageClassifierOutput(loss=loss, logits=student_logits)
        return loss

    def _record(self, mode: str, kd, ce, patch, total, batch_size: int) -> None:
        values = torch.stack([kd, ce, patch if patch is not None else torch.zeros_like(kd), total]).detach().float()
        if mode == "train":
            gathered = self.accelerator.gather(values).reshape(-1, len(_COMPONENTS))
        else:  # one row per example, so the split's mean weighs a short last batch correctly
            gathered = self.accelerator.gather_for_metrics(values.expand(batch_size, -1).contiguous())
        # every process sees the gathered values, so every process stops together
        if not torch.isfinite(gathered).all():
            self._raise_non_finite(gathered)
        for i, key in enumerate(_COMPONENTS):
            if key == "patch_loss" and patch is None:
                continue
            if mode == "train":
                self._metrics[mode][key].append(gathered[:, i].mean().item())
            else:
                self._metrics[mode][key].append(gathered[:, i].cpu())

    def _raise_non_finite(self, gathered: torch.Tensor) -> None:
        parts = ", ".join(f"{k}={v:.4g}" for k, v in zip(_COMPONENTS, gathered.mean(dim=0).tolist()))
        last = get_last_checkpoint(self.args.output_dir) if self.args.output_dir else None
        where = f"the last checkpoint, {last}, is kept" if last else "no checkpoint had been saved yet"
        phase = "training" if self.model.training else "evaluation"
        raise NonFiniteLossError(
            f"non-finite distillation loss during {phase} at step {self.state.global_step + 1} ({parts}); stopped "
            f"before the update, and {where}. Lower the learning rate or a loss weight, check the inputs for "
            "NaN/inf, then resume with trainer.train(resume_from_checkpoint=True)."
        )

    # ---- evaluation and logging ----------------------------------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        # Always through compute_loss: the distillation loss needs no dataset labels (label_source="teacher"),
        # and cached teacher columns must never reach the model's forward.
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), outputs.logits.detach(), labels

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        metrics = {}
        for key, values in self._metrics[mode].items():
            if values and torch.is_tensor(values[0]):
                metrics[key] = torch.cat(values).mean().item()  # per-example values: exact over the split
            elif values:
                metrics[key] = sum(values) / len(values)
        self._metrics[mode].clear()
        return metrics

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        self._metrics["eval"].clear()
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self._pop_metrics("eval").items()})
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the loss components averaged since the last one
            logs = {**logs, **self._pop_metrics("train")}
        super().log(logs, start_time)

    # ---- teacher-output cache ------------------------------------------------------------------------------------

    def cache_teacher_outputs(self, dataset: Dataset, transform: Callable | None = None, batch_size: int | None = None):
        """Return ``dataset`` with this trainer's teacher outputs cached as columns (see :func:`add_teacher_outputs`).

        Stores the teacher probes of exactly the blocks this trainer's layer pairs use. Pass the raw dataset and
        its transform; apply the transform to the result (``.with_transform(transform)``) before training.
        """
        return add_teacher_outputs(
            dataset,
            self.accelerator.unwrap_model(self.teacher),
            transform,
            teacher_layers=self.teacher_layers or None,
            batch_size=batch_size or self.args.per_device_eval_batch_size,
            device=self.args.device,
        )
