"""Data-free DETR distillation on drone footage: teacher → guided generator → synthetic set → students → mAP.

    accelerate launch recipes/detr_drone.py --preset cpu --dataset_name ../shared/datasets/drone-detection

``--preset cpu`` (small DETRs, 128×128 images) takes about an hour on a 2-core CPU; ``--preset paper`` (DETR
ResNet-50 6+6 → ResNet-18 2+2) is for a GPU. Any other flag overrides the preset. Re-running resumes.
"""

import sys

from accelerate import PartialState

from hf_dfkd.cli import parse_arguments
from hf_dfkd.detection import DetectionChainArguments, run_detection_chain

PRESETS = {
    # seconds on the embedded digits-detection set: for tests and a first look
    "smoke": dict(
        output_dir="runs/detr_smoke", dataset_name="sklearn:digits-detection", image_size=64, num_queries=5,
        teacher_backbone_hidden_sizes=[8, 16, 32], teacher_d_model=32, teacher_layers=1, teacher_heads=2,
        teacher_epochs=1, gan_steps=2, gan_batch_size=8, generator_channels=[32, 16, 8],
        discriminator_channels=[8, 16, 32], num_synthetic=24, score_threshold=0.05, student_d_model=16,
        student_backbone_hidden_sizes=[8, 8, 16], student_epochs=1, student_batch_size=8, confidence_threshold=0.05,
    ),
    # a 2-core CPU in about an hour: an 8.5M DETR teacher (ResNet 3 stages, 3+3 layers) -> a 0.56M DETR student
    "cpu": dict(
        output_dir="runs/detr_drone_cpu", image_size=128, num_queries=10,
        teacher_backbone_hidden_sizes=[64, 128, 256], teacher_backbone_depths=[2, 2, 2], teacher_d_model=256,
        teacher_layers=3, teacher_heads=8, teacher_epochs=60, teacher_learning_rate=2e-4, teacher_batch_size=16,
        gan_epochs=10, gan_batch_size=32, generator_channels=[128, 64, 32], discriminator_channels=[32, 64, 128],
        num_synthetic=2000, score_threshold=0.3,
        student_backbone_hidden_sizes=[32, 64, 128], student_backbone_depths=[1, 1, 1], student_d_model=64,
        student_layers=2, student_heads=4, student_epochs=15, student_batch_size=16, confidence_threshold=0.3,
    ),
    # the paper's sizes, for a GPU: DETR ResNet-50 6+6 (100 queries) -> DETR ResNet-18 2+2
    "paper": dict(
        output_dir="runs/detr_drone_paper", image_size=384, num_queries=100,
        teacher_backbone_hidden_sizes=[256, 512, 1024, 2048], teacher_backbone_depths=[3, 4, 6, 3],
        teacher_backbone_layer_type="bottleneck", teacher_d_model=256, teacher_layers=6, teacher_heads=8,
        teacher_ffn_dim=2048, teacher_epochs=150, teacher_learning_rate=1e-4, teacher_batch_size=32,
        gan_epochs=50, gan_batch_size=64, generator_channels=[512, 256, 128], discriminator_channels=[64, 128, 256],
        num_synthetic=20_000, score_threshold=0.5,
        student_backbone_hidden_sizes=[64, 128, 256, 512], student_backbone_depths=[2, 2, 2, 2],
        student_d_model=256, student_layers=2, student_heads=8, student_ffn_dim=2048, student_epochs=50,
        student_batch_size=32,
        confidence_threshold=0.5,
    ),
}


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_arguments((DetectionChainArguments,), sys.argv[1:] if argv is None else argv,
                              defaults={"dataset_name": "../shared/datasets/drone-detection"}, presets=PRESETS,
                              default_preset="cpu", prog="detr_drone.py", description=__doc__.split("\n")[0])
    return run_detection_chain(args)


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # a clean exit under accelerate launch
