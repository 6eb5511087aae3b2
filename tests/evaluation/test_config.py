"""The eval job's config, validated at planning (the evaluate kind's schema): a bad suite, a missing data
folder or a gate on a benchmark the suite does not score fails before any job starts, naming the key; a
step's config holds only its own gate, so one step's gate changes only that step's key."""
from __future__ import annotations

import pytest

from conf import ConfigError
from flows.plan import build_plan
from tasks.cache_keys import key_material

EVALS = ["eval1", "eval2", "eval3", "eval4"]


def step_config(plan, step: str) -> dict:
    return plan.step_config(plan.by_name[step], data_uri="/data", input_checkpoint="file:///store/stage/key")


def test_every_pretraining_stage_is_evaluated_beside_the_next_one():
    for pipeline in ("smoke", "full"):
        plan = build_plan(pipeline)
        sources = {s.name: s.source for s in plan.steps if s.kind == "evaluate"}
        assert sources == {f"eval{k}": f"stage{k}" for k in range(1, 5)}, pipeline
        for name in EVALS:  # one plain process, on the CPU here, in the precision that means
            resources = plan.resources[name]
            assert (resources.world_size, resources.launcher.resolved_runner) == (1, "python")
            assert (resources.device, resources.precision) == ("cpu", "fp32")
    config = step_config(build_plan("smoke"), "eval2")
    assert config["eval"]["max_samples"] == 2 and config["data"]["split"] == "eval"  # smoke stays fast
    assert config["eval"]["precision"] == "fp32" and config["system_metrics"]["sampling_interval_s"] > 0
    assert config["scoring"]["name"] == "official" and config["model"]["name"] == "tiny"


@pytest.mark.parametrize("override, message", [
    ("eval.suite=[nosuch]", r"step 'eval1'.*eval.suite\[0\]: unknown benchmark 'nosuch'"),
    ("eval.suite=[synthetic,mmmu]", r"eval.benchmarks: no data folder for 'mmmu'"),
    ("+eval.benchmarks.docvqa=/data/docvqa", r"eval.benchmarks.docvqa: a data folder for a benchmark the suite "
                                             r"does not score"),
    ("eval.suite=[synthetic,synthetic]", r"eval.suite: a benchmark is named twice"),
    ("eval.max_samples=0", r"eval.max_samples: must be >= 1 or null"),
    ("eval.precision=fp16", r"eval.precision: one of \['auto', 'fp32', 'bf16'\]"),
    ("eval.generation.batch_size=0", r"eval.generation: batch_size must be >= 1"),
    ("+eval.gates.eval3={mmmu: 0.5}", r"eval.gates.eval3.mmmu: the suite does not score 'mmmu'"),
    ("+eval.gates.eval3={synthetic_vqa: 1.5}", r"eval.gates.eval3.synthetic_vqa: a minimum score in \[0, 1\]"),
    ("+eval.shots=3", r"invalid key 'eval.shots'"),
])
def test_a_bad_eval_config_fails_at_planning_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        build_plan("smoke", [override])


def test_a_steps_config_holds_only_its_own_gate():
    plain = build_plan("smoke")
    gated = build_plan("smoke", ["+eval.gates.eval4={synthetic_counting: 0.3, synthetic_vqa: 0.2}"])
    for name in EVALS:
        config = step_config(gated, name)
        if name == "eval4":
            assert config["eval"]["gates"] == {"eval4": {"synthetic_counting": 0.3, "synthetic_vqa": 0.2}}
        else:
            assert config["eval"]["gates"] == {}
            assert key_material(config) == key_material(step_config(plain, name))  # its key is unchanged
    assert key_material(step_config(gated, "eval4")) != key_material(step_config(plain, "eval4"))


def test_settings_the_job_does_not_compute_with_stay_out_of_the_key():
    plain = key_material(step_config(build_plan("smoke"), "eval1"))
    for override in ("eval.compare.resamples=10", "eval.download_dir=elsewhere",
                     "tracking.system_metrics.sampling_interval_s=1"):
        assert key_material(step_config(build_plan("smoke", [override]), "eval1")) == plain, override
    for override in ("eval.max_samples=8", "eval.generation.max_new_tokens=32", "scoring.refcoco.iou_threshold=0.6"):
        assert key_material(step_config(build_plan("smoke", [override]), "eval1")) != plain, override
