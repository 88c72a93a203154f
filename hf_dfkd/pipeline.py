"""``SyntheticImagePipeline``: class-conditional image generation as a diffusers pipeline that writes datasets."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image, Sequence as SequenceFeature, Value
from datasets.fingerprint import Hasher
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image as PILImage
from transformers import PreTrainedModel

from .data import TeacherInputAdapter
from .hub import dataset_card, write_sidecar
from .models import ConditionalGenerator

__all__ = ["SyntheticImagePipeline", "balanced_labels"]


@contextlib.contextmanager
def staged_dataset_folder(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[tuple[str, str]]:
    """Yield ``(work, staged)``: a private folder for caches and the path to save the dataset at. When the block
    succeeds, ``staged`` replaces ``output_dir``; the work folder goes either way, so a failed or interrupted
    write never leaves a folder that looks complete under the final name."""
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} exists: choose another folder or pass overwrite=True")
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".hf_dfkd-", dir=parent)
    try:
        staged = os.path.join(work, "dataset")
        yield work, staged
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staged, output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def balanced_labels(num_images: int, num_classes: int) -> list[int]:
    """``num_images`` labels cycling over the classes: counts differ by at most one, nothing is dropped.

    When ``num_images`` is not a multiple of ``num_classes`` the first ``num_images % num_classes`` classes get one
    image more.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    return [i % num_classes for i in range(num_images)]


class SyntheticImagePipeline(DiffusionPipeline):
    """Generate labelled synthetic images with a trained :class:`~hf_dfkd.models.ConditionalGenerator`.

    Components: ``image_generator`` (the GAN generator; not named ``generator``, which is the ``torch.Generator``
    argument everywhere in diffusers) and, optionally, ``teacher`` (the classifier the generator was trained
    against: its class names label the images and its logits can be stored for the distillation cache).

    Example::

        pipe = SyntheticImagePipeline(image_generator=G, teacher=teacher)
        images = pipe(num_images_per_class=4, generator=torch.Generator().manual_seed(0)).images
        pipe.save_pretrained("my-pipeline")
        dataset = pipe.write_dataset(10_000, "synthetic-digits", seed=0, teacher_logits=True)
    """

    model_cpu_offload_seq = "image_generator"
    _optional_components = ["teacher"]

    def __init__(
        self,
        image_generator: ConditionalGenerator,
        teacher: PreTrainedModel | None = None,
        teacher_image_mean: Sequence[float] = (0.5,),
        teacher_image_std: Sequence[float] = (0.5,),
        mode: str = "cgan",
    ):
        super().__init__()
        self.register_modules(image_generator=image_generator, teacher=teacher)
        self.register_to_config(teacher_image_mean=list(teacher_image_mean), teacher_image_std=list(teacher_image_std),
                                mode=mode)

    @property
    def num_classes(self) -> int:
        return self.image_generator.config.num_classes

    @property
    def class_names(self) -> list[str]:
        """The teacher's class names when a teacher is attached, else ``"0"``, ``"1"``, …"""
        if self.teacher is not None and getattr(self.teacher.config, "id2label", None):
            id2label = {int(k): v for k, v in self.teacher.config.id2label.items()}
            return [id2label[i] for i in range(self.num_classes)]
        return [str(i) for i in range(self.num_classes)]

    def _labels(self, class_labels, num_images_per_class) -> torch.Tensor:
        if (class_labels is None) == (num_images_per_class is None):
            raise ValueError("pass exactly one of class_labels= (a list of class ids) or num_images_per_class=")
        if class_labels is None:
            return torch.arange(self.num_classes).repeat_interleave(int(num_images_per_class))
        labels = torch.as_tensor(class_labels, dtype=torch.long).flatten()
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(bad):
            raise ValueError(f"class labels {bad.tolist()[:5]} are outside 0..{self.num_classes - 1}")
        return labels

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Sequence[int] | torch.Tensor | None = None,
        num_images_per_class: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        batch_size: int = 256,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per entry of ``class_labels`` (or ``num_images_per_class`` for every class).

        Args:
            generator: ``torch.Generator`` for reproducible latents.
            latents: ``(N, latent_dim)`` latents to use instead of sampling.
            batch_size: images per generator forward pass.
            output_type: ``"pil"`` (list of PIL images), ``"np"`` (``(N, H, W, C)`` float in [0, 1]) or ``"pt"``
                (``(N, C, H, W)`` float in [0, 1]).

        Returns:
            ``ImagePipelineOutput(images=...)``, or a tuple ``(images,)`` with ``return_dict=False``.
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        labels = self._labels(class_labels, num_images_per_class)
        images = self._generate(labels, generator, latents, batch_size, progress=True)
        images = self._postprocess(images, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _generate(self, labels, generator, latents, batch_size, progress: bool, device=None) -> torch.Tensor:
        model = self.image_generator
        model.eval()
        device, dtype = device or self._execution_device, model.dtype
        latent_dim = model.config.latent_dim
        if latents is None:
            latents = randn_tensor((len(labels), latent_dim), generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != (len(labels), latent_dim):
            raise ValueError(f"latents must be ({len(labels)}, {latent_dim}), got {tuple(latents.shape)}")
        outputs = []
        starts = range(0, len(labels), batch_size)
        for start in self.progress_bar(starts) if progress else starts:
            batch = slice(start, start + batch_size)
            outputs.append(model(latents[batch].to(device, dtype), labels[batch].to(device)))
        return torch.cat(outputs)

    @staticmethod
    def _postprocess(images: torch.Tensor, output_type: str):
        images = ((images.float() + 1) / 2).clamp(0, 1)
        if output_type == "pt":
            return images.cpu()
        array = images.cpu().permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return array
        return [_to_pil(x) for x in array]

    # ---- datasets ------------------------------------------------------------------------------------------------

    def write_dataset(
        self,
        num_images: int,
        output_dir: str | os.PathLike,
        *,
        seed: int = 0,
        batch_size: int = 256,
        teacher_logits: bool = False,
        quality: dict[str, float] | None = None,
        overwrite: bool = False,
    ) -> Dataset:
        """Generate ``num_images`` images balanced over classes and save them as a ``datasets`` dataset folder.

        Features: ``image`` (PNG), ``label`` (ClassLabel with the teacher's class names) and, with
        ``teacher_logits=True``, ``teacher_logits`` (for :class:`~hf_dfkd.DistillationTrainer`'s cache). Images
        stream to disk batch by batch; the folder appears under its final name only when complete, with a dataset
        card (``README.md``) stating the mode, teacher, generator, counts and ``quality`` figures (e.g. FID). The
        same ``seed`` gives the same dataset, byte for byte.

        Returns:
            The dataset, loaded from ``output_dir`` (``datasets.load_from_disk``).
        """
        output_dir = os.fspath(output_dir)
        if teacher_logits and self.teacher is None:
            raise ValueError("teacher_logits=True needs a pipeline with a teacher component")
        balanced_labels(num_images, self.num_classes)  # validates num_images before any work
        features = {"image": Image(), "label": ClassLabel(names=self.class_names)}
        if teacher_logits:
            features["teacher_logits"] = SequenceFeature(Value("float32"), length=self.num_classes)
        fingerprint = Hasher.hash(("hf_dfkd.synthetic", self._generator_checksum(), num_images, seed, teacher_logits))

        with staged_dataset_folder(output_dir, overwrite) as (work, staged):
            dataset = Dataset.from_generator(
                self._examples,
                features=Features(features),
                cache_dir=os.path.join(work, "cache"),
                # no list in gen_kwargs: datasets would shard it into one generator call per element
                gen_kwargs={"num_images": num_images, "seed": seed, "batch_size": batch_size, "with_logits": teacher_logits},
                fingerprint=fingerprint,
            )
            dataset.save_to_disk(staged)
            info = self.dataset_info(num_images, seed, teacher_logits, quality)
            if teacher_logits:  # free with the logits: how often the teacher sees the conditioning class
                columns = dataset.select_columns(["teacher_logits", "label"]).with_format("numpy")[:]
                agree = columns["teacher_logits"].argmax(-1) == columns["label"]
                info["quality"] = {"teacher accuracy on the images (vs their class)": round(float(agree.mean()), 4),
                                   **info["quality"]}
            write_sidecar(staged, **info)
            dataset_card(info).save(os.path.join(staged, "README.md"))
        from datasets import load_from_disk

        return load_from_disk(output_dir)

    def _examples(self, num_images: int, seed: int, batch_size: int, with_logits: bool):
        # One seeded CPU generator for the whole set: the latents, hence the images, depend only on the seed.
        labels = balanced_labels(num_images, self.num_classes)
        g = torch.Generator().manual_seed(seed)
        device = self._execution_device
        latent_dim = self.image_generator.config.latent_dim
        adapter = None
        if with_logits:
            adapter = TeacherInputAdapter(self.config.teacher_image_mean, self.config.teacher_image_std,
                                          self.teacher.config.image_size).to(device)
            self.teacher.eval()
        for start in self.progress_bar(range(0, len(labels), batch_size)):
            batch_labels = torch.tensor(labels[start : start + batch_size])
            latents = torch.randn(len(batch_labels), latent_dim, generator=g)
            with torch.no_grad():
                images = self._generate(batch_labels, None, latents, len(batch_labels), progress=False, device=device)
                logits = self.teacher(pixel_values=adapter(images)).logits.float().cpu() if with_logits else None
            array = self._postprocess(images, "np")
            for i, label in enumerate(batch_labels.tolist()):
                example = {"image": _to_pil(array[i]), "label": label}
                if with_logits:
                    example["teacher_logits"] = logits[i].numpy()
                yield example

    def _generator_checksum(self) -> str:
        return Hasher.hash([float(p.double().sum()) for p in self.image_generator.state_dict().values()])

    def dataset_info(self, num_images: int, seed: int, teacher_logits: bool, quality: dict | None) -> dict:
        """What the dataset card and the sidecar ``hf_dfkd.json`` of a written dataset say about it."""
        g = self.image_generator.config
        return {
            "mode": self.config.mode,
            "teacher": (getattr(self.teacher.config, "_name_or_path", None) or self.teacher.config.model_type)
            if self.teacher is not None else None,
            "generator": getattr(self, "name_or_path", None) or f"ConditionalGenerator({g.image_size}x{g.image_size})",
            "num_images": num_images,
            "seed": seed,
            "class_names": self.class_names,
            "counts": np.bincount(balanced_labels(num_images, self.num_classes), minlength=self.num_classes).tolist(),
            "image_size": g.image_size,
            "num_channels": g.num_channels,
            "teacher_logits": teacher_logits,
            "quality": quality or {},
        }


def _to_pil(array: np.ndarray) -> PILImage.Image:
    pixels = np.round(array * 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        return PILImage.fromarray(pixels[..., 0], mode="L")
    return PILImage.fromarray(pixels, mode="RGB")
