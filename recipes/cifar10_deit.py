#!/usr/bin/env python
"""Data-free distillation on CIFAR-10: DeiT teacher → attention-guided cGAN → synthetic set → ViT student (a GPU job).

    accelerate launch recipes/cifar10_deit.py --dataset_name ../shared/datasets/cifar10-jpeg --output_dir outputs/cifar10
    # from the Hub (its image column is `img`)
    accelerate launch recipes/cifar10_deit.py --dataset_name uoft-cs/cifar10 --image_column img

The paper's models: a DeiT teacher, dim 384, 12 blocks, 3 heads, patch 4 (21.3M parameters) and a ViT student,
dim 128, 2 heads, patch 4, 12 blocks (2.40M). `--preset smoke` runs the same chain with tiny models and a few
steps, to check a set-up in minutes on a CPU; its numbers mean nothing. Any argument of `hf_dfkd.ChainArguments`
overrides the preset, also from `--config args.yaml`. A stopped run resumes at its first missing artifact.
Writes `results.json` and every artifact (see `recipes/mnist_vit.py`).
"""

from __future__ import annotations

import sys

from accelerate import PartialState

from hf_dfkd import ChainArguments, run_chain
from hf_dfkd.cli import parse_arguments

PRESETS: dict[str, dict] = {
    "paper": {
        "output_dir": "outputs/cifar10_paper",
        "teacher_model_type": "deit", "teacher_patch_size": 4, "teacher_hidden_size": 384, "teacher_layers": 12,
        "teacher_heads": 3, "teacher_mlp_ratio": 4.0, "teacher_epochs": 100, "teacher_learning_rate": 5e-4,
        "teacher_batch_size": 256,
        "gan_epochs": 50, "gan_batch_size": 128, "num_synthetic": 200_000,
        "student_model_type": "vit", "student_patch_size": 4, "student_hidden_size": 128, "student_layers": 12,
        "student_heads": 2, "student_mlp_ratio": 4.0, "student_epochs": 60, "student_learning_rate": 7.5e-4,
        "student_batch_size": 256,
    },
    "smoke": {
        "output_dir": "outputs/cifar10_smoke",
        "teacher_model_type": "deit", "teacher_patch_size": 8, "teacher_hidden_size": 64, "teacher_layers": 2,
        "teacher_heads": 2, "teacher_epochs": 0.1, "probe_images": 2000, "gan_steps": 20, "num_synthetic": 500,
        "generator_channels": [64, 32, 16], "discriminator_channels": [16, 32, 64], "student_model_type": "vit",
        "student_patch_size": 8, "student_hidden_size": 32, "student_layers": 2, "student_heads": 2,
        "student_epochs": 1,
    },
}


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_arguments((ChainArguments,), sys.argv[1:] if argv is None else argv,
                              defaults={"dataset_name": "uoft-cs/cifar10", "image_column": "img"}, presets=PRESETS,
                              default_preset="paper", prog="cifar10_deit.py", description=__doc__.split("\n")[0])
    return run_chain(args)


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # a clean exit under accelerate launch
