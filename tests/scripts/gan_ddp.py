"""Run by test_multiprocess.py under `accelerate launch --multi_gpu --num_processes 2` on the CPU."""

import json
import sys

import torch
from accelerate import PartialState

sys.path.insert(0, __file__.rsplit("/scripts/", 1)[0])
from conftest import tiny_vit  # noqa: E402

from hf_dfkd import (  # noqa: E402
    ConditionalDiscriminator,
    ConditionalGenerator,
    GANConfig,
    GANTrainer,
    ImageTransform,
    compute_class_attention_probes,
    load_digits_dataset,
)


def main(out_dir: str) -> None:
    state = PartialState(cpu=True)
    data = load_digits_dataset()["train"].select(range(128))
    teacher = tiny_vit(num_labels=10, names=None).eval()
    transform = ImageTransform(8, 1)
    caps = compute_class_attention_probes(teacher, data, transform, only_correct=False, show_progress=False)
    torch.manual_seed(0)
    g = ConditionalGenerator(num_classes=10, image_size=8, num_channels=1, latent_dim=16, embedding_dim=8, channels=(32, 16, 8))
    d = ConditionalDiscriminator(num_classes=10, image_size=8, num_channels=1, channels=(8, 16, 16))
    args = GANConfig(out_dir, max_steps=3, batch_size=8, logging_steps=1, eval_steps=3, save_steps=2, use_cpu=True,
                     disable_tqdm=True, eval_images_per_class=1)
    trainer = GANTrainer(teacher, g, d, args, data.with_transform(transform), class_probes=caps)
    trainer.train()
    # DDP keeps the replicas identical: compare a checksum of G across processes
    checksum = torch.tensor([sum(float(p.double().sum()) for p in trainer.accelerator.unwrap_model(trainer.generator).parameters())])
    gathered = trainer.accelerator.gather(checksum).tolist()
    if state.is_main_process:
        with open(out_dir + "/result.json", "w") as f:
            json.dump({"world_size": state.num_processes, "checksums": gathered, "log": trainer.log_history}, f)


if __name__ == "__main__":
    main(sys.argv[1])
    # an undestroyed gloo group can abort the process at exit ("terminate called without an active exception")
    PartialState().destroy_process_group()
