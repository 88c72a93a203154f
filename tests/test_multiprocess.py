import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
LAUNCHER = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
needs_launcher = pytest.mark.skipif(not Path(LAUNCHER).exists(), reason="accelerate CLI not installed")


def launch_two_processes(script: str, out_dir, *script_args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # `--cpu` makes accelerate (1.15) use its single-process launcher; `--multi_gpu` starts torchrun, and the
    # trainers (use_cpu=True) then join a gloo process group on the CPU.
    cmd = [LAUNCHER, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(script if os.path.isabs(str(script)) else SCRIPTS / script),
           *(script_args or [str(out_dir)])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((Path(out_dir) / ("results.json" if script_args else "result.json")).read_text())


@needs_launcher
def test_distillation_trainer_on_two_cpu_processes(tmp_path):
    result = launch_two_processes("distill_ddp.py", tmp_path)
    assert result["world_size"] == 2
    assert result["teacher_unchanged"]
    assert result["train_logs"] and all("patch_loss" in h for h in result["train_logs"])
    # metrics over the whole eval split, with the padding added for the second process removed
    assert result["metrics"]["eval_accuracy"] == pytest.approx(result["expected_accuracy"], abs=1e-6)
    assert result["metrics"]["eval_agreement"] == pytest.approx(result["expected_agreement"], abs=1e-6)
    assert (tmp_path / "student" / "model.safetensors").exists()


@needs_launcher
def test_gan_trainer_on_two_cpu_processes(tmp_path):
    result = launch_two_processes("gan_ddp.py", tmp_path)
    assert result["world_size"] == 2
    assert result["checksums"][0] == pytest.approx(result["checksums"][1], rel=1e-9)
    assert [h["step"] for h in result["log"] if "d_loss" in h] == [1, 2, 3]
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "generator").is_dir()
    # each process's RNG state lands in the renamed checkpoint, none in a stray .tmp folder
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (tmp_path / "checkpoint-2").iterdir()}
    assert not list(tmp_path.rglob("*.tmp"))


@needs_launcher
def test_recipe_chain_on_two_cpu_processes(tmp_path):
    from test_recipes import RECIPES, tiny_rgb_dataset

    tiny_rgb_dataset(tmp_path / "data")
    out = tmp_path / "run"
    results = launch_two_processes(
        str(RECIPES / "cifar10_deit.py"), out, "--preset", "smoke", "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(out), "--teacher_epochs", "2", "--probe_images", "120", "--gan_steps", "3",
        "--gan_batch_size", "16", "--num_synthetic", "30", "--use_cpu", "true")
    assert results["processes"] == 2 and results["num_examples"] == 30
    # one copy of every artifact, written by the main process, nothing half-written left by the other
    assert (out / "student" / "model.safetensors").is_file() and (out / "synthetic" / "state.json").is_file()
    assert not list(out.rglob("*.tmp"))


@needs_launcher
def test_detection_recipe_on_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
    results = launch_two_processes(
        str(Path(__file__).parent.parent / "recipes" / "detr_drone.py"), out, "--preset", "smoke",
        "--output_dir", str(out), "--use_cpu", "true")
    assert results["processes"] == 2 and {"teacher", "paired", "hungarian"} <= set(results)
    for mode in ("paired", "hungarian"):
        assert (out / f"student-{mode}" / "model.safetensors").is_file()
    assert (out / "synthetic" / "state.json").is_file() and not list(out.rglob("*.tmp"))
