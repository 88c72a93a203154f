"""Detection distillation losses: paired (the paper) and Hungarian-matched targets."""

import pytest
import torch
import torch.nn.functional as F

from hf_dfkd.detection.losses import (
    background_query_loss,
    box_regression_loss,
    expanded_target_bce,
    hungarian_detection_loss,
    paired_box_loss,
    paired_detection_loss,
    query_kd_loss,
    teacher_detections,
)


def outputs(b=2, q=4, c=3, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, q, c + 1, generator=g) * scale, torch.rand(b, q, 4, generator=g) * 0.4 + 0.3


def test_query_kd_is_zero_for_equal_logits_and_matches_the_formula():
    t, _ = outputs()
    s, _ = outputs(seed=1)
    assert query_kd_loss(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    expected = 4.0 * F.kl_div(F.log_softmax(s.reshape(-1, 4) / 2, -1), F.softmax(t.reshape(-1, 4) / 2, -1),
                              reduction="batchmean")
    assert query_kd_loss(s, t, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_expanded_targets_are_the_teachers_argmax_one_hot():
    t, _ = outputs()
    s, _ = outputs(seed=1)
    target = F.one_hot(t.argmax(-1), 4).float()
    assert expanded_target_bce(s, t).item() == pytest.approx(F.binary_cross_entropy_with_logits(s, target).item())
    # logits that agree strongly with the expanded targets give a lower loss than the opposite ones
    assert expanded_target_bce(20 * (2 * target - 1), t) < expanded_target_bce(-20 * (2 * target - 1), t)


def test_paired_box_loss_only_counts_queries_where_the_teacher_sees_an_object():
    t_logits, t_boxes = outputs()
    t_logits[:, :2, -1] = 50.0  # queries 0, 1: no object
    t_logits[:, 2:, 0] = 50.0   # queries 2, 3: class 0
    s_boxes = t_boxes.clone()
    s_boxes[:, :2] += 0.3       # wrong boxes on no-object queries: ignored
    assert paired_box_loss(s_boxes, t_boxes, t_logits).item() == 0.0
    s_boxes[:, 2:] += 0.1
    assert paired_box_loss(s_boxes, t_boxes, t_logits).item() > 0
    t_logits[..., -1] = 100.0
    assert paired_box_loss(s_boxes, t_boxes, t_logits).item() == 0.0  # no object at all: 0, not NaN


def test_paired_loss_needs_the_same_number_of_queries():
    t, tb = outputs(q=4)
    s, sb = outputs(q=3)
    with pytest.raises(ValueError, match="target_mode='hungarian'"):
        paired_detection_loss(s, sb, t, tb)


def test_paired_loss_is_the_weighted_sum_and_has_gradients():
    t, tb = outputs()
    s, sb = outputs(seed=1)
    s.requires_grad_(True)
    sb.requires_grad_(True)
    parts = paired_detection_loss(s, sb, t, tb, lambda_cls=2.0, lambda_box=3.0, lambda_kd=0.5)
    total = 2 * parts["cls_loss"] + 3 * parts["box_loss"] + 0.5 * parts["kd_loss"]
    assert parts["loss"].item() == pytest.approx(total.item())
    parts["loss"].backward()
    assert s.grad.abs().sum() > 0 and sb.grad.abs().sum() > 0


def test_teacher_detections_keep_confident_queries_only():
    t, tb = outputs(b=1, q=3, c=2)
    t[0] = torch.tensor([[9.0, 0, 0], [0, 0, 9.0], [0.0, 0.2, 0.1]])
    targets, queries = teacher_detections(t, tb, threshold=0.5)
    assert queries[0].tolist() == [0] and targets[0]["class_labels"].tolist() == [0]
    torch.testing.assert_close(targets[0]["boxes"], tb[0, :1])


def test_hungarian_loss_is_zero_on_boxes_when_the_student_copies_the_teacher_in_any_order():
    t, tb = outputs(b=2, q=5, c=3, scale=1.0)
    t[:, :2, 0] = 20.0  # two confident detections per image, the rest no object
    t[:, 2:, -1] = 20.0
    perm = torch.tensor([3, 4, 0, 1, 2])
    parts = hungarian_detection_loss(t[:, perm], tb[:, perm], t, tb, threshold=0.5)
    assert parts["box_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["giou_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["kd_loss"].item() == pytest.approx(0.0, abs=1e-5)  # KL against the query that made the target
    assert parts["matched"].item() == 4


def test_hungarian_loss_works_with_fewer_student_queries_and_no_detections():
    t, tb = outputs(b=2, q=6, c=3)
    s, sb = outputs(b=2, q=3, c=3, seed=2)
    s.requires_grad_(True)
    parts = hungarian_detection_loss(s, sb, t, tb, threshold=0.2)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"]) and s.grad.abs().sum() > 0
    none = hungarian_detection_loss(s, sb, t, tb, threshold=0.9999)
    assert none["matched"].item() == 0 and none["box_loss"].item() == 0.0 and torch.isfinite(none["loss"])


def test_background_query_loss_asks_every_query_but_the_objects_for_no_object():
    logits, _ = outputs(b=2, q=4, c=3)
    logits.requires_grad_(True)
    best = torch.tensor([1, 3])
    loss = background_query_loss(logits, best)
    log_bg = F.log_softmax(logits, -1)[..., -1]
    expected = -(log_bg[0, [0, 2, 3]].sum() + log_bg[1, [0, 1, 2]].sum()) / 6
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1].abs().sum() == 0 and logits.grad[1, 3].abs().sum() == 0  # the object's query is free
    assert logits.grad[0, 0].abs().sum() > 0
    confident = torch.full((2, 4, 4), -20.0)
    confident[..., -1] = 20.0
    assert background_query_loss(confident, best).item() == pytest.approx(0.0, abs=1e-6)
    assert background_query_loss(logits[:, :1].detach(), torch.tensor([0, 0])).item() == 0.0  # one query: nothing


def test_box_regression_loss_is_l1_plus_one_minus_giou():
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.7, 0.1, 0.3]])
    assert box_regression_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    shifted = target + torch.tensor([0.2, 0.0, 0.0, 0.0])  # same size, no overlap with its target
    pred = shifted.clone().requires_grad_(True)
    loss = box_regression_loss(pred, target)
    # L1 = 0.2 / 4 per box; GIoU of two disjoint boxes = -(gap area) / (hull area)
    hull = torch.tensor([0.4 * 0.2, 0.3 * 0.3])
    union = 2 * target[:, 2] * target[:, 3]
    expected = (0.05 + 1 + (hull - union) / hull).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert pred.grad[:, 0].gt(0).all()  # pulls the boxes back towards their targets
    with pytest.raises(ValueError, match="must both be"):
        box_regression_loss(target, target[:1])
