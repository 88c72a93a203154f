"""The conditional GAN guided by a DETR teacher: detection class probes and ``DetectionGANTrainer``.

For a classifier the generator is guided by the CLS attention probe; a DETR has no CLS token, so here the probe of
an image for class ``c`` is the **decoder cross-attention** (last decoder layer, mean over heads) of the query that
gives ``c`` the highest probability: where in the image the teacher looks when it detects ``c``. The class probe
``CAP_c`` averages it over real training objects of class ``c``. The generator loss adds, for ``G(z, y)``:

    L_G = L_adv + λ_attn · (1 − cos(AP_y(G(z, y)), CAP_y)) + λ_det · (−log max_q p_teacher(y | q))
          [+ λ_bg · L_bg] [+ λ_bn · L_BN] [+ λ_div · L_ms]

so the teacher must detect an object of class ``y`` in the image (its detections later become the annotations),
attending to it as it does on real objects of that class. ``L_bg`` (:func:`~hf_dfkd.detection.losses.
background_query_loss`) asks every other query for "no object": one object per image, as in the real frames.
``L_BN`` (:func:`~hf_dfkd.losses.batchnorm_statistics_loss`, off by default) asks the generated images to give the
feature statistics stored in the teacher backbone's batch-norm layers, those of its training images.

With ``detection_query="layout"`` each latent also draws a **layout box** ``b(z)``
(:func:`~hf_dfkd.models.layout_boxes`: centre, size and aspect from ``z[:4]``; a generator built with the same
``layout_box_size`` also receives the box as a heatmap channel, so it is told where to draw), the object query is
the one DETR's matcher would pair with the target ``(y, b(z))``, and ``λ_box · L_box(b_teacher(q*), b(z))``
(:func:`~hf_dfkd.detection.losses.box_regression_loss`, L1 + 1 − GIoU) asks the teacher to put its box there:
objects of every size at every place, as DIODE samples boxes for its synthetic detection images.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops import box_iou
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_for_object_detection import generalized_box_iou

from ..batchnorm_prior import BatchNormStatistics
from ..gan_trainer import GANConfig, GANTrainer
from ..losses import attention_guidance_loss
from ..models import ConditionalDiscriminator, ConditionalGenerator, check_layout_box_size, layout_boxes
from .data import DetectionCollator, DetectionTransform, detection_processor
from .losses import background_query_loss, box_regression_loss

__all__ = [
    "DETECTION_PROBES_FILE",
    "DetectionClassProbes",
    "DetectionGANConfig",
    "DetectionGANTrainer",
    "DetectionGANTransform",
    "compute_detection_class_probes",
    "eager_attention",
]

DETECTION_PROBES_FILE = "detection_class_probes.safetensors"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@contextlib.contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """Switch ``model`` to eager attention (which returns attention maps) inside the block, then restore it."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        _restore_attention(model, previous)


def _restore_attention(model: PreTrainedModel, previous: str) -> None:
    # top-level config only: a dict leaves sub-models (the ResNet backbone has no sdpa) as they are
    model.set_attn_implementation({"": previous})


def _class_queries(logits: torch.Tensor, labels: torch.Tensor,
                   query: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image, the query giving class ``labels[b]`` the highest probability (or the given ``query``), and
    that query's probability of the class."""
    probs = logits.softmax(-1)[torch.arange(len(labels)), :, labels]  # (B, Q)
    if query is None:
        query = probs.detach().argmax(1)
    return query, probs[torch.arange(len(labels)), query]


def _latent_queries(latents: torch.Tensor, num_queries: int) -> torch.Tensor:
    """The teacher query assigned to each latent: ``argmax(z[:num_queries])``, uniform over the queries for
    ``z ~ N(0, I)`` and a function of what the generator sees, so it can learn where that query looks (the trainer
    checks ``latent_dim >= num_queries`` when it is built)."""
    return latents[:, :num_queries].argmax(1)


def _layout_queries(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
    """For each image, the query DETR's Hungarian matcher pairs with its one target ``(labels[b], targets[b])``
    (cost ``−p(y | q) + 5·L1 − 2·GIoU``, DETR's weights): the query already closest to detecting it there."""
    batch, queries = logits.shape[:2]
    probs = logits.detach().float().softmax(-1)[torch.arange(batch), :, labels]  # (B, Q)
    pred = boxes.detach().float()
    l1 = (pred - targets[:, None].float()).abs().sum(-1)  # (B, Q)
    giou = generalized_box_iou(center_to_corners_format(pred.reshape(-1, 4)),
                               center_to_corners_format(targets.float()))  # (B·Q, B)
    giou = giou.reshape(batch, queries, batch)[torch.arange(batch), :, torch.arange(batch)]  # (B, Q)
    return (-probs + 5 * l1 - 2 * giou).argmin(1)


@dataclass
class DetectionClassProbes:
    """Per-class mean decoder cross-attention of a DETR teacher: ``probes`` is ``(num_classes, tokens)``.

    ``tokens`` is the teacher's encoder feature map (height × width) at ``image_size``; ``layer`` is the decoder
    layer. Saved as safetensors with those settings; :meth:`load` checks them.
    """

    probes: torch.Tensor
    layer: int = -1
    image_size: int = 0
    counts: list[int] = field(default_factory=list)

    def save(self, folder: str) -> str:
        path = os.path.join(folder, DETECTION_PROBES_FILE)
        save_file({"probes": self.probes.contiguous().cpu(), "counts": torch.tensor(self.counts)}, path,
                  metadata={"layer": str(self.layer), "image_size": str(self.image_size)})
        return path

    @classmethod
    def load(cls, path: str) -> "DetectionClassProbes":
        from safetensors import safe_open

        if os.path.isdir(path):
            path = os.path.join(path, DETECTION_PROBES_FILE)
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        tensors = load_file(path)
        return cls(tensors["probes"], int(meta["layer"]), int(meta["image_size"]), tensors["counts"].tolist())


@torch.no_grad()
def compute_detection_class_probes(
    teacher: PreTrainedModel,
    dataset: Dataset,
    image_size: int,
    *,
    layer: int = -1,
    batch_size: int = 32,
    correct_only: bool = True,
    image_column: str = "image",
    objects_column: str = "objects",
    disable_tqdm: bool = False,
) -> DetectionClassProbes:
    """Average, per class, the teacher's cross-attention of the query that detects each real object.

    For every annotated object of class ``c`` the query with the highest ``p(c | q)`` is taken; with
    ``correct_only`` only when that query's best class is ``c`` (as the classification probes keep only correctly
    classified images). A class the teacher never detects falls back to the mean probe of all objects.
    """
    device = next(teacher.parameters()).device
    transform = DetectionTransform(detection_processor((image_size, image_size)), (image_size, image_size),
                                   image_column, objects_column)
    loader = DataLoader(dataset.with_transform(transform), batch_size=batch_size, collate_fn=DetectionCollator())
    num_classes = teacher.config.num_labels
    sums, counts = None, torch.zeros(num_classes)
    teacher.eval()
    with eager_attention(teacher):
        for batch in tqdm(loader, desc="Detection class probes", disable=disable_tqdm):
            out = teacher(pixel_values=batch["pixel_values"].to(device), output_attentions=True)
            cross = out.cross_attentions[layer].mean(1).float().cpu()  # (B, Q, tokens)
            probs = out.logits.float().softmax(-1).cpu()  # (B, Q, C + 1)
            if sums is None:
                sums = torch.zeros(num_classes, cross.shape[-1])
            for b, target in enumerate(batch["labels"]):
                for c in target["class_labels"].tolist():
                    q = probs[b, :, c].argmax()
                    if correct_only and probs[b, q, :-1].argmax() != c:
                        continue
                    sums[c] += cross[b, q]
                    counts[c] += 1
    if sums is None:
        raise ValueError("the dataset is empty: class probes need real annotated images")
    if counts.sum() == 0:
        raise ValueError("the teacher detects none of the annotated objects correctly: train it further, or pass "
                         "correct_only=False")
    fallback = sums.sum(0) / counts.sum()
    probes = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], fallback)
    return DetectionClassProbes(probes, layer, image_size, counts.long().tolist())


class DetectionGANTransform:
    """Real detection images for the GAN: ``pixel_values`` in [-1, 1] at ``image_size``² and ``labels`` = the class
    of each image's largest object (the GAN's condition). Filter out images without objects first."""

    def __init__(self, image_size: int, image_column: str = "image", objects_column: str = "objects"):
        self.size, self.image_column, self.objects_column = image_size, image_column, objects_column

    def __call__(self, batch: dict) -> dict:
        pixels, labels = [], []
        for image, objects in zip(batch[self.image_column], batch[self.objects_column]):
            x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
            x = F.interpolate(x[None] / 127.5 - 1, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
            areas = [b[2] * b[3] for b in objects["bbox"]]
            pixels.append(x.clamp(-1, 1))
            labels.append(objects["category"][max(range(len(areas)), key=areas.__getitem__)])
        return {"pixel_values": pixels, "labels": labels}


@dataclass
class DetectionGANConfig(GANConfig):
    """:class:`~hf_dfkd.GANConfig` plus the detection term; the teacher's normalisation defaults to ImageNet's
    (what ``DetrImageProcessor`` uses)."""

    lambda_detection: float = field(default=1.0, metadata={
        "help": "Weight of −log max_q p_teacher(y | q): the teacher must detect the conditioning class."})
    lambda_background: float = field(default=1.0, metadata={
        "help": "Weight of −log p_teacher(no object | q) over the other queries: one object per image (0: off, "
                "the images may fill with objects)."})
    lambda_bn: float = field(default=0.0, metadata={
        "help": "Weight of the batch-norm statistics prior: the images' features at each batch norm of the teacher's "
                "backbone should have the running mean and variance it stored in training (0: off)."})
    detection_query: Literal["best", "latent", "layout"] = field(default="best", metadata={
        "help": "Which teacher query must detect the conditioning class: 'best' (whichever does it best), 'latent' "
                "(the query argmax(z[:num_queries]) of each image's latent: DETR's queries look at different places, "
                "so different latents put the object at different places instead of wherever one query looks) or "
                "'layout' (each latent draws a box, see layout_box_size, and the query matched to it must detect the "
                "class with its box there: objects of every size at every place)."})
    layout_box_size: list[float] = field(default_factory=lambda: [0.03, 0.25], metadata={
        "help": "detection_query='layout': smallest and largest box side, as a fraction of the image side (drawn "
                "log-uniform; aspect ratios 1:2 to 2:1). The default spans the 5th to 95th percentile of the drone "
                "frames' object sides."})
    lambda_box: float = field(default=1.0, metadata={
        "help": "detection_query='layout': weight of L1 + 1 − GIoU between the teacher's box of the object query and "
                "the layout box."})
    teacher_image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN), metadata={
        "help": "Teacher input mean."})
    teacher_image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD), metadata={
        "help": "Teacher input std."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("lambda_detection", "lambda_background", "lambda_bn", "lambda_box"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.detection_query not in ("best", "latent", "layout"):
            raise ValueError(f"detection_query must be 'best', 'latent' or 'layout', got {self.detection_query!r}")
        check_layout_box_size(self.layout_box_size)


class DetectionGANTrainer(GANTrainer):
    """:class:`~hf_dfkd.GANTrainer` for a DETR teacher: the generator learns to make images in which the teacher
    detects the conditioning class, attending as on real objects of that class (see the module docstring).

    Args:
        teacher: a DETR detector (frozen; switched to eager attention while training when ``lambda_attn > 0``).
        generator, discriminator: square ``image_size`` RGB GAN components.
        args: a :class:`DetectionGANConfig`.
        train_dataset: real images as ``pixel_values`` in [-1, 1] with ``labels``
            (``dataset.with_transform(DetectionGANTransform(image_size))``).
        class_probes: :class:`DetectionClassProbes` (required when ``lambda_attn > 0``).
    """

    def __init__(self, teacher: PreTrainedModel, generator: ConditionalGenerator,
                 discriminator: ConditionalDiscriminator, args: DetectionGANConfig, train_dataset: Dataset,
                 class_probes: DetectionClassProbes | None = None):
        if not isinstance(args, DetectionGANConfig):
            raise TypeError(f"args must be a DetectionGANConfig, got {type(args).__name__}")
        self._previous_attention = teacher.config._attn_implementation
        if args.lambda_attn > 0:
            teacher.set_attn_implementation("eager")  # cross-attention maps; restored after train()
        # checked before any work: a teacher without batch norm (YOLOS) has no prior to match
        self._bn_prior = BatchNormStatistics(teacher) if args.lambda_bn > 0 else None
        super().__init__(teacher, generator, discriminator, args, train_dataset, class_probes)
        self._raw_teacher = teacher

    def _bn_statistics(self) -> BatchNormStatistics:
        if self._bn_prior is None:  # removed at the end of train()
            self._bn_prior = BatchNormStatistics(self._raw_teacher)
        return self._bn_prior

    def _check_components(self, teacher, generator, discriminator) -> None:
        from .models import check_detector

        check_detector(teacher, "teacher")
        g, d, t = generator.config, discriminator.config, teacher.config
        self._generator_size = g.image_size
        if not (g.num_classes == d.num_classes == t.num_labels):
            raise ValueError(f"class counts differ: generator {g.num_classes}, discriminator {d.num_classes}, "
                             f"teacher {t.num_labels}; build the GAN with num_classes=teacher.config.num_labels")
        if self.args.detection_query == "latent" and g.latent_dim < t.num_queries:
            raise ValueError(f"detection_query='latent' needs latent_dim >= the teacher's {t.num_queries} queries, "
                             f"the generator has {g.latent_dim}: build it with a larger latent_dim or use 'best'")
        if self.args.detection_query == "layout" and g.latent_dim < 4:
            raise ValueError(f"detection_query='layout' draws each box from z[:4], the generator's latent_dim is "
                             f"{g.latent_dim}: build it with latent_dim >= 4")
        drawn = getattr(g, "layout_box_size", None)
        if drawn is not None and (self.args.detection_query != "layout"
                                  or list(drawn) != list(self.args.layout_box_size)):
            raise ValueError(f"the generator draws layout boxes of {list(drawn)} but the GAN config asks "
                             f"detection_query={self.args.detection_query!r} with layout_box_size="
                             f"{list(self.args.layout_box_size)}: use detection_query='layout' with the same sizes")
        if (g.image_size, g.num_channels) != (d.image_size, d.num_channels) or g.num_channels != 3:
            raise ValueError(f"generator ({g.num_channels}x{g.image_size}²) and discriminator ({d.num_channels}x"
                             f"{d.image_size}²) must both make/take RGB images of one size")

    def _setup_guidance(self, teacher: nn.Module, class_probes) -> None:
        self.probe = None
        if self.args.lambda_attn > 0:
            if class_probes is None:
                raise ValueError("lambda_attn > 0 needs class_probes= (compute_detection_class_probes); "
                                 "lambda_attn=0 uses the detection term only")
            size = self._generator_size
            if class_probes.image_size and class_probes.image_size != size:
                raise ValueError(f"the class probes were computed at {class_probes.image_size}px, the generator makes "
                                 f"{size}px images: recompute them at {size}")

    def _teacher_input_size(self, teacher: nn.Module) -> int:
        return self._generator_size

    def _layout(self, latents: torch.Tensor | None) -> torch.Tensor | None:
        if self.args.detection_query != "layout" or latents is None:
            return None
        return layout_boxes(latents, *self.args.layout_box_size)

    def _teacher_terms(self, images: torch.Tensor, labels: torch.Tensor, query: torch.Tensor | None = None,
                       layout: torch.Tensor | None = None):
        attend = self.args.lambda_attn > 0
        out = self.teacher(pixel_values=self.to_teacher(images), output_attentions=attend)
        if layout is not None:
            query = _layout_queries(out.logits, out.pred_boxes, labels, layout)
        query, prob = _class_queries(out.logits.float(), labels, query)
        probe = out.cross_attentions[self.class_probes.layer].mean(1)[torch.arange(len(labels)), query] \
            if attend else None
        return out, query, prob, probe

    def guidance_losses(self, fake: torch.Tensor, labels: torch.Tensor, latents: torch.Tensor | None = None):
        a = self.args
        if a.lambda_attn == 0 and a.lambda_detection == 0 and a.lambda_background == 0 and a.lambda_bn == 0:
            return None, {}
        bn_prior = self._bn_statistics() if a.lambda_bn > 0 else None
        query = None
        if a.detection_query != "best" and latents is None:
            raise ValueError(f"detection_query={a.detection_query!r} needs the generator's latents")
        if a.detection_query == "latent":
            query = _latent_queries(latents, self._raw_teacher.config.num_queries)
        layout = self._layout(latents)
        out, query, prob, probe = self._teacher_terms(fake, labels, query, layout)
        parts = {"det_loss": -torch.log(prob + 1e-8).mean()}
        total = self.args.lambda_detection * parts["det_loss"]
        if layout is not None:
            picked = out.pred_boxes[torch.arange(len(labels)), query]
            parts["box_loss"] = box_regression_loss(picked, layout)
            total = total + a.lambda_box * parts["box_loss"]
        if bn_prior is not None:
            parts["bn_loss"] = bn_prior.loss()
            bn_prior.clear()
            total = total + a.lambda_bn * parts["bn_loss"]
        if self.args.lambda_background > 0:
            parts["bg_loss"] = background_query_loss(out.logits, query)
            total = total + self.args.lambda_background * parts["bg_loss"]
        if probe is not None:
            parts["attn_loss"] = attention_guidance_loss(probe, self.cap[labels])
            total = total + self.args.lambda_attn * parts["attn_loss"]
        return total, parts

    def evaluation_metrics(self, images: torch.Tensor, labels: torch.Tensor,
                           latents: torch.Tensor | None = None) -> dict[str, float]:
        bn_prior = self._bn_statistics() if self.args.lambda_bn > 0 else None
        layout = self._layout(latents)
        out, query, prob, probe = self._teacher_terms(images, labels, layout=layout)
        scores = out.logits.float().softmax(-1)[..., :-1]  # (B, Q, C)
        top_class = scores.flatten(1).argmax(1) % scores.shape[-1]
        metrics = {"eval_teacher_accuracy": (top_class == labels).float().mean().item(),
                   "eval_teacher_detects_class": (prob >= 0.5).float().mean().item(),
                   # crowding: real drone frames hold about one object each
                   "eval_teacher_detections_per_image": (scores.amax(-1) >= 0.5).sum(1).float().mean().item()}
        if layout is not None:
            picked = out.pred_boxes[torch.arange(len(labels)), query].float()
            iou = box_iou(center_to_corners_format(picked), center_to_corners_format(layout.float())).diag()
            # does the generator put the object where its latent says?
            metrics["eval_layout_iou"] = iou.median().item()
        if probe is not None:
            metrics["eval_attn_loss"] = attention_guidance_loss(probe, self.cap[labels]).item()
        if bn_prior is not None:
            metrics["eval_bn_loss"] = bn_prior.loss().item()
            bn_prior.clear()
        return metrics

    def train(self) -> dict[str, float]:
        try:
            return super().train()
        finally:
            _restore_attention(self._raw_teacher, self._previous_attention)
            if self._bn_prior is not None:  # the teacher goes on (to label the synthetic set) without hooks
                self._bn_prior.remove()
                self._bn_prior = None
