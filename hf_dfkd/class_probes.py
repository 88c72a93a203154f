"""Class attention probes: one mean CLS-attention vector per class, the data owner's shareable summary.

``CAP_c = mean over real images x of class c (classified correctly by the teacher) of AP(x)``, where ``AP`` is the
hooked CLS attention probe of :class:`hf_dfkd.probes.CLSAttentionProbe`. The probes reveal no image; the generator's
attention loss pulls generated images of class ``c`` towards ``CAP_c``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .data import batch_pixel_values
from .probes import CLSAttentionProbe, HeadReduction, get_encoder_layers, patch_grid

__all__ = ["CLASS_PROBES_FILE", "ClassAttentionProbes", "compute_class_attention_probes"]

CLASS_PROBES_FILE = "class_attention_probes.safetensors"


@dataclass
class ClassAttentionProbes:
    """A ``(num_classes, num_patches)`` tensor of class attention probes and the settings that made it."""

    probes: torch.Tensor
    layer: list[int]
    head_reduction: str
    model_type: str
    counts: list[int] = field(default_factory=list)  # images averaged per class
    teacher_name_or_path: str | None = None

    @property
    def num_classes(self) -> int:
        return self.probes.shape[0]

    @property
    def num_patches(self) -> int:
        return self.probes.shape[1]

    def check_fits(self, teacher: nn.Module) -> None:
        """Raise ``ValueError`` unless these probes were made for a teacher of this shape and layer count."""
        config = teacher.config
        expected = (config.num_labels, patch_grid(teacher)[0] * patch_grid(teacher)[1])
        problems = []
        if tuple(self.probes.shape) != expected:
            problems.append(f"probes are {tuple(self.probes.shape)} but the teacher needs {expected} "
                            "(num_classes, num_patches)")
        if self.model_type != config.model_type:
            problems.append(f"probes come from a {self.model_type!r} model, the teacher is {config.model_type!r}")
        depth = len(get_encoder_layers(teacher))
        if any(not 0 <= l < depth for l in self.layer):
            problems.append(f"probes use layers {self.layer}, the teacher has {depth} blocks")
        if problems:
            raise ValueError("class attention probes do not fit this teacher: " + "; ".join(problems) +
                             ". Recompute them with hf_dfkd.compute_class_attention_probes(teacher, dataset).")

    def save(self, path: str | os.PathLike) -> str:
        """Write safetensors (the tensor + settings as metadata); a folder gets ``class_attention_probes.safetensors``."""
        path = os.fspath(path)
        if os.path.isdir(path) or not path.endswith(".safetensors"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, CLASS_PROBES_FILE)
        metadata = {
            "format": "hf_dfkd.class_attention_probes",
            "layer": json.dumps(self.layer),
            "head_reduction": self.head_reduction,
            "model_type": self.model_type,
            "counts": json.dumps(self.counts),
            "teacher_name_or_path": self.teacher_name_or_path or "",
        }
        tmp = path + ".tmp"
        save_file({"probes": self.probes.detach().float().cpu().contiguous()}, tmp, metadata=metadata)
        os.replace(tmp, path)  # never leave a half-written file under the final name
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, teacher: nn.Module | None = None) -> ClassAttentionProbes:
        """Read probes written by :meth:`save` (a file or a folder); with ``teacher``, refuse probes that do not fit."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CLASS_PROBES_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no class attention probes at {path}")
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != "hf_dfkd.class_attention_probes":
            raise ValueError(f"{path} is not a class attention probes file written by hf_dfkd")
        probes = cls(
            probes=load_file(path)["probes"],
            layer=json.loads(metadata["layer"]),
            head_reduction=metadata["head_reduction"],
            model_type=metadata["model_type"],
            counts=json.loads(metadata.get("counts", "[]")),
            teacher_name_or_path=metadata.get("teacher_name_or_path") or None,
        )
        if teacher is not None:
            probes.check_fits(teacher)
        return probes


@torch.no_grad()
def compute_class_attention_probes(
    teacher: nn.Module,
    dataset: Dataset,
    transform: Callable[[dict], dict] | None = None,
    *,
    layer: int | Sequence[int] = -1,
    head_reduction: HeadReduction = "mean",
    only_correct: bool = True,
    label_column: str = "label",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> ClassAttentionProbes:
    """Mean CLS attention probe per class over ``dataset`` (batched, hooked probe, sdpa attention kept).

    Args:
        teacher: a transformers ViT/DeiT classifier.
        dataset: real images with labels (the data owner's).
        transform: batched function to ``pixel_values`` (e.g. :class:`~hf_dfkd.ImageTransform`); None when the
            dataset already has ``pixel_values``.
        layer, head_reduction: which attention map and how heads are combined (see ``CLSAttentionProbe``).
        only_correct: average only images the teacher classifies correctly (the method's default).
        label_column: the dataset's label column.

    Raises:
        ValueError: when a class has no (correctly classified) image, so its probe would be undefined.
    """
    if label_column not in dataset.column_names:
        raise ValueError(f"the dataset has no {label_column!r} column (columns: {dataset.column_names})")
    if head_reduction == "none":
        raise ValueError("class attention probes need one vector per class: use head_reduction 'mean' or 'max'")
    device = torch.device(device) if device is not None else PartialState().device
    teacher = teacher.eval().to(device)
    probe = CLSAttentionProbe(teacher, layer=layer, head_reduction=head_reduction)
    num_classes = teacher.config.num_labels
    sums = None
    counts = torch.zeros(num_classes, dtype=torch.long)
    for start in tqdm(range(0, len(dataset), batch_size), desc="Class attention probes", disable=not show_progress):
        batch = dataset[start : start + batch_size]
        pixel_values = batch_pixel_values(batch, transform)
        labels = torch.as_tensor(batch[label_column])
        ap, outputs = probe(pixel_values.to(device))
        ap, predictions = ap.float().cpu(), outputs.logits.argmax(-1).cpu()
        keep = predictions == labels if only_correct else torch.ones_like(labels, dtype=torch.bool)
        if sums is None:
            sums = torch.zeros(num_classes, ap.shape[-1])
        sums.index_add_(0, labels[keep], ap[keep])
        counts += torch.bincount(labels[keep], minlength=num_classes)
    empty = [c for c in range(num_classes) if counts[c] == 0]
    if empty:
        names = [teacher.config.id2label.get(c, c) for c in empty]
        raise ValueError(
            f"no {'correctly classified ' if only_correct else ''}image of classes {names}: their probes are "
            "undefined. Use more images" + (", or only_correct=False" if only_correct else "")
        )
    return ClassAttentionProbes(
        probes=sums / counts[:, None],
        layer=probe.layers,
        head_reduction=head_reduction,
        model_type=teacher.config.model_type,
        counts=counts.tolist(),
        teacher_name_or_path=getattr(teacher.config, "_name_or_path", None) or None,
    )
