"""Cards and Hub publishing for the three artifacts: the student, the synthetic dataset and the generator pipeline.

Every artifact folder carries a small sidecar, ``hf_dfkd.json``, with what made it (mode, teacher, settings) and how
good it is (real-split results, quality figures). Cards are rendered from it with the templates in
``model_cards/`` (``huggingface_hub.ModelCard.from_template``), so a card can be rebuilt at push time with the
repository id in its usage snippet.

Uploads go through an injectable :class:`huggingface_hub.HfApi`: tests pass a recorder and check exactly which
files and which card metadata would be pushed, with no network. What is uploaded is staged in a temporary folder
first, so a failed check uploads nothing; pickles written by ``Trainer`` (``training_args.bin``) never leave the
machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData

__all__ = [
    "MODES",
    "SIDECAR",
    "dataset_card",
    "detection_dataset_card",
    "detection_student_card",
    "pipeline_card",
    "push_pipeline",
    "push_student",
    "push_synthetic_dataset",
    "read_sidecar",
    "student_card",
    "write_sidecar",
]

SIDECAR = "hf_dfkd.json"

MODES: dict[str, str] = {
    "cgan": "the data owner trained a conditional GAN on its real images, guided by the teacher's class attention "
    "probes; the distiller received only the generator and/or its synthetic images, and the teacher.",
    "probe-only": "real images were used only to compute the teacher's class attention probes (one vector per "
    "class); the distiller received the teacher and those probes.",
    "data-free": "no real image was used at any stage; the distiller received only the teacher.",
    "real-data": "knowledge distillation on real training images (not data-free): a reference point.",
}

_STUDENT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", SIDECAR)


def _template(name: str) -> str:
    return str(resources.files("hf_dfkd").joinpath("model_cards", name))


def read_sidecar(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``hf_dfkd.json`` of an artifact folder (empty when there is none)."""
    path = Path(folder) / SIDECAR
    return json.loads(path.read_text()) if path.is_file() else {}


def write_sidecar(folder: str | os.PathLike, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into the folder's ``hf_dfkd.json`` (written to a temporary file, then renamed)."""
    data = {**read_sidecar(folder), **updates}
    path = Path(folder) / SIDECAR
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return data


def _mode_description(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; the modes are {sorted(MODES)}")
    return MODES[mode]


def _student_tags(mode: str) -> list[str]:
    """Card tags of a distilled student; ``real-data`` students are not data-free and are not tagged so."""
    return ["hf_dfkd", "knowledge-distillation", *(["data-free-knowledge-distillation"] if mode != "real-data" else []),
            f"mode-{mode}"]


def _training_images(mode: str) -> str:
    return "the real training images" if mode == "real-data" else "synthetic images"


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f} MiB"


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def _bullets(items: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in items.items()) or "- not recorded"


# ---- cards ----------------------------------------------------------------------------------------------------------


def _results_on(task: str, dataset_name: str, split: str):
    """``result(metric, value, label)`` → an ``EvalResult`` of ``task`` on that dataset split (model-index)."""

    def result(metric: str, value: float, label: str) -> EvalResult:
        return EvalResult(task_type=task, dataset_type=dataset_name, dataset_name=dataset_name, dataset_split=split,
                          metric_type=metric, metric_value=round(value, 6), metric_name=label)

    return result


def student_card(student_dir: str | os.PathLike, repo_id: str | None = None) -> ModelCard:
    """The student's model card, with ``model-index`` results, from its sidecar (written by ``hf-dfkd evaluate``).

    Raises:
        ValueError: when the folder has no real-split evaluation yet (a card without results would mislead).
    """
    sidecar = read_sidecar(student_dir)
    results, provenance = sidecar.get("evaluation"), sidecar.get("provenance", {})
    if not results:
        raise ValueError(
            f"{student_dir} has no evaluation in {SIDECAR}: run `hf-dfkd evaluate --student {student_dir} --teacher "
            "... --dataset_name <real test split>` first, so the card reports real-split accuracy"
        )
    with open(Path(student_dir) / "config.json") as f:
        config = json.load(f)
    mode = provenance.get("mode", "cgan")
    dataset_name, split = results["dataset_name"], results["split"]
    teacher = provenance.get("teacher", results.get("teacher", "unknown"))
    name = repo_id.split("/")[-1] if repo_id else Path(student_dir).resolve().name

    result = _results_on("image-classification", dataset_name, split)

    card_data = ModelCardData(
        model_name=name,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=provenance.get("license", "apache-2.0"),
        tags=[*_student_tags(mode), "vision", "image-classification"],
        base_model=teacher if "/" in teacher and not os.path.exists(teacher) else None,
        eval_results=[
            result("accuracy", results["student_accuracy"], "student accuracy"),
            result("accuracy", results["teacher_accuracy"], "teacher accuracy"),
            result("agreement", results["agreement"], "top-1 agreement with the teacher"),
            result("compression_ratio", results["compression_ratio"], "teacher / student parameters"),
        ],
    )
    training = provenance.get("training", {})
    return ModelCard.from_template(
        card_data,
        template_path=_template("student.md"),
        model_name=name,
        repo_id=repo_id or str(student_dir),
        student_family={"vit": "ViT", "deit": "DeiT"}.get(config.get("model_type"), config.get("model_type")),
        teacher=teacher,
        mode=mode,
        mode_description=_mode_description(mode),
        training_images=_training_images(mode),
        eval_dataset=f"`{dataset_name}`",
        eval_split=split,
        num_examples=results["num_examples"],
        device=results.get("device", "cpu"),
        teacher_parameters=f"{results['teacher_parameters']:,}",
        student_parameters=f"{results['student_parameters']:,}",
        compression_ratio=f"{results['compression_ratio']:.1f}",
        teacher_size=_size(results["teacher_size_bytes"]),
        student_size=_size(results["student_size_bytes"]),
        teacher_latency=f"{results['teacher_latency_ms']:.2f} ms",
        student_latency=f"{results['student_latency_ms']:.2f} ms",
        teacher_accuracy=_percent(results["teacher_accuracy"]),
        student_accuracy=_percent(results["student_accuracy"]),
        agreement=_percent(results["agreement"]),
        accuracy_ratio=f"{results['student_accuracy'] / results['teacher_accuracy']:.4f}",
        provenance=_bullets({
            "training images": provenance.get("train_dataset", "not recorded"),
            "training": ", ".join(f"{k}={v}" for k, v in training.items()) or "not recorded",
            "command": f"`{provenance['command']}`" if provenance.get("command") else "not recorded",
        }),
        image_size=config.get("image_size"),
        num_channels=config.get("num_channels"),
        image_mean=provenance.get("image_mean", [0.5]),
        image_std=provenance.get("image_std", [0.5]),
        seed=training.get("seed", "not recorded"),
    )


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def dataset_card(info: dict[str, Any], repo_id: str | None = None) -> DatasetCard:
    """The synthetic dataset's card from its sidecar (see ``SyntheticImagePipeline.write_dataset``)."""
    mode = info["mode"]
    card_data = DatasetCardData(
        license="other",
        task_categories=["image-classification"],
        tags=["synthetic", "hf_dfkd", "data-free-knowledge-distillation", f"mode-{mode}"],
        size_categories=[_size_category(info["num_images"])],
        pretty_name=info.get("pretty_name", "Synthetic images (hf_dfkd)"),
    )
    counts = "\n".join(f"| {name} | {n} |" for name, n in zip(info["class_names"], info["counts"]))
    columns = ["`image`", "`label`"] + (["`teacher_logits` (the teacher's logits, for the distillation cache)"]
                                        if info.get("teacher_logits") else [])
    return DatasetCard.from_template(
        card_data,
        template_path=_template("synthetic_dataset.md"),
        pretty_name=card_data.pretty_name,
        repo_id=repo_id or "<this folder or repo id>",
        num_images=info["num_images"],
        num_classes=len(info["counts"]),
        image_size=info["image_size"],
        num_channels=info["num_channels"],
        seed=info["seed"],
        mode=mode,
        mode_description=_mode_description(mode),
        teacher=info.get("teacher") or "not recorded",
        generator=info.get("generator") or "not recorded",
        columns=", ".join(columns),
        counts_table=counts,
        quality=_bullets(info.get("quality") or {}),
    )


def detection_dataset_card(info: dict[str, Any], repo_id: str | None = None) -> DatasetCard:
    """The card of a synthetic object-detection dataset (``DetectionSyntheticPipeline.write_dataset``'s sidecar)."""
    mode = info["mode"]
    card_data = DatasetCardData(
        license="other",
        task_categories=["object-detection"],
        tags=["synthetic", "hf_dfkd", "data-free-knowledge-distillation", f"mode-{mode}"],
        size_categories=[_size_category(info["num_images"])],
        pretty_name=info.get("pretty_name", "Synthetic detection images (hf_dfkd)"),
    )
    counts = "\n".join(f"| {name} | {n} |" for name, n in zip(info["class_names"], info["counts"]))
    return DatasetCard.from_template(
        card_data,
        template_path=_template("detection_dataset.md"),
        pretty_name=card_data.pretty_name,
        repo_id=repo_id or "<this folder or repo id>",
        num_images=info["num_images"],
        num_generated=info.get("num_generated", info["num_images"]),
        num_classes=len(info["counts"]),
        image_size=info["image_size"],
        seed=info["seed"],
        score_threshold=info.get("score_threshold", "not recorded"),
        empty_note=" (images without any are kept as background)" if info.get("keep_empty") else
        " (images where the teacher detects nothing are dropped)",
        mode=mode,
        mode_description=_mode_description(mode),
        teacher=info.get("teacher") or "not recorded",
        generator=info.get("generator") or "not recorded",
        counts_table=counts,
        quality=_bullets(info.get("quality") or {}),
    )


def detection_student_card(student_dir: str | os.PathLike, repo_id: str | None = None) -> ModelCard:
    """A distilled detector's card, with ``model-index`` mAP results, from its sidecar (``evaluation`` written by
    ``hf_dfkd.detection.run_detection_chain``).

    Raises:
        ValueError: when the folder has no real-split evaluation yet.
    """
    sidecar = read_sidecar(student_dir)
    results, provenance = sidecar.get("evaluation"), sidecar.get("provenance", {})
    if not results:
        raise ValueError(f"{student_dir} has no evaluation in {SIDECAR}: evaluate it on a real split first, so the "
                         "card reports real mAP")
    with open(Path(student_dir) / "config.json") as f:
        config = json.load(f)
    mode = provenance.get("mode", "cgan")
    dataset_name, split = results["dataset_name"], results["split"]
    teacher, student = results["teacher"], results["student"]
    teacher_name = provenance.get("teacher", "unknown")
    name = repo_id.split("/")[-1] if repo_id else Path(student_dir).resolve().name

    result = _results_on("object-detection", dataset_name, split)

    card_data = ModelCardData(
        model_name=name,
        library_name="transformers",
        pipeline_tag="object-detection",
        license=provenance.get("license", "apache-2.0"),
        tags=[*_student_tags(mode), "vision", "object-detection",
              f"target-mode-{provenance.get('target_mode', 'unknown')}"],
        base_model=teacher_name if "/" in teacher_name and not os.path.exists(teacher_name) else None,
        eval_results=[
            result("mAP", student["map"], "student mAP@[.5:.95]"),
            result("mAP@0.5", student["map_50"], "student mAP@0.5"),
            result("mAP@0.5", teacher["map_50"], "teacher mAP@0.5"),
        ],
    )
    training = provenance.get("training", {})
    ratio = student["map_50"] / teacher["map_50"] if teacher["map_50"] > 0 else float("nan")
    return ModelCard.from_template(
        card_data,
        template_path=_template("detection_student.md"),
        model_name=name,
        repo_id=repo_id or str(student_dir),
        student_family={"detr": "DETR", "yolos": "YOLOS"}.get(config.get("model_type"), config.get("model_type")),
        teacher=teacher_name,
        target_mode=provenance.get("target_mode", "not recorded"),
        mode=mode,
        mode_description=_mode_description(mode),
        training_images=_training_images(mode),
        eval_dataset=f"`{dataset_name}`",
        eval_split=split,
        num_examples=results["num_examples"],
        image_size=results["image_size"],
        device=results.get("device", "cpu"),
        teacher_parameters=f"{teacher['parameters']:,}",
        student_parameters=f"{student['parameters']:,}",
        compression_ratio=f"{teacher['parameters'] / student['parameters']:.1f}",
        teacher_latency=f"{1000 * teacher['latency_s_per_image']:.2f} ms",
        student_latency=f"{1000 * student['latency_s_per_image']:.2f} ms",
        teacher_map=f"{teacher['map']:.4f}",
        teacher_map_50=f"{teacher['map_50']:.4f}",
        student_map=f"{student['map']:.4f}",
        student_map_50=f"{student['map_50']:.4f}",
        map_50_ratio=f"{ratio:.3f}",
        provenance=_bullets({
            "training images": provenance.get("train_dataset", "not recorded"),
            "training": ", ".join(f"{k}={v}" for k, v in training.items()) or "not recorded",
            "command": f"`{provenance['command']}`" if provenance.get("command") else "not recorded",
        }),
        seed=training.get("seed", "not recorded"),
    )


def pipeline_card(pipeline_dir: str | os.PathLike, repo_id: str | None = None) -> ModelCard:
    """The generator pipeline's card, from its ``model_index.json``, component configs and sidecar."""
    folder = Path(pipeline_dir)
    index = json.loads((folder / "model_index.json").read_text())
    g = json.loads((folder / "image_generator" / "config.json").read_text())
    info = read_sidecar(folder)
    mode = index.get("mode", "cgan")
    card_data = ModelCardData(
        library_name="diffusers",
        license=info.get("license", "apache-2.0"),
        tags=["hf_dfkd", "gan", "conditional-image-generation", "synthetic-data", f"mode-{mode}"],
    )
    components = [f"`{k}` ({v[1]})" for k, v in index.items()
                  if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)]  # [library, class] pairs
    return ModelCard.from_template(
        card_data,
        template_path=_template("generator_pipeline.md"),
        pretty_name=info.get("pretty_name", "Synthetic image generator (hf_dfkd)"),
        repo_id=repo_id or str(pipeline_dir),
        generator_parameters=f"{info.get('generator_parameters', 0):,}",
        image_size=g["image_size"],
        num_channels=g["num_channels"],
        num_classes=g["num_classes"],
        teacher=info.get("teacher") or "not recorded",
        mode=mode,
        mode_description=_mode_description(mode),
        components=", ".join(components),
        quality=_bullets(info.get("quality") or {}),
        training=_bullets(info.get("gan") or {}),
    )


# ---- pushing --------------------------------------------------------------------------------------------------------


def _upload(staged: str, repo_id: str, repo_type: str, api: HfApi | None, private: bool | None,
            commit_message: str) -> list[str]:
    api = api if api is not None else HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=staged, repo_type=repo_type, commit_message=commit_message)
    return sorted(str(p.relative_to(staged)) for p in Path(staged).rglob("*") if p.is_file())


def push_student(student_dir: str | os.PathLike, repo_id: str, *, api: HfApi | None = None,
                 private: bool | None = None, commit_message: str = "Upload student distilled with hf_dfkd") -> list[str]:
    """Upload the student (config, safetensors weights, sidecar) with a model card carrying its real-split results.

    Returns the uploaded file names. The folder must have been evaluated (``hf-dfkd evaluate``).
    """
    folder = Path(student_dir)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} is not a saved student: it needs config.json and model.safetensors")
    is_detector = read_sidecar(folder).get("task") == "object-detection"
    card = (detection_student_card if is_detector else student_card)(folder, repo_id)
    with tempfile.TemporaryDirectory(prefix="hf_dfkd-push-") as staged:
        for name in _STUDENT_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, staged)
        card.save(os.path.join(staged, "README.md"))
        return _upload(staged, repo_id, "model", api, private, commit_message)


def push_synthetic_dataset(dataset_dir: str | os.PathLike, repo_id: str, *, api: HfApi | None = None,
                           private: bool | None = None, split: str = "train",
                           commit_message: str = "Upload synthetic dataset made with hf_dfkd") -> list[str]:
    """Upload a dataset written by ``write_dataset`` in the Hub's layout (Parquet shards + dataset card)."""
    from datasets import load_from_disk

    folder = Path(dataset_dir)
    info = read_sidecar(folder)
    if not (folder / "state.json").is_file() or not info:
        raise FileNotFoundError(f"{folder} is not a synthetic dataset written by SyntheticImagePipeline.write_dataset")
    dataset = load_from_disk(str(folder))
    with tempfile.TemporaryDirectory(prefix="hf_dfkd-push-") as staged:
        os.makedirs(os.path.join(staged, "data"))
        # Parquet keeps the datasets features (Image, ClassLabel) in its schema metadata
        dataset.to_parquet(os.path.join(staged, "data", f"{split}-00000-of-00001.parquet"))
        shutil.copy2(folder / SIDECAR, staged)
        card = (detection_dataset_card if info.get("task") == "object-detection" else dataset_card)(info, repo_id)
        card.data.configs = [{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"}]}]
        card.save(os.path.join(staged, "README.md"))
        return _upload(staged, repo_id, "dataset", api, private, commit_message)


def push_pipeline(pipeline_dir: str | os.PathLike, repo_id: str, *, api: HfApi | None = None,
                  private: bool | None = None,
                  commit_message: str = "Upload generator pipeline made with hf_dfkd") -> list[str]:
    """Upload a ``SyntheticImagePipeline`` folder (safetensors components, ``model_index.json``) with its card."""
    folder = Path(pipeline_dir)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline (no model_index.json)")
    card = pipeline_card(folder, repo_id)
    with tempfile.TemporaryDirectory(prefix="hf_dfkd-push-") as staged:
        shutil.copytree(folder, staged, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.pkl"))
        card.save(os.path.join(staged, "README.md"))
        return _upload(staged, repo_id, "model", api, private, commit_message)
