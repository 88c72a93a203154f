"""Distillation losses as pure functions of tensors.

Every function here is stateless and differentiable; the trainers combine them with the weights of their config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "attention_guidance_loss",
    "batchnorm_statistics_loss",
    "ce_loss",
    "kd_loss",
    "mode_seeking_loss",
    "patch_probe_loss",
    "total_distillation_loss",
]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Temperature-scaled knowledge-distillation loss.

    .. math::
        L_{KD} = \frac{T^2}{N} \sum_{i=1}^{N} \sum_{j=1}^{C} q_{ij} \log \frac{q_{ij}}{p_{ij}},
        \quad q = \mathrm{softmax}(t / T),\ p = \mathrm{softmax}(s / T)

    i.e. ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the batch (not over classes). The ``T²`` factor
    keeps the gradient scale independent of the temperature (Hinton et al., 2015).

    Args:
        student_logits: ``(N, C)`` student logits ``s``.
        teacher_logits: ``(N, C)`` teacher logits ``t`` (no gradient is needed through them).
        temperature: ``T > 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "teacher and student must share one label set"
        )
    log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature**2


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy between the student and hard labels, batch mean.

    .. math:: L_{CE} = -\frac{1}{N} \sum_{i=1}^{N} \log \mathrm{softmax}(s_i)_{y_i}

    Labels equal to ``-100`` are ignored (the transformers convention).
    """
    return F.cross_entropy(student_logits.float(), labels)


def patch_probe_loss(student_probes: torch.Tensor, teacher_probes: torch.Tensor) -> torch.Tensor:
    r"""Patch attention-probe loss: mean squared difference of the probe vectors.

    .. math:: L_{patch} = \frac{1}{N L P} \sum_{i=1}^{N} \sum_{l=1}^{L} \sum_{p=1}^{P} (a^S_{ilp} - a^T_{ilp})^2

    where ``a_{ilp} = cos(h_{il,CLS}, h_{il,p})`` is the cosine similarity between the CLS token and patch token ``p``
    in the ``l``-th chosen layer (see :func:`hf_dfkd.probes.patch_attention_probe`). Because the probes are
    cosines, the loss does not depend on either model's hidden width.

    Args:
        student_probes: ``(N, L, P)`` student probe vectors (one per chosen layer pair).
        teacher_probes: ``(N, L, P)`` teacher probe vectors, on the same patch grid.
    """
    if student_probes.shape != teacher_probes.shape:
        raise ValueError(
            f"student probes {tuple(student_probes.shape)} and teacher probes {tuple(teacher_probes.shape)} differ: "
            "use the same number of layer pairs and the same patch grid (or interpolate the teacher's probes)"
        )
    return F.mse_loss(student_probes.float(), teacher_probes.float().to(student_probes.device))


def total_distillation_loss(
    kd: torch.Tensor,
    ce: torch.Tensor,
    patch: torch.Tensor | None,
    lambda_kd: float,
    lambda_ce: float,
    lambda_patch: float,
) -> torch.Tensor:
    r"""``L_total = λ_KD·L_KD + λ_CE·L_CE + λ_patch·L_patch`` (the patch term is skipped when ``patch`` is None)."""
    total = lambda_kd * kd + lambda_ce * ce
    if patch is not None:
        total = total + lambda_patch * patch
    return total


def attention_guidance_loss(probes: torch.Tensor, class_probes: torch.Tensor) -> torch.Tensor:
    r"""Generator attention loss: one minus the cosine between each image's probe and its class's probe, batch mean.

    .. math:: L_{attn} = \frac{1}{N} \sum_{i=1}^{N} \left(1 - \cos(AP(G(z_i, y_i)), CAP_{y_i})\right)

    Args:
        probes: ``(N, P)`` CLS attention probes of the generated images (through the frozen teacher).
        class_probes: ``(N, P)`` class attention probes of each image's conditioning class, ``CAP[y]``.
    """
    if probes.shape != class_probes.shape:
        raise ValueError(f"probes {tuple(probes.shape)} and class probes {tuple(class_probes.shape)} differ")
    return (1 - F.cosine_similarity(probes.float(), class_probes.float(), dim=-1)).mean()


def mode_seeking_loss(images_a: torch.Tensor, images_b: torch.Tensor, latents_a: torch.Tensor,
                      latents_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Mode-seeking loss of a conditional generator (Mao et al., 2019, "MSGAN"): the inverse of how far two latents
    of the same class move the image, relative to how far apart the latents are.

    .. math:: L_{ms} = \left( \frac{\operatorname{mean}|G(z_a, y) - G(z_b, y)|}{\operatorname{mean}|z_a - z_b|}
              + \epsilon \right)^{-1}

    Minimising it keeps the generator from ignoring its latent (one image per class, "mode collapse"), which a
    class-conditional GAN trained on a small set or for few epochs falls into; a synthetic set without variety
    within classes teaches a student little.
    """
    ratio = (images_a - images_b).abs().float().mean() / (latents_a - latents_b).abs().float().mean()
    return 1 / (ratio + eps)


def batchnorm_statistics_loss(batch_means: Sequence[torch.Tensor], batch_vars: Sequence[torch.Tensor],
                              running_means: Sequence[torch.Tensor],
                              running_vars: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Batch-norm statistics prior (DeepInversion, Yin et al., 2020): how far the per-channel statistics of a
    batch's features, at the input of every batch-norm layer ``l`` of a frozen CNN, are from the running statistics
    the network stored while it trained on its (unavailable) data.

    .. math:: L_{BN} = \sum_{l} \lVert \mu_l(x) - \hat\mu_l \rVert_2
              + \lVert \sigma^2_l(x) - \hat\sigma^2_l \rVert_2

    Generated images that minimise it produce the feature statistics of the training images: the closest thing
    to their distribution that a data-free method can read from a convolutional teacher (a ViT stores none).

    Args:
        batch_means, batch_vars: per layer, the ``(C_l,)`` mean and (biased) variance of its input over the batch
            and the spatial positions.
        running_means, running_vars: per layer, the layer's stored ``(C_l,)`` running statistics.
    """
    lengths = {len(batch_means), len(batch_vars), len(running_means), len(running_vars)}
    if len(lengths) != 1:
        raise ValueError(f"one mean and variance per layer are needed, got lengths {sorted(lengths)}")
    if not batch_means:
        raise ValueError("no batch-norm layer statistics were given")
    total = batch_means[0].new_zeros((), dtype=torch.float32)
    for mean, var, running_mean, running_var in zip(batch_means, batch_vars, running_means, running_vars):
        if mean.shape != running_mean.shape or var.shape != running_var.shape:
            raise ValueError(f"batch statistics {tuple(mean.shape)} and running statistics "
                             f"{tuple(running_mean.shape)} of a layer differ")
        total = total + torch.linalg.vector_norm(mean.float() - running_mean.float()) \
            + torch.linalg.vector_norm(var.float() - running_var.float())
    return total
