"""`python -m flows.plan`: the README's way to get each step's resolved config for a run by hand."""
from __future__ import annotations

import subprocess
import sys

import yaml

from conf import REPO_ROOT, validated


def plan_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.plan", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_write_steps_gives_a_chain_of_valid_step_configs(tmp_path):
    from training.config import StepConfig

    out = tmp_path / "hand"
    proc = plan_cli("--pipeline", "smoke", "--write-steps", str(out), "--data", str(tmp_path / "data"),
                    f"storage.root=file://{tmp_path}/store", "stages.stage3_multimodal.optim.lr=2e-5")
    assert proc.returncode == 0, proc.stderr
    assert ("stage1(-) -> eval1(stage1) -> stage2(stage1) -> eval2(stage2) -> stage3(stage2) -> eval3(stage3) -> "
            "stage4(stage3) -> eval4(stage4)") in proc.stdout
    configs = {name: yaml.safe_load((out / f"{name}.yaml").read_text()) for name in
               ("stage1", "stage2", "stage3", "stage4")}
    assert configs["stage1"]["input_checkpoint"] is None
    for previous, name in (("stage1", "stage2"), ("stage2", "stage3"), ("stage3", "stage4")):
        assert configs[name]["input_checkpoint"] == configs[previous]["output_uri"]
    assert configs["stage1"]["output_uri"] == f"file://{tmp_path}/store/hand/stage1"
    assert configs["stage3"]["stage"]["optim"]["lr"] == 2e-5
    assert configs["stage2"]["data"] == {"uri": str(tmp_path / "data"), "split": "pretrain"}
    assert len({c["work_dir"] for c in configs.values()}) == 4
    for name, config in configs.items():  # what the job itself parses
        validated(StepConfig, config, name)
    eval4 = yaml.safe_load((out / "eval4.yaml").read_text())
    assert eval4["input_checkpoint"] == configs["stage4"]["output_uri"]
    assert eval4["data"] == {"uri": str(tmp_path / "data"), "split": "eval"}


def test_a_bad_override_fails_naming_the_key(tmp_path):
    proc = plan_cli("--pipeline", "smoke", "--write-steps", str(tmp_path), "--data", str(tmp_path),
                    "stages.stage2_vl_alignment.optim.lr=-1")
    assert proc.returncode == 2
    assert "lr" in proc.stderr and "stage2" in proc.stderr
    assert not list(tmp_path.glob("*.yaml"))
