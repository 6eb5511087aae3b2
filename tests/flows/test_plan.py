"""The plan: step kinds come from the registry in conf/orchestration (no per-kind code), each step gets
its resources, and the groups the later steps read (rl, eval) are in the composed config."""
from __future__ import annotations

import re

import pytest

from conf import REPO_ROOT, ConfigError
from flows.plan import build_plan

TEST_CONF = REPO_ROOT / "tests" / "flows" / "conf"
KIND_TEST = [f"hydra.searchpath=[file://{TEST_CONF}]"]


def test_a_kind_declared_only_in_a_test_config_is_planned():
    plan = build_plan("kind_test", KIND_TEST)
    assert [(s.name, s.kind, s.source) for s in plan.steps] == [("stage1", "pretrain", None),
                                                                ("scores", "fake_scores", "stage1")]
    scores = plan.by_name["scores"]
    config = plan.step_config(scores, data_uri="/d", input_checkpoint="file:///s/stage1/k")
    # built as the kind declares: its `eval` section from the composed eval group, the eval split, no stage
    assert config["eval"] == plan.config["eval"]
    assert config["data"] == {"uri": "/d", "split": "eval"}
    assert "stage" not in config and "model" not in config
    assert plan.job_module(scores) == "tests.flows.fake_artifact_job"
    assert re.fullmatch(r"[0-9a-f]{64}", plan.code_versions["fake_scores"])
    resources = plan.resources["scores"]
    assert (resources.world_size, resources.device, resources.precision) == (1, "cpu", None)
    assert resources.launcher.resolved_runner == "python"


def test_a_step_entry_overrides_its_kinds_resources():
    plan = build_plan("smoke", ["+pipeline.steps.stage2.resources={runner: torchrun, nproc_per_node: 2}"])
    two, one = plan.resources["stage2"], plan.resources["stage1"]
    assert (two.world_size, two.launcher.resolved_runner, two.launcher.nproc_per_node) == (2, "torchrun", 2)
    assert (one.world_size, one.launcher.resolved_runner) == (1, "python")  # the composed launcher's
    assert one.launcher.env["CUDA_VISIBLE_DEVICES"] == ""  # auto resolved to cpu here: the job stays there


@pytest.mark.parametrize("override, message", [
    ("+pipeline.steps.stage1.resources={nodes: 2}",
     r"step 'stage1': resources.nodes: launcher 'local' runs on this node only"),
    ("+pipeline.steps.stage1.resources={device: gpu}",
     r"step 'stage1': resources.device: one of \['auto', 'cpu', 'cuda'\], got 'gpu'"),
    ("+pipeline.steps.stage1.resources={procs: 2}", r"step 'stage1': resources: invalid key 'procs'"),
    ("+pipeline.steps.stage1.resources={launcher: nowhere}", r"no config launcher=nowhere"),
    ("orchestration.kinds.pretrain.output=weights", r"orchestration.kinds.pretrain.output: one of"),
    ("orchestration.kinds.pretrain.scores=scores.json",
     r"orchestration.kinds.pretrain.scores: a file name in the kind's artifact set .* with output 'checkpoint'"),
    ("report.plot_columns=0", r"report.plot_columns: must be >= 1, got 0"),
    ("+eval.gates.evl4={synthetic_counting: 0.3}",
     r"eval.gates.evl4: pipeline 'smoke' has no evaluation step 'evl4' \(its evaluation steps: \['eval1', 'eval2', 'eval3', 'eval4'\]\)"),
    ("orchestration.kinds.pretrain.config.stage='stagez.{stage}'",
     r"step 'stage1': the kind's config.stage reads `stagez.\{stage\}`, but `the composed config` has no 'stagez'"),
])
def test_bad_resources_or_kind_entries_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        build_plan("smoke", [override])


def test_a_step_must_start_from_the_output_type_its_kind_reads():
    with pytest.raises(ConfigError, match=r"step 'again': kind 'pretrain' starts from a checkpoint, but step "
                                          r"'scores' \(kind 'fake_scores'\) outputs artifacts"):
        build_plan("kind_test", [*KIND_TEST, "+pipeline.steps.again={kind: pretrain, stage: stage1_projector_warmup, "
                                             "from: scores}"])


def test_rl_and_eval_overrides_reach_the_composed_config():
    plan = build_plan("smoke", ["rl.rewards.chart.relative_tolerance=0.1", "eval.generation.max_new_tokens=16",
                                "eval.generation.thinking=true"])
    assert plan.config["rl"]["rewards"]["chart"]["relative_tolerance"] == 0.1
    assert plan.config["rl"]["rewards"]["routes"]["math"] == {"fn": "math", "weight": 1.0}  # the rest as composed
    generation = plan.config["eval"]["generation"]
    assert (generation["max_new_tokens"], generation["thinking"]) == (16, True)


def test_orchestration_has_no_per_kind_branches():
    """A new kind is a config entry: no code in flows/ or tasks/ compares a kind with a name."""
    pattern = re.compile(r"""kind\s*[!=]=\s*["']|["'](pretrain|evaluate|grpo|rl_curate|reward_model)["']\s*[!=]=""")
    found = [f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}"
             for folder in ("flows", "tasks") for path in sorted((REPO_ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
