"""Loading and writing the artifacts that the steps exchange (models, datasets), with errors that say what to fix."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch
from accelerate import PartialState
from datasets import ClassLabel, Dataset, load_dataset, load_from_disk
from torch import nn
from transformers import AutoModelForImageClassification, PreTrainedModel

__all__ = [
    "EMBEDDED_DIGITS",
    "atomic_folder",
    "check_image_dataset",
    "class_names",
    "load_classifier",
    "load_image_dataset",
    "load_model",
    "require_columns",
]

EMBEDDED_DIGITS = "sklearn:digits"
"""Dataset name of the embedded default: scikit-learn's digits (see :func:`hf_dfkd.load_digits_dataset`)."""


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.rstrip(os.sep) and name.count("/") > 1


def load_classifier(model: str | os.PathLike | PreTrainedModel, role: str = "model") -> PreTrainedModel:
    """An ``AutoModelForImageClassification`` from a local folder or a Hub id, in float32; models pass through.

    float32 because transformers v5's ``from_pretrained`` defaults to ``dtype="auto"``, which may give a
    half-precision model to train. Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` for a
    folder that holds no image classifier, before any download or long work.
    """
    if isinstance(model, nn.Module):
        return model
    return load_model(model, role, AutoModelForImageClassification, "ForImageClassification", "an image classifier")


def load_model(model: str | os.PathLike, role: str, auto_class, architecture_suffix: str, what: str) -> PreTrainedModel:
    """``auto_class.from_pretrained(model)`` in float32, after checking a local folder's ``config.json`` names an
    architecture ending in ``architecture_suffix`` (``what`` it is, for the errors), before any download."""
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"{role} must be a model or a Hub id / local folder, got {type(model).__name__}")
    name = os.fspath(model)
    if os.path.isdir(name):
        config_path = os.path.join(name, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"the {role} folder {name} has no config.json: is it a saved model?")
        with open(config_path) as f:
            config = json.load(f)
        architectures = config.get("architectures") or []
        if not any(a.endswith(architecture_suffix) for a in architectures):
            raise ValueError(
                f"the {role} at {name} is not {what} (model_type={config.get('model_type')!r}, "
                f"architectures={architectures}); pass a *{architecture_suffix} model folder"
            )
    elif os.path.exists(name) or _looks_local(name):
        raise FileNotFoundError(f"the {role} folder {name} does not exist (nor is it a Hub id)")
    try:
        return auto_class.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load the {role} {name!r} as {what}: {err}") from err


def load_image_dataset(name_or_path: str | os.PathLike, split: str, *, seed: int = 0) -> Dataset:
    """One split of a dataset: a Hub id, a folder in Hub layout, a ``save_to_disk`` folder, or ``"sklearn:digits"``.

    ``"sklearn:digits"`` is the embedded default (scikit-learn's digits, stratified split fixed by ``seed``).
    """
    name = os.fspath(name_or_path)
    if name == EMBEDDED_DIGITS:
        from .data import load_digits_dataset

        data = load_digits_dataset(seed=seed)
    elif os.path.isdir(name) and any(
        os.path.isfile(os.path.join(name, f)) for f in ("state.json", "dataset_dict.json")
    ):
        data = load_from_disk(name)
    elif os.path.isdir(name) or not (os.path.exists(name) or _looks_local(name)):
        data = load_dataset(name)  # a local folder in Hub layout, or a Hub id
    else:
        raise FileNotFoundError(f"dataset {name!r} does not exist: pass a Hub id, a folder, or {EMBEDDED_DIGITS!r}")
    if isinstance(data, Dataset):
        return data
    if split not in data:
        raise ValueError(f"dataset {name!r} has no split {split!r}; its splits are {list(data)}")
    return data[split]


def require_columns(dataset: Dataset, columns: dict[str, str], where: str) -> None:
    """Raise a ``ValueError`` naming the missing columns (``{column: what it is for}``) and the ones found."""
    missing = {c: why for c, why in columns.items() if c not in dataset.column_names}
    if missing:
        wanted = ", ".join(f"{c!r} ({why})" for c, why in missing.items())
        raise ValueError(f"{where} lacks the columns {wanted}; it has {dataset.column_names}")


def check_image_dataset(dataset: Dataset, image_column: str, label_column: str | None, where: str) -> None:
    """Raise a ``ValueError`` unless ``dataset`` has the image column (and the label column, when one is needed)."""
    columns = {image_column: "the images"}
    if label_column:
        columns[label_column] = "the class labels"
    require_columns(dataset, columns, where)


def class_names(dataset: Dataset, label_column: str = "label") -> list[str]:
    """Names of a ``ClassLabel`` column (or ``"0"``… ``"K-1"`` for plain integer labels)."""
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return [str(i) for i in range(int(max(dataset[label_column])) + 1)]


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary sibling folder to write into; it replaces ``path`` only when the block succeeds.

    So an interrupted step never leaves a folder that looks complete under the final name. Under several processes
    only the main one publishes: the others get a private scratch folder, deleted afterwards.
    """
    path = os.fspath(path).rstrip(os.sep)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists: choose another folder or allow overwriting")
    # RANK too: a PartialState made before the launcher's process group is set up sees one process
    if not PartialState().is_main_process or int(os.environ.get("RANK", "0")) != 0:
        scratch = tempfile.mkdtemp(prefix="hf_dfkd-scratch-")
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
