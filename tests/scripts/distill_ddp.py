"""Run by test_multiprocess.py under `accelerate launch --num_processes 2 --cpu`."""

import json
import sys

import torch
from accelerate import PartialState

sys.path.insert(0, __file__.rsplit("/scripts/", 1)[0])
from conftest import tensor_dataset, tiny_vit  # noqa: E402

from hf_dfkd import DistillationConfig, DistillationTrainer  # noqa: E402


def main(out_dir: str) -> None:
    state = PartialState()
    student, teacher = tiny_vit(seed=1), tiny_vit(hidden=48, layers=3, seed=2)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    eval_data = tensor_dataset(n=11, seed=7)  # odd size: the last batch is padded across processes
    args = DistillationConfig(
        output_dir=out_dir, max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        per_device_eval_batch_size=4, logging_steps=1, report_to=[], disable_tqdm=True, save_strategy="no", use_cpu=True,
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=tensor_dataset(n=32), eval_dataset=eval_data)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(out_dir + "/student")
    if state.is_main_process:
        with torch.no_grad():
            x, y = eval_data[:]["pixel_values"], eval_data[:]["label"]
            s = trainer.accelerator.unwrap_model(trainer.model).eval()(pixel_values=x).logits.argmax(-1)
            t = teacher(pixel_values=x).logits.argmax(-1)
        result = {
            "world_size": state.num_processes,
            "metrics": metrics,
            "expected_accuracy": (s == y).float().mean().item(),
            "expected_agreement": (s == t).float().mean().item(),
            "teacher_unchanged": all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items()),
            "train_logs": [h for h in trainer.state.log_history if "kd_loss" in h],
        }
        with open(out_dir + "/result.json", "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
    # an undestroyed gloo group can abort the process at exit ("terminate called without an active exception")
    PartialState().destroy_process_group()
