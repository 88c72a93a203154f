r"""Detection distillation losses as pure functions of the two detectors' outputs.

Both detectors are softmax-scored (DETR, YOLOS): ``logits`` are ``(B, Q, C + 1)``, the last class being
"no object", and ``boxes`` are ``(B, Q, 4)`` normalised ``cx, cy, w, h``. The teacher's outputs are the targets.

Two target modes:

- **paired** (the paper): student query ``q`` learns from teacher query ``q`` (same number of queries).
  ``L = λ_cls·BCE(s, onehot(argmax t)) + λ_box·smoothL1(b_s, b_t)[teacher objects] + λ_kd·T²·KL(t ‖ s)``.
- **hungarian**: the teacher's confident detections become targets; student queries are matched to them with
  DETR's Hungarian matcher, then ``L = λ_cls·CE(matched → class, rest → no object) + λ_box·L1 + λ_giou·(1 − GIoU)
  + λ_kd·T²·KL`` (KL on matched queries), with ``transformers.loss.loss_for_object_detection``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_for_object_detection import HungarianMatcher, ImageLoss, generalized_box_iou

from ..losses import kd_loss

__all__ = [
    "background_query_loss",
    "box_regression_loss",
    "expanded_target_bce",
    "hungarian_detection_loss",
    "paired_box_loss",
    "paired_detection_loss",
    "query_kd_loss",
    "teacher_detections",
]


def _check_pair(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {what} {tuple(student.shape)} and teacher {what} {tuple(teacher.shape)} differ: query-paired "
            "targets need the same number of queries and classes (use target_mode='hungarian' when the query "
            "counts differ)"
        )


def query_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""``T² · KL(softmax(t/T) ‖ softmax(s/T))`` over the ``C + 1`` classes, averaged over queries (and batch).

    ``(…, C + 1)`` logits; every leading dimension is flattened into queries.
    """
    _check_pair(student_logits, teacher_logits, "logits")
    classes = student_logits.shape[-1]
    return kd_loss(student_logits.reshape(-1, classes), teacher_logits.reshape(-1, classes), temperature)


def expanded_target_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    r"""The paper's classification loss: ``BCE_with_logits(s, onehot(argmax_c t))``, mean over queries × classes.

    The teacher's class decision of each query (no object included) is "expanded" into a one-hot target.
    """
    _check_pair(student_logits, teacher_logits, "logits")
    targets = F.one_hot(teacher_logits.argmax(-1), student_logits.shape[-1]).to(student_logits.dtype)
    return F.binary_cross_entropy_with_logits(student_logits, targets)


def paired_box_loss(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor, teacher_logits: torch.Tensor,
                    beta: float = 1.0 / 9) -> torch.Tensor:
    r"""``smooth_L1(b_s, b_t)`` over the queries where the teacher sees an object (its argmax is not "no object"),
    mean over those queries' coordinates; 0 when the teacher sees none (a no-object query's box means nothing)."""
    _check_pair(student_boxes, teacher_boxes, "boxes")
    objects = teacher_logits.argmax(-1) != teacher_logits.shape[-1] - 1
    if not objects.any():
        return student_boxes.sum() * 0.0  # keeps the graph (and DDP) happy
    return F.smooth_l1_loss(student_boxes[objects], teacher_boxes[objects], beta=beta)


def paired_detection_loss(
    student_logits: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_boxes: torch.Tensor,
    *,
    temperature: float = 2.0,
    lambda_cls: float = 1.0,
    lambda_box: float = 5.0,
    lambda_kd: float = 1.0,
) -> dict[str, torch.Tensor]:
    r"""The paper's query-paired loss ``λ_cls·L_BCE + λ_box·L_smoothL1 + λ_kd·L_KD``; returns every component and
    ``loss`` (the weighted sum)."""
    parts = {
        "cls_loss": expanded_target_bce(student_logits, teacher_logits),
        "box_loss": paired_box_loss(student_boxes, teacher_boxes, teacher_logits),
        "kd_loss": query_kd_loss(student_logits, teacher_logits, temperature),
    }
    parts["loss"] = lambda_cls * parts["cls_loss"] + lambda_box * parts["box_loss"] + lambda_kd * parts["kd_loss"]
    return parts


def teacher_detections(teacher_logits: torch.Tensor, teacher_boxes: torch.Tensor,
                       threshold: float) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """The teacher's confident detections as DETR targets: per image ``{"class_labels", "boxes"}`` of the queries
    whose best real class has probability ≥ ``threshold``, and those queries' indices."""
    scores, labels = teacher_logits.softmax(-1)[..., :-1].max(-1)
    targets, queries = [], []
    for s, l, b in zip(scores, labels, teacher_boxes):
        keep = (s >= threshold).nonzero().flatten()
        targets.append({"class_labels": l[keep], "boxes": b[keep]})
        queries.append(keep)
    return targets, queries


def hungarian_detection_loss(
    student_logits: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_boxes: torch.Tensor,
    *,
    threshold: float = 0.5,
    temperature: float = 2.0,
    lambda_cls: float = 1.0,
    lambda_box: float = 5.0,
    lambda_giou: float = 2.0,
    lambda_kd: float = 1.0,
    eos_coef: float = 0.1,
    class_cost: float = 1.0,
    bbox_cost: float = 5.0,
    giou_cost: float = 2.0,
) -> dict[str, torch.Tensor]:
    r"""Hungarian-matched distillation: targets are the teacher's detections with score ≥ ``threshold``.

    ``L = λ_cls·CE + λ_box·L1 + λ_giou·(1 − GIoU) + λ_kd·T²·KL`` where CE (no-object weighted by ``eos_coef``), L1
    and GIoU are DETR's ``ImageLoss`` on the matching, and KL compares each matched student query with the teacher
    query that made its target. Student and teacher may have different numbers of queries.
    """
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(f"student has {student_logits.shape[-1] - 1} classes, teacher {teacher_logits.shape[-1] - 1}")
    targets, teacher_queries = teacher_detections(teacher_logits.detach(), teacher_boxes.detach(), threshold)
    outputs = {"logits": student_logits, "pred_boxes": student_boxes}
    matcher = HungarianMatcher(class_cost=class_cost, bbox_cost=bbox_cost, giou_cost=giou_cost)
    criterion = ImageLoss(matcher, student_logits.shape[-1] - 1, eos_coef, ["labels", "boxes"]).to(student_logits.device)
    indices = matcher(outputs, targets)
    num_boxes = max(sum(len(t["class_labels"]) for t in targets), 1)
    parts = {**criterion.get_loss("labels", outputs, targets, indices, num_boxes),
             **criterion.get_loss("boxes", outputs, targets, indices, num_boxes)}
    student_idx = torch.cat([s for s, _ in indices]).to(student_logits.device)
    batch_idx = torch.cat([torch.full_like(s, b) for b, (s, _) in enumerate(indices)]).to(student_logits.device)
    teacher_idx = torch.cat([q[t.to(q.device)] for q, (_, t) in zip(teacher_queries, indices)])
    if len(student_idx):
        kd = query_kd_loss(student_logits[batch_idx, student_idx], teacher_logits[batch_idx, teacher_idx], temperature)
    else:
        kd = student_logits.sum() * 0.0
    parts = {"cls_loss": parts["loss_ce"], "box_loss": parts["loss_bbox"], "giou_loss": parts["loss_giou"],
             "kd_loss": kd, "matched": torch.tensor(float(len(student_idx)), device=student_logits.device)}
    parts["loss"] = (lambda_cls * parts["cls_loss"] + lambda_box * parts["box_loss"]
                     + lambda_giou * parts["giou_loss"] + lambda_kd * kd)
    return parts


def background_query_loss(logits: torch.Tensor, object_query: torch.Tensor) -> torch.Tensor:
    r"""One object per image: every query but ``object_query[b]`` should say "no object" (a generator term).

    ``L = −1/(B·(Q−1)) · Σ_b Σ_{q ≠ q*_b} log p(∅ | q)``, with ``p = softmax(logits)`` and ``∅`` the last class.
    Real drone frames hold about one object each; without this term the guided generator fills its images with
    objects (several confident teacher detections each), and those detections become the synthetic annotations.
    ``logits``: ``(B, Q, C + 1)``; ``object_query``: ``(B,)`` the query that carries the object.
    """
    batch, queries = logits.shape[:2]
    if queries < 2:
        return logits.new_zeros(())
    log_background = logits.float().log_softmax(-1)[..., -1]  # (B, Q)
    others = torch.ones_like(log_background, dtype=torch.bool)
    others[torch.arange(batch, device=logits.device), object_query] = False
    return -log_background[others].mean()


def box_regression_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    r"""DETR's box terms between paired boxes: ``L = mean_b [ ‖b − b̂‖₁ / 4 + (1 − GIoU(b, b̂)) ]``.

    ``pred_boxes``, ``target_boxes``: ``(B, 4)`` normalised ``cx, cy, w, h``. A generator term: the teacher's box for
    the object query should be the layout box drawn for the image.
    """
    if pred_boxes.shape != target_boxes.shape or pred_boxes.shape[-1] != 4:
        raise ValueError(f"boxes must both be (B, 4), got {tuple(pred_boxes.shape)} and {tuple(target_boxes.shape)}")
    pred, target = pred_boxes.float(), target_boxes.float()
    l1 = (pred - target).abs().mean(-1)
    giou = torch.diag(generalized_box_iou(center_to_corners_format(pred), center_to_corners_format(target)))
    return (l1 + 1 - giou).mean()
