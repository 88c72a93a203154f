"""Attention-guided conditional GAN training on Accelerate (``GANConfig`` + ``GANTrainer``).

Generator loss ``L_G = L_adv + λ_attn · (1 − cos(AP_teacher(G(z, y)), CAP_y))``; ``λ_attn = 0`` is the vanilla cGAN,
the baseline of the paper's ablation. The teacher is frozen but gradients flow through it into the generator, and
its input normalisation sits between the two (:class:`~hf_dfkd.data.TeacherInputAdapter`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import default_data_collator

from .class_probes import ClassAttentionProbes
from .data import TeacherInputAdapter
from .losses import attention_guidance_loss, mode_seeking_loss
from .models import ConditionalDiscriminator, ConditionalGenerator
from .probes import CLSAttentionProbe

__all__ = ["GANConfig", "GANTrainer", "NonFiniteGANLossError"]

STATE_FILE = "gan_trainer_state.json"


class NonFiniteGANLossError(RuntimeError):
    """A generator or discriminator loss became NaN/inf; training stopped before that update."""


@dataclass
class GANConfig:
    """Arguments of :class:`GANTrainer` (parsable with ``HfArgumentParser``). Defaults: the paper's optimiser."""

    output_dir: str = field(metadata={"help": "Where checkpoints, sample grids, curves and the final models go."})
    lambda_attn: float = field(default=1.0, metadata={"help": "Weight of the attention loss; 0 = vanilla cGAN."})
    lambda_diversity: float = field(default=0.2, metadata={
        "help": "Weight of the mode-seeking loss (MSGAN) against one-image-per-class collapse; 0 = the paper's loss."})
    num_train_epochs: int = field(default=10, metadata={"help": "Epochs over the real images."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0: total steps, overriding num_train_epochs."})
    batch_size: int = field(default=64, metadata={"help": "Real images per step and process (as many fakes)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate of G and D."})
    adam_beta1: float = field(default=0.5, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    weight_decay: float = field(default=2e-5, metadata={"help": "Adam weight decay."})
    logging_steps: int = field(default=50, metadata={"help": "Log the mean losses every N steps."})
    eval_steps: int = field(default=500, metadata={"help": "Sample grid + teacher accuracy every N steps (0: end)."})
    save_steps: int = field(default=1000, metadata={"help": "Checkpoint every N steps (0: none before the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (oldest removed first)."})
    eval_images_per_class: int = field(default=10, metadata={"help": "Generated images per class at evaluation."})
    resize_to_teacher: bool = field(
        default=False, metadata={"help": "Resize generated images to the teacher's input size when they differ."}
    )
    teacher_image_mean: list[float] = field(default_factory=lambda: [0.5], metadata={"help": "Teacher input mean."})
    teacher_image_std: list[float] = field(default_factory=lambda: [0.5], metadata={"help": "Teacher input std."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest in output_dir."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of latents, labels, dropout and data order."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16'."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even when a GPU is visible."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})

    def __post_init__(self):
        for name in ("lambda_attn", "lambda_diversity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class GANTrainer:
    """Train a :class:`ConditionalGenerator` / :class:`ConditionalDiscriminator` pair, guided by a frozen teacher.

    Args:
        teacher: the frozen ViT/DeiT classifier whose CLS attention guides the generator (and whose accuracy on
            generated images is reported).
        generator, discriminator: the GAN components (sized like the teacher's input).
        args: a :class:`GANConfig`.
        train_dataset: real images as ``pixel_values`` in [-1, 1] (``ImageTransform`` with mean = std = 0.5) with
            ``label``/``labels``.
        class_probes: the teacher's class attention probes (required when ``lambda_attn > 0``).
    """

    def __init__(
        self,
        teacher: nn.Module,
        generator: ConditionalGenerator,
        discriminator: ConditionalDiscriminator,
        args: GANConfig,
        train_dataset: Dataset,
        class_probes: ClassAttentionProbes | None = None,
    ):
        self.args = args
        self._check_components(teacher, generator, discriminator)
        self._setup_guidance(teacher, class_probes)
        self.class_probes = class_probes
        self._check_dataset(train_dataset, generator)

        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            cpu=args.use_cpu,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        set_seed(args.seed)
        opt = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay)
        loader = DataLoader(train_dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                            collate_fn=default_data_collator, num_workers=args.dataloader_num_workers)
        if len(loader) == 0:
            raise ValueError(f"the dataset has {len(train_dataset)} images, fewer than one batch of {args.batch_size}")
        self.generator, self.discriminator, self.g_optimizer, self.d_optimizer, self.dataloader = self.accelerator.prepare(
            generator, discriminator, torch.optim.Adam(generator.parameters(), **opt),
            torch.optim.Adam(discriminator.parameters(), **opt), loader,
        )
        teacher.eval().requires_grad_(False)  # frozen, yet gradients flow through it into G
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        self.to_teacher = TeacherInputAdapter(args.teacher_image_mean, args.teacher_image_std,
                                              self._teacher_input_size(teacher) if args.resize_to_teacher else None,
                                              ).to(self.accelerator.device)
        self.cap = class_probes.probes.to(self.accelerator.device) if class_probes is not None else None
        self.num_classes = generator.config.num_classes
        self.latent_dim = generator.config.latent_dim
        self.global_step = 0
        self.log_history: list[dict] = []
        device = self.accelerator.device
        self._rng_devices = [device.index or 0] if device.type == "cuda" else []

    # ---- hooks for other teachers (the detection GAN overrides these) ---------------------------------------------

    def _setup_guidance(self, teacher: nn.Module, class_probes) -> None:
        if self.args.lambda_attn > 0:
            if class_probes is None:
                raise ValueError("lambda_attn > 0 needs class_probes= (hf_dfkd.compute_class_attention_probes); "
                                 "lambda_attn=0 trains the vanilla cGAN")
            class_probes.check_fits(teacher)
            self.probe = CLSAttentionProbe(teacher, layer=class_probes.layer, head_reduction=class_probes.head_reduction)
        else:
            self.probe = None

    def _teacher_input_size(self, teacher: nn.Module) -> int:
        return teacher.config.image_size

    def guidance_losses(self, fake: torch.Tensor, labels: torch.Tensor,
                        latents: torch.Tensor | None = None) -> tuple[torch.Tensor | None, dict]:
        """The teacher's terms of the generator loss: ``(weighted sum or None, {name: unweighted value})``;
        ``latents`` (the generator's inputs) are for terms that depend on them."""
        if self.probe is None:
            return None, {}
        # the teacher runs only up to the probed layer's keys; its accuracy is measured at evaluation
        attn = attention_guidance_loss(self.probe.probe_only(self.to_teacher(fake)), self.cap[labels])
        return self.args.lambda_attn * attn, {"attn_loss": attn}

    def evaluation_metrics(self, images: torch.Tensor, labels: torch.Tensor,
                           latents: torch.Tensor | None = None) -> dict[str, float]:
        """What the teacher thinks of generated ``images`` of classes ``labels``, made from ``latents`` (under
        ``no_grad``)."""
        logits = self.teacher(pixel_values=self.to_teacher(images)).logits
        metrics = {"eval_teacher_accuracy": (logits.argmax(-1) == labels).float().mean().item()}
        if self.probe is not None:
            probes, _ = self.teacher_probe(images)
            metrics["eval_attn_loss"] = attention_guidance_loss(probes, self.cap[labels]).item()
        return metrics

    # ---- checks --------------------------------------------------------------------------------------------------

    def _check_components(self, teacher, generator, discriminator) -> None:
        g, d, t = generator.config, discriminator.config, teacher.config
        if not (g.num_classes == d.num_classes == t.num_labels):
            raise ValueError(f"class counts differ: generator {g.num_classes}, discriminator {d.num_classes}, "
                             f"teacher {t.num_labels}; build the GAN with num_classes=teacher.config.num_labels")
        if (g.image_size, g.num_channels) != (d.image_size, d.num_channels):
            raise ValueError(f"generator makes {g.num_channels}x{g.image_size}x{g.image_size} images, the "
                             f"discriminator expects {d.num_channels}x{d.image_size}x{d.image_size}")
        if g.num_channels != t.num_channels:
            raise ValueError(f"generator makes {g.num_channels}-channel images, the teacher expects {t.num_channels}")
        if g.image_size != t.image_size and not self.args.resize_to_teacher:
            raise ValueError(f"generator output is {g.image_size}x{g.image_size} but the teacher's input is "
                             f"{t.image_size}x{t.image_size}: build the generator with image_size={t.image_size}, or "
                             "set resize_to_teacher=True to resize its images for the teacher")

    def _check_dataset(self, dataset, generator) -> None:
        first = default_data_collator([dataset[0]])
        if "pixel_values" not in first or "labels" not in first:
            raise ValueError(f"the GAN needs real 'pixel_values' and 'label' columns; the dataset gives {sorted(first)}. "
                             "Use dataset.with_transform(hf_dfkd.ImageTransform(size, channels))")
        c, s = generator.config.num_channels, generator.config.image_size
        if tuple(first["pixel_values"].shape[1:]) != (c, s, s):
            raise ValueError(f"real images are {tuple(first['pixel_values'].shape[1:])}, the generator makes "
                             f"{(c, s, s)}: resize them in the transform")

    # ---- training ------------------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.args.max_steps if self.args.max_steps > 0 else self.args.num_train_epochs * len(self.dataloader)

    def _check_finite(self, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(self.accelerator.gather(loss.detach().float().reshape(1))).all():
            last = self._checkpoints()[-1:] or ["none saved yet"]
            raise NonFiniteGANLossError(
                f"non-finite {name} loss at step {self.global_step + 1}; stopped before the update. Last good "
                f"checkpoint: {last[0]}. Lower the learning rate or lambda_attn, then resume from it."
            )

    def teacher_probe(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS attention probe and logits of the teacher on generated images (differentiable in ``images``)."""
        with self.probe:
            logits = self.teacher(pixel_values=self.to_teacher(images)).logits
            return self.probe.probe, logits

    def training_step(self, batch: dict) -> dict[str, float]:
        real, real_labels = batch["pixel_values"], batch["labels"]
        b, device = real.shape[0], real.device
        latents = torch.randn(b, self.latent_dim, device=device)
        diversity = self.args.lambda_diversity > 0 and b >= 2
        if diversity:  # fakes in pairs of one class and two latents: the mode-seeking loss compares them
            half = torch.randint(0, self.num_classes, (b // 2,), device=device)
            labels = torch.cat([half, half, torch.randint(0, self.num_classes, (b % 2,), device=device)])
        else:
            labels = torch.randint(0, self.num_classes, (b,), device=device)
        fake = self.generator(latents, labels)

        # discriminator: real -> 1, fake -> 0, one forward over both
        logits = self.discriminator(torch.cat([real, fake.detach()]), torch.cat([real_labels, labels]))
        d_loss = F.binary_cross_entropy_with_logits(logits, torch.cat([torch.ones(b), torch.zeros(b)]).to(logits))
        self._check_finite("discriminator", d_loss)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(d_loss)
        self.d_optimizer.step()

        # generator: fool D, and match the class attention probe through the frozen teacher
        fake_logits = self.discriminator(fake, labels)
        adv = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        metrics = {"d_loss": d_loss, "adv_loss": adv}
        g_loss = adv
        guidance, parts = self.guidance_losses(fake, labels, latents=latents)
        if guidance is not None:
            g_loss = g_loss + guidance
            metrics.update(parts)
        if diversity:
            h = b // 2
            ms = mode_seeking_loss(fake[:h], fake[h : 2 * h], latents[:h], latents[h : 2 * h])
            g_loss = g_loss + self.args.lambda_diversity * ms
            metrics["diversity_loss"] = ms
        metrics["g_loss"] = g_loss
        self._check_finite("generator", g_loss)
        self.g_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(g_loss)
        self.g_optimizer.step()
        values = self.accelerator.gather(torch.stack([v.detach().float() for v in metrics.values()])[None])
        return dict(zip(metrics, values.mean(0).tolist()))

    def train(self) -> dict[str, float]:
        """Train to ``total_steps`` (resuming if asked); returns the last evaluation's metrics."""
        args, acc = self.args, self.accelerator
        if args.resume_from_checkpoint:
            self._load_checkpoint(args.resume_from_checkpoint)
        steps_per_epoch = len(self.dataloader)
        progress = tqdm(total=self.total_steps, initial=self.global_step, desc="GAN training",
                        disable=args.disable_tqdm or not acc.is_local_main_process)
        running: dict[str, list[float]] = {}
        evaluation: dict[str, float] = {}
        while self.global_step < self.total_steps:
            epoch, done = divmod(self.global_step, steps_per_epoch)
            self.dataloader.set_epoch(epoch)
            loader = acc.skip_first_batches(self.dataloader, done) if done else self.dataloader
            self.generator.train()
            self.discriminator.train()
            for batch in loader:
                # randomness of a step (latents, labels, dropout) depends only on (seed, step, process), so a
                # resumed run repeats exactly what an uninterrupted one does
                with torch.random.fork_rng(devices=self._rng_devices):
                    torch.manual_seed(((args.seed * 1_000_003 + self.global_step) * 1024 + acc.process_index) % 2**62)
                    step_metrics = self.training_step(batch)
                for k, v in step_metrics.items():
                    running.setdefault(k, []).append(v)
                self.global_step += 1
                progress.update(1)
                step = self.global_step
                if step % args.logging_steps == 0 or step == self.total_steps:
                    entry = {k: sum(v) / len(v) for k, v in running.items()}
                    self.log_history.append({"step": step, "epoch": step / steps_per_epoch, **entry})
                    progress.set_postfix({k: f"{v:.3g}" for k, v in entry.items()})
                    running = {}
                if (args.eval_steps and step % args.eval_steps == 0) or step == self.total_steps:
                    evaluation = self.evaluate()
                    self.generator.train()
                    self.discriminator.train()
                if args.save_steps and step % args.save_steps == 0 and step != self.total_steps:
                    self.save_checkpoint()
                if step >= self.total_steps:
                    break
        progress.close()
        self.save_models()
        return evaluation

    # ---- evaluation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Teacher accuracy on generated images vs their labels (fixed latents), and a per-class sample grid PNG."""
        acc = self.accelerator
        generator = acc.unwrap_model(self.generator).eval()
        n = self.args.eval_images_per_class
        g = torch.Generator().manual_seed(self.args.seed)
        latents = torch.randn(n * self.num_classes, self.latent_dim, generator=g).to(acc.device)
        labels = torch.arange(self.num_classes).repeat_interleave(n).to(acc.device)
        images = generator(latents, labels)
        metrics = self.evaluation_metrics(images, labels, latents=latents)
        if acc.is_main_process:
            from torchvision.utils import save_image

            os.makedirs(os.path.join(self.args.output_dir, "samples"), exist_ok=True)
            path = os.path.join(self.args.output_dir, "samples", f"step-{self.global_step:07d}.png")
            save_image((images.float() + 1) / 2, path, nrow=n, padding=1)
        self.log_history.append({"step": self.global_step, **metrics})
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def _checkpoints(self) -> list[str]:
        found = glob.glob(os.path.join(self.args.output_dir, "checkpoint-*"))
        found = [p for p in found if os.path.isdir(p) and not p.endswith(".tmp")]
        return sorted(found, key=lambda p: int(p.rsplit("-", 1)[1]))

    def save_checkpoint(self) -> str:
        """Models, optimisers, RNG states (Accelerate's ``save_state``), step and logs; written then renamed."""
        acc = self.accelerator
        final = os.path.join(self.args.output_dir, f"checkpoint-{self.global_step}")
        tmp = final + ".tmp"
        acc.save_state(tmp)
        # every process writes its own RNG file into tmp: rename only after all of them are done
        acc.wait_for_everyone()
        if acc.is_main_process:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({"global_step": self.global_step, "log_history": self.log_history,
                           "args": asdict(self.args)}, f, indent=1)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self._checkpoints()[: -self.args.save_total_limit or None]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, path: str) -> None:
        if path == "latest":
            found = self._checkpoints()
            if not found:
                raise FileNotFoundError(f"resume_from_checkpoint='latest' but {self.args.output_dir} has no checkpoint")
            path = found[-1]
        if not os.path.isfile(os.path.join(path, STATE_FILE)):
            raise FileNotFoundError(f"{path} is not a GAN checkpoint (no {STATE_FILE})")
        self.accelerator.load_state(path)
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        self.global_step, self.log_history = state["global_step"], state["log_history"]

    def save_models(self) -> None:
        """Final ``generator/``, ``discriminator/`` (diffusers format), probes, logs and loss curves."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return
        out = self.args.output_dir
        for name, model in (("generator", self.generator), ("discriminator", self.discriminator)):
            tmp = os.path.join(out, f".{name}.tmp")
            acc.unwrap_model(model).save_pretrained(tmp)
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            os.replace(tmp, os.path.join(out, name))
        if self.class_probes is not None:
            self.class_probes.save(out)
        with open(os.path.join(out, "log_history.json"), "w") as f:
            json.dump(self.log_history, f, indent=1)
        plot_curves(self.log_history, os.path.join(out, "gan_curves.png"))


GAN_CURVES = ("d_loss", "adv_loss", "attn_loss", "det_loss", "diversity_loss", "eval_attn_loss", "eval_teacher_accuracy",
              "eval_teacher_detects_class")


def plot_curves(log_history: list[dict], path: str, keys: tuple[str, ...] = GAN_CURVES) -> None:
    """Plot the logged ``keys`` (default: D loss, adversarial and attention losses, teacher accuracy) against steps
    as one PNG; keys never logged are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in keys if any(k in h for h in log_history)]
    if not present:
        return
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 2.8), squeeze=False)
    for ax, key in zip(axes[0], present):
        points = [(h["step"], h[key]) for h in log_history if key in h]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
