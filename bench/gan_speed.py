#!/usr/bin/env python
"""Speed of the guided generator step and of dataset writing, each a ratio measured in one run.

    python bench/gan_speed.py

1. A generator training step (G forward, teacher forward with the CLS attention probe, attention loss + adversarial
   loss, backward through the frozen teacher into G, Adam step) with the **hooked** probe (sdpa attention) vs the
   same step with **eager** ``output_attentions=True`` (every N×N map materialised), at 50 and 197 tokens.
2. Images per second written into a ``datasets`` dataset by ``SyntheticImagePipeline.write_dataset`` vs the
   generator's bare forward pass at the same batch size (the limit).

The paper's 28×28 generator (512→256→128→1); teachers are ViTs of width 512, 3 blocks (the paper's MNIST teacher
size), patch 4 (7×7 = 49 patches, 50 tokens) or patch 2 (14×14 = 196 patches, 197 tokens). Median of repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTForImageClassification

from hf_dfkd import ConditionalDiscriminator, ConditionalGenerator, SyntheticImagePipeline, attention_guidance_loss
from hf_dfkd.probes import CLSAttentionProbe


def teacher_for(patch: int, attn: str) -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=patch, num_channels=1, hidden_size=512, num_hidden_layers=3,
                       num_attention_heads=8, intermediate_size=2048, num_labels=10)
    model = ViTForImageClassification(config).eval().requires_grad_(False)
    model.set_attn_implementation(attn)
    return model


def generator_steps(patch: int, attn: str, batch: int, steps: int, warmup: int) -> float:
    """Seconds per generator step, median over the timed steps."""
    teacher = teacher_for(patch, attn)
    torch.manual_seed(1)
    g = ConditionalGenerator(num_classes=10, image_size=28, num_channels=1)
    d = ConditionalDiscriminator(num_classes=10, image_size=28, num_channels=1).requires_grad_(False)
    opt = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.999))
    caps = torch.softmax(torch.randn(10, (28 // patch) ** 2), -1)
    probe = CLSAttentionProbe(teacher) if attn == "sdpa" else None
    times = []
    for i in range(warmup + steps):
        z, y = torch.randn(batch, 100), torch.randint(0, 10, (batch,))
        start = time.perf_counter()
        fake = g(z, y)
        adv = F.binary_cross_entropy_with_logits(d(fake, y), torch.ones(batch))
        if probe is not None:  # as GANTrainer does: the teacher runs only up to the probed layer
            ap = probe.probe_only(fake)
        else:
            ap = teacher(pixel_values=fake, output_attentions=True).attentions[-1][:, :, 0, 1:].mean(1)
        loss = adv + attention_guidance_loss(ap, caps[y])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def writing(batch: int, num_images: int, tmp: str) -> tuple[float, float]:
    """(images/s written to a dataset, images/s of the bare generator forward) at the same batch size."""
    torch.manual_seed(2)
    g = ConditionalGenerator(num_classes=10, image_size=28, num_channels=1).eval()
    pipe = SyntheticImagePipeline(image_generator=g)
    pipe.set_progress_bar_config(disable=True)
    out = os.path.join(tmp, "ds")
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    pipe.write_dataset(num_images, out, batch_size=batch, seed=0)
    write_rate = num_images / (time.perf_counter() - start)
    labels = torch.arange(num_images) % 10
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, num_images, batch):
            g(torch.randn(len(labels[s : s + batch]), 100, generator=gen), labels[s : s + batch])
    forward_rate = num_images / (time.perf_counter() - start)
    return write_rate, forward_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64, help="generator-step batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write_batch_size", type=int, default=256)
    parser.add_argument("--write_images", type=int, default=5000)
    parser.add_argument("--output", default="bench/results/gan_speed.json")
    opts = parser.parse_args()
    device = f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    results = {"device": device, "options": vars(opts), "step_seconds": {}, "writing": []}
    for patch, tokens in ((4, 50), (2, 197)):
        samples = {"sdpa": [], "eager": []}
        for _ in range(opts.repeats):
            for attn in ("sdpa", "eager"):  # interleaved
                samples[attn].append(generator_steps(patch, attn, opts.batch_size, opts.steps, opts.warmup))
        results["step_seconds"][tokens] = samples
        h, e = statistics.median(samples["sdpa"]), statistics.median(samples["eager"])
        print(f"{tokens} tokens: hooked {h * 1000:.1f} ms/step, eager {e * 1000:.1f} ms/step, speed-up {e / h:.2f}x", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(opts.repeats):
            results["writing"].append(writing(opts.write_batch_size, opts.write_images, tmp))
    w = statistics.median(r[0] for r in results["writing"])
    f = statistics.median(r[1] for r in results["writing"])
    print(f"dataset writing {w:.0f} images/s vs bare generator forward {f:.0f} images/s: {w / f:.2f} "
          f"(batch {opts.write_batch_size}, {opts.write_images} images, median of {opts.repeats})")
    print(f"device: {device}")
    os.makedirs(os.path.dirname(opts.output), exist_ok=True)
    with open(opts.output, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
