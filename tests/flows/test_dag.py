"""The pipeline DAG is checked before anything runs, and every error names what to fix."""
from __future__ import annotations

import pytest

from conf import ConfigError
from flows.dag import PipelineError, descendants, parse_steps
from flows.plan import build_plan
from tasks.orchestration_config import KindConfig, ResourcesConfig


def kind(module: str | None, available_with: str | None, step_keys: list[str], output: str) -> KindConfig:
    return KindConfig(module=module, available_with=available_with, code=["training"] if module else [],
                      step_keys=step_keys, config={"stage": "stages.{stage}"} if module else {}, schema=None,
                      output=output, input="checkpoint", scores=None, split="pretrain", precision=None,
                      resources=ResourcesConfig(device="auto"))


KINDS = {
    "pretrain": kind("training.pretrain", None, ["stage"], "checkpoint"),
    "evaluate": kind(None, "[Evaluation]", [], "artifacts"),
    "grpo": kind(None, "[MORL]", [], "checkpoint"),
}


def pipeline(**steps):
    return {"name": "test", "steps": steps}


def pretrain(stage: str, source: str | None) -> dict:
    return {"kind": "pretrain", "stage": stage, "from": source}


def test_steps_come_in_dependency_order_whatever_the_file_order():
    steps = parse_steps(pipeline(c=pretrain("s3", "b"), a=pretrain("s1", None), b=pretrain("s2", "a"),
                                 side=pretrain("s2", "a")), KINDS)
    order = [s.name for s in steps]
    assert order.index("a") < order.index("b") < order.index("c")
    assert order.index("a") < order.index("side")
    assert descendants(steps, "b") == ["c"]
    assert sorted(descendants(steps, "a")) == ["b", "c", "side"]
    assert steps[order.index("b")].options["stage"] == "s2"


def test_unknown_from_names_the_step_and_the_known_steps():
    with pytest.raises(PipelineError, match=r"step 'stage2': from: 'stag1' is not a step.*'stage1'"):
        parse_steps(pipeline(stage1=pretrain("s1", None), stage2=pretrain("s2", "stag1")), KINDS)


def test_cycle_is_named_in_data_flow_order():
    with pytest.raises(PipelineError, match=r"cycle in from: a -> b -> c -> a"):
        parse_steps(pipeline(a=pretrain("s1", "c"), b=pretrain("s2", "a"), c=pretrain("s3", "b")), KINDS)
    with pytest.raises(PipelineError, match=r"step 'a' starts from itself"):
        parse_steps(pipeline(a=pretrain("s1", "a")), KINDS)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(PipelineError, match=r"step 'x': unknown kind 'finetune' \(known kinds: \['evaluate', 'grpo', "
                                           r"'pretrain'\]\)"):
        parse_steps(pipeline(x={"kind": "finetune", "stage": "s1", "from": None}), KINDS)


@pytest.mark.parametrize("kind, issue", [("evaluate", "[Evaluation]"), ("grpo", "[MORL]")])
def test_future_kinds_are_refused_as_not_yet_available(kind, issue):
    with pytest.raises(PipelineError, match=rf"step 'later': step kind '{kind}' is not yet available: it lands "
                                           rf"with the \{issue[:-1]}\] issue"):
        parse_steps(pipeline(s1=pretrain("s1", None), later={"kind": kind, "from": "s1"}), KINDS)


def test_unknown_and_missing_step_keys_are_named():
    with pytest.raises(PipelineError, match=r"step 'a': unknown key\(s\) \['form'\] for kind 'pretrain'"):
        parse_steps(pipeline(a={"kind": "pretrain", "stage": "s1", "form": None}), KINDS)
    with pytest.raises(PipelineError, match=r"step 'a': missing key\(s\) \['from'\]"):
        parse_steps(pipeline(a={"kind": "pretrain", "stage": "s1"}), KINDS)
    with pytest.raises(PipelineError, match=r"pipeline: unknown key\(s\) \['stpes'\]"):
        parse_steps({"name": "x", "stpes": {}}, KINDS)
    with pytest.raises(PipelineError, match=r"pipeline.steps must be a non-empty mapping"):
        parse_steps({"name": "x", "steps": {}}, KINDS)


# ------------------------------------------------------------------------ through the composed config


def test_the_repository_pipelines_are_valid():
    for name in ("full", "smoke"):
        plan = build_plan(name)
        sources = {s.name: s.source for s in plan.steps}
        assert sources == {"stage1": None, "stage2": "stage1", "stage3": "stage2", "stage4": "stage3",
                           "eval1": "stage1", "eval2": "stage2", "eval3": "stage3", "eval4": "stage4"}
        assert {s.name: s.kind for s in plan.steps if s.name.startswith("eval")} == dict.fromkeys(
            ("eval1", "eval2", "eval3", "eval4"), "evaluate")
        order = [s.name for s in plan.steps]
        assert all(order.index(source) < order.index(name) for name, source in sources.items() if source)


@pytest.mark.parametrize("override, message", [
    ("pipeline.steps.stage3.from=stage9", r"step 'stage3': from: 'stage9' is not a step"),
    ("pipeline.steps.stage1.from=stage4", r"cycle in from: stage1 -> stage2 -> stage3 -> stage4 -> stage1"),
    ("pipeline.steps.stage2.kind=distill", r"step 'stage2': unknown kind 'distill'"),
    ("+pipeline.steps.rl={kind: grpo, from: stage4}", r"step 'rl': step kind 'grpo' is not yet available"),
    ("pipeline.steps.stage2.stage=stage9_missing", r"step 'stage2': stage 'stage9_missing' is not in `stages`"),
    # A key the stage schema does not know (a typo in a stage file) fails naming the key.
    ("+stages.stage3_multimodal.optim.lrr=0.1", r"step 'stage3' \(stage stage3_multimodal\): invalid key 'stage.optim.lrr'"),
    ("stages.stage1_projector_warmup.optim.lr=-1", r"step 'stage1' .*optim.lr: must be > 0"),
    ("orchestration.launch_retries=-1", r"orchestration.launch_retries: must be >= 0"),
    ("+data.colours.pink=[1,2,3]", r"data.colours.*cannot reach the generator"),
    # The 7B profile's first step loads the ViT and LLM folders: unset, the run fails before it starts.
    ("model=mimovl_7b", r"weights.vit is not set; pass model.weights.vit="),
])
def test_a_bad_pipeline_fails_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=message):
        build_plan("smoke", [override])


def test_an_override_of_an_unknown_key_fails_at_composition():
    with pytest.raises(ConfigError, match=r"lrr"):
        build_plan("smoke", ["stages.stage3_multimodal.optim.lrr=0.1"])
