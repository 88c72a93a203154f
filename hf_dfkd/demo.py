"""``hf-dfkd demo``: the whole data-free chain on scikit-learn's digits, on a CPU, in a few minutes.

teacher (trained on the real train split) → class attention probes → attention-guided cGAN → 10k synthetic images →
data-free student (sees only synthetic images) → evaluation of both on the real held-out split. The sizes below
are :class:`~hf_dfkd.chain.ChainArguments` chosen for 8×8 grey digits and a 2-core CPU; any of them can be
overridden on the command line (``hf-dfkd demo --gan_steps 3000``).
"""

from __future__ import annotations

from .chain import ChainArguments, run_chain
from .io import EMBEDDED_DIGITS

__all__ = ["DEMO_DEFAULTS", "run_demo"]

DEMO_DEFAULTS: dict = {
    "output_dir": "hf_dfkd_demo",
    "dataset_name": EMBEDDED_DIGITS,
    "use_cpu": True,
    # teacher: ViT, 2x2 patches on 8x8 images (16 patches)
    "teacher_model_type": "vit", "teacher_patch_size": 2, "teacher_hidden_size": 96, "teacher_layers": 4,
    "teacher_heads": 4, "teacher_epochs": 30, "teacher_batch_size": 64,
    # GAN: the paper's architecture, narrower for 8x8 images
    "generator_channels": [128, 64, 32], "gan_steps": 4000, "gan_batch_size": 64,
    "num_synthetic": 10_000,
    # student: DeiT, about a tenth of the teacher
    "student_model_type": "deit", "student_patch_size": 2, "student_hidden_size": 32, "student_layers": 3,
    "student_heads": 2, "student_epochs": 100, "student_learning_rate": 4e-3, "student_batch_size": 128,
}


def run_demo(**overrides) -> dict:
    """Run the chain with :data:`DEMO_DEFAULTS` (updated by ``overrides``); returns its results."""
    return run_chain(ChainArguments(**{**DEMO_DEFAULTS, **overrides}))
