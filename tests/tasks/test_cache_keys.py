"""Step keys: equal in every process, changed by exactly what changes a step's output."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conf import REPO_ROOT, ConfigError
from flows.plan import build_plan
from tasks.cache_keys import LEFT_OUT, code_version, key_material, params_of, step_key

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64
ONE_CPU = {"world_size": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def plan():
    return build_plan("smoke")


@pytest.fixture(scope="module")
def stage3_config(plan):
    return plan.step_config(plan.by_name["stage3"], data_uri="/data/synthetic-1", input_checkpoint="file:///s/stage2/k")


def key_of(config, input_digest=DIGEST_A, data_digest=DIGEST_B, code="c" * 64, resources=ONE_CPU):
    return step_key(config, input_digest, data_digest, code, resources=resources)


def plan_key(plan, name: str) -> str:
    """The key of step `name` of `plan` as run_step computes it (its resources included)."""
    config = plan.step_config(plan.by_name[name], data_uri="/d", input_checkpoint=None)
    return key_of(config, resources=plan.resources[name].key_material())


def changed(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return config


KEY_SCRIPT = """
import json, sys
from flows.plan import build_plan
from tasks.cache_keys import step_key
plan = build_plan("smoke")
config = plan.step_config(plan.by_name["stage3"], data_uri="/data/x", input_checkpoint="file:///s/stage2/k")
resources = plan.resources["stage3"].key_material()
keys = [step_key(config, "a" * 64, data, plan.code_versions["pretrain"], resources=resources) for data in ("b" * 64, "e" * 64)]
print(json.dumps([keys, plan.code_versions]))
"""


def test_keys_are_equal_across_processes(plan, stage3_config):
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", KEY_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, check=True)
        outputs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    (key, other_data_key), _ = outputs[0]
    here = plan.step_config(plan.by_name["stage3"], data_uri="/data/x", input_checkpoint="file:///s/stage2/k")
    assert key == step_key(here, DIGEST_A, DIGEST_B, plan.code_versions["pretrain"],
                           resources=plan.resources["stage3"].key_material())
    assert re.fullmatch(r"[0-9a-f]{64}", key) and re.fullmatch(r"[0-9a-f]{64}", other_data_key)  # sha256 hex
    assert other_data_key != key  # another data digest, another key


@pytest.mark.parametrize("dotted, value", [
    ("stage.optim.lr", 2.0e-5),
    ("stage.budget.steps", 5),
    ("stage.seed", 1),
    ("stage.trainable", ["llm"]),
    ("model.text.hidden_size", 256),
    ("data.split", "rl"),
    ("step", "stage3b"),
])
def test_what_the_step_computes_changes_the_key(stage3_config, dotted, value):
    assert key_of(changed(stage3_config, dotted, value)) != key_of(stage3_config)


@pytest.mark.parametrize("dotted, value", [
    ("tracking.run_id", "0123456789abcdef"),
    ("tracking.tracking_uri", "http://127.0.0.1:5000"),
    ("step_key", "f" * 64),
    ("output_uri", "file:///elsewhere/stage3/k"),
    ("work_dir", "/elsewhere/work/stage3-k"),
    ("runs_dir", "/elsewhere"),
    ("storage.root", "file:///elsewhere/store"),
    ("input_checkpoint", "s3://bucket/stage2/k"),   # the same checkpoint elsewhere: its digest counts
    ("data.uri", "/elsewhere/data"),                # the same data elsewhere: its manifest digest counts
])
def test_where_and_under_which_run_a_step_runs_leaves_the_key(stage3_config, dotted, value):
    assert key_of(changed(stage3_config, dotted, value)) == key_of(stage3_config)


@pytest.mark.parametrize("dotted, value", [
    ("stage.log_every", 1),
    ("stage.checkpoint_every", 1),
    ("stage.packing.prefetch_batches", 7),
    ("stage.probe_batches", 0),
    ("stage.probe_split", "eval"),
    ("stage.checkpoint_keep", 5),
    ("stage.deepspeed.steps_per_print", 10),
    ("stage.deepspeed.wall_clock_breakdown", True),
    ("peak_tflops_per_device", 989.0),
])
def test_how_a_step_reports_and_checkpoints_leaves_the_key(stage3_config, dotted, value):
    assert key_of(changed(stage3_config, dotted, value)) == key_of(stage3_config)


def test_world_size_device_and_precision_enter_the_key(stage3_config):
    base = key_of(stage3_config)
    assert key_of(stage3_config, resources={"world_size": 2, "device": "cpu"}) != base
    assert key_of(stage3_config, resources={"world_size": 1, "device": "cuda"}) != base
    assert key_of(changed(stage3_config, "stage.precision", "bf16")) != base


def test_the_plan_resolves_resources_into_the_key():
    base = build_plan("smoke")
    assert base.resources["stage1"].key_material() == {"world_size": 1, "device": "cpu"}
    assert base.resources["stage1"].precision == "fp32"  # auto on a CPU
    two = build_plan("smoke", ["+pipeline.steps.stage1.resources={runner: torchrun, nproc_per_node: 2}"])
    assert two.resources["stage1"].world_size == 2 and two.resources["stage1"].launcher.resolved_runner == "torchrun"
    assert plan_key(two, "stage1") != plan_key(base, "stage1")
    assert plan_key(two, "stage2") == plan_key(base, "stage2")  # a step's resources are its own
    # auto resolves to the precision the job will use: writing it out changes nothing
    explicit = build_plan("smoke", ["stages.stage1_projector_warmup.precision=fp32"])
    assert plan_key(explicit, "stage1") == plan_key(base, "stage1")
    # the launcher's own settings that do not change the output leave the key
    assert plan_key(build_plan("smoke", ["launcher.timeout_s=60", "launcher.runner=python"]), "stage1") == \
        plan_key(base, "stage1")


def test_one_list_of_left_out_fields_serves_the_key_and_the_params(stage3_config):
    material, params = key_material(stage3_config), params_of(stage3_config)

    def has(config, dotted):
        node = config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    present = [field for field in LEFT_OUT if has(stage3_config, field.path)]
    assert {f.path for f in present} >= {"stage.log_every", "stage.checkpoint_every", "stage.probe_batches",
                                         "stage.packing.prefetch_batches", "peak_tflops_per_device", "tracking"}
    for field in present:
        assert not has(material, field.path), field.path
        assert has(params, field.path) == field.param, field.path
    assert has(material, "stage.optim.lr") and has(params, "stage.optim.lr")


def test_input_checkpoint_data_and_code_enter_the_key(stage3_config):
    base = key_of(stage3_config)
    assert key_of(stage3_config, input_digest=DIGEST_B) != base
    assert key_of(stage3_config, input_digest=None) != base
    assert key_of(stage3_config, data_digest=DIGEST_A) != base
    assert key_of(stage3_config, code="d" * 64) != base


def test_a_stage3_override_changes_only_stage3s_own_config():
    base, tuned = build_plan("smoke"), build_plan("smoke", ["stages.stage3_multimodal.optim.lr=2e-5"])
    for name in ("stage1", "stage2", "stage3", "stage4"):
        same = plan_key(base, name) == plan_key(tuned, name)
        assert same == (name != "stage3"), name
    # stage4 changes too, through its input checkpoint's digest (tests/flows/test_e2e.py runs it).


def test_equal_values_of_another_type_give_the_same_key():
    """The schema normalises values: an int learning rate given as an override equals the float."""
    a = build_plan("smoke", ["stages.stage1_projector_warmup.optim.lr=1"])
    b = build_plan("smoke", ["stages.stage1_projector_warmup.optim.lr=1.0"])
    assert plan_key(a, "stage1") == plan_key(b, "stage1")


# ------------------------------------------------------------------------------------ code version


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_code_version_follows_the_job_source_files_only(tmp_path):
    write(tmp_path / "training" / "job.py", "x = 1\n")
    write(tmp_path / "training" / "sub" / "util.py", "y = 2\n")
    write(tmp_path / "conf" / "__init__.py", "z = 3\n")
    paths = ["training", "conf/__init__.py"]
    base = code_version(tmp_path, paths)
    assert code_version(tmp_path, paths) == base

    write(tmp_path / "training" / "__pycache__" / "job.cpython-311.pyc", "bytecode")
    write(tmp_path / "training" / "notes.md", "notes")
    write(tmp_path / "flows" / "pipeline.py", "orchestration only\n")
    write(tmp_path / "conf" / "stage" / "s.yaml", "lr: 1\n")  # configs enter the key as resolved values
    assert code_version(tmp_path, paths) == base

    write(tmp_path / "training" / "sub" / "util.py", "y = 3\n")
    changed_content = code_version(tmp_path, paths)
    assert changed_content != base
    write(tmp_path / "training" / "new.py", "")
    assert code_version(tmp_path, paths) != changed_content
    (tmp_path / "training" / "new.py").rename(tmp_path / "training" / "renamed.py")
    assert code_version(tmp_path, paths) not in (base, changed_content)


def test_a_missing_code_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"code path 'trainng' does not exist"):
        code_version(tmp_path, ["trainng"])


def test_the_configured_code_paths_exist(plan):
    assert set(plan.code_versions) == {"data_prep", "pretrain", "evaluate"}
    assert all(len(v) == 64 for v in plan.code_versions.values())
