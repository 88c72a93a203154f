"""Teacher-output cache: precompute the teacher's logits (and patch probes) as dataset columns.

For a fixed (e.g. synthetic) dataset the teacher's forward pass is the same every epoch; computing it once in one
batched pass and storing it next to the images removes the largest cost of each distillation step.
:class:`~hf_dfkd.DistillationTrainer` uses these columns, and skips the teacher, whenever a batch carries them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from accelerate import PartialState
from datasets import Array2D, Dataset, Features, Sequence as SequenceFeature, Value
from datasets.fingerprint import Hasher
from torch import nn

from .data import batch_pixel_values
from .probes import num_prefix_tokens, patch_probes_from_hidden_states

__all__ = ["TEACHER_LOGITS_COLUMN", "TEACHER_PROBES_COLUMN", "add_teacher_outputs"]

TEACHER_LOGITS_COLUMN = "teacher_logits"
TEACHER_PROBES_COLUMN = "teacher_patch_probes"


def teacher_fingerprint(teacher: nn.Module) -> str:
    """A hash of the teacher's config and weights (one checksum per tensor), equal for equal teachers."""
    # Cheap and deterministic: the config plus one checksum per tensor, instead of hashing every weight.
    sums = [float(p.detach().double().sum()) for p in teacher.state_dict().values() if p.is_floating_point()]
    config = teacher.config.to_json_string() if hasattr(teacher, "config") else type(teacher).__name__
    return Hasher.hash((config, sums))


def add_teacher_outputs(
    dataset: Dataset,
    teacher: nn.Module,
    transform: Callable[[dict], dict] | None = None,
    *,
    teacher_layers: Sequence[int] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    desc: str = "Caching teacher outputs",
) -> Dataset:
    """Add ``teacher_logits`` (and ``teacher_patch_probes``) columns to ``dataset`` in one batched pass.

    Args:
        dataset: a ``datasets.Dataset`` (not a transformed view: pass the transform separately).
        teacher: the teacher model (its outputs must have ``logits``).
        transform: batched function turning a raw batch into a dict with ``pixel_values`` (e.g.
            :class:`~hf_dfkd.ImageTransform`); None when the dataset already holds ``pixel_values``.
        teacher_layers: 1-based teacher blocks whose patch attention probes are stored as a
            ``(len(teacher_layers), num_patches)`` array per image: the teacher side of the trainer's
            ``patch_layer_pairs`` (see :meth:`DistillationTrainer.cache_teacher_outputs`). None stores logits only.
        batch_size: images per teacher forward pass.
        device: where the teacher runs (default: the Accelerate state's device).

    Returns:
        A new dataset with the extra columns; the original columns are unchanged.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"add_teacher_outputs needs a datasets.Dataset, got {type(dataset).__name__}")
    if transform is None and "pixel_values" not in dataset.column_names:
        raise ValueError(
            f"the dataset has no 'pixel_values' column (columns: {dataset.column_names}); pass a transform, e.g. "
            "hf_dfkd.ImageTransform.from_model_config(teacher.config)"
        )
    device = torch.device(device) if device is not None else PartialState().device
    teacher = teacher.eval().requires_grad_(False).to(device)
    layers = list(teacher_layers) if teacher_layers else []
    prefix = num_prefix_tokens(teacher) if layers else 0
    if layers:
        depth = teacher.config.num_hidden_layers
        bad = [l for l in layers if not 1 <= l <= depth]
        if bad:
            raise ValueError(f"teacher_layers {bad} out of range: the teacher has blocks 1..{depth}")

    def compute(batch: dict) -> dict:
        pixel_values = batch_pixel_values(batch, transform)
        with torch.inference_mode():
            out = teacher(pixel_values=pixel_values.to(device), output_hidden_states=bool(layers))
        result = {TEACHER_LOGITS_COLUMN: out.logits.float().cpu().numpy()}
        if layers:
            probes = patch_probes_from_hidden_states(out.hidden_states, layers, prefix)
            result[TEACHER_PROBES_COLUMN] = probes.cpu().numpy()
        return result

    # Run on one example first: wrong inputs fail here, not after a long pass, and the output sizes set the features.
    first = compute(dataset[:1])
    num_labels = first[TEACHER_LOGITS_COLUMN].shape[-1]
    features = dict(dataset.features)
    features[TEACHER_LOGITS_COLUMN] = SequenceFeature(Value("float32"), length=num_labels)
    if layers:
        features[TEACHER_PROBES_COLUMN] = Array2D(shape=first[TEACHER_PROBES_COLUMN].shape[1:], dtype="float32")
    fingerprint = Hasher.hash((dataset._fingerprint, teacher_fingerprint(teacher), layers, "hf_dfkd.teacher_cache"))
    return dataset.map(
        compute,
        batched=True,
        batch_size=batch_size,
        features=Features(features),
        new_fingerprint=fingerprint,
        desc=desc,
    )
