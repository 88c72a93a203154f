import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "distill_ddp.py"


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_accelerate_launch_two_cpu_processes(tmp_path):
    launcher = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # `--cpu` makes accelerate (1.15) use its single-process launcher; `--multi_gpu` starts torchrun, and the
    # trainer (use_cpu=True) then joins a gloo process group on the CPU.
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(SCRIPT), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    assert result["teacher_unchanged"]
    assert result["train_logs"] and all("patch_loss" in h for h in result["train_logs"])
    # metrics over the whole eval split, with the padding added for the second process removed
    assert result["metrics"]["eval_accuracy"] == pytest.approx(result["expected_accuracy"], abs=1e-6)
    assert result["metrics"]["eval_agreement"] == pytest.approx(result["expected_agreement"], abs=1e-6)
    assert (tmp_path / "student" / "model.safetensors").exists()
