"""One step at a time, without Prefect: run, cache, lineage and failures, with a stand-in job
(tests/flows/fake_pretrain.py: the pretrain job's contract without torch) and MLflow on SQLite."""
from __future__ import annotations

import pytest
from prefect.states import Failed

from flows.pipeline import retry_launch_errors
from flows.plan import build_plan
from tasks import steps as steps_module
from tasks.datasets import DataSet
from tasks.launcher import JobFailed, LaunchError
from tasks.steps import PipelineRun, run_step
from tasks.tracking import Tracker


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_FAIL_STEP", raising=False)
    plan = build_plan("smoke", [f"runs_dir={tmp_path}", f"storage.root=file://{tmp_path}/store",
                                "orchestration.kinds.pretrain.module=tests.flows.fake_pretrain", "launcher.runner=python"])
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = DataSet(name="synthetic", uri=str(data_dir), digest="d" * 64, key="k" * 64, split="pretrain",
                   generated=False)
    tracker = Tracker(plan.tracking)
    experiment = tracker.experiment_id(plan.pipeline)
    return plan, data, tracker, experiment


def new_pipeline_run(tracker: Tracker, experiment: str) -> PipelineRun:
    return PipelineRun(experiment, tracker.start_run(experiment, "pipeline", {}), "flow-run-id")


def run(plan, name, data, upstream, pipeline_run, tracker, lines=None):
    lines = [] if lines is None else lines
    return run_step(plan, plan.by_name[name], data, upstream, pipeline_run, tracker, on_line=lines.append,
                    log=lambda _: None)


def test_a_step_runs_then_is_cached_with_lineage_to_the_next(env, monkeypatch):
    plan, data, tracker, experiment = env
    first = new_pipeline_run(tracker, experiment)
    lines: list[str] = []
    s1 = run(plan, "stage1", data, None, first, tracker, lines)
    assert s1.status == "ran" and s1.source_run_id == s1.run_id and s1.model_id
    assert any(line.startswith("[stage1] step 4/4 loss") for line in lines)  # streamed
    assert s1.output_uri.endswith(f"/stage1/{s1.step_key}")
    s2 = run(plan, "stage2", data, s1, first, tracker)

    client = tracker.client
    run1 = client.get_run(s1.run_id)
    tags = run1.data.tags
    assert tags["mlflow.parentRunId"] == first.parent_run_id
    assert tags["mimovl.step"] == "stage1" and tags["mimovl.step_key"] == s1.step_key
    assert tags["mimovl.input_checkpoint"] == "" and tags["mimovl.output_checkpoint"] == s1.output_uri
    assert tags["mimovl.git_sha"] == plan.git_sha and tags["mimovl.status"] == "ran"
    assert run1.data.params["stage.optim.lr"] == "0.001"
    assert [m.step for m in client.get_metric_history(s1.run_id, "loss")] == [1, 2, 3, 4]  # logged by the job
    artifacts = {a.path for a in client.list_artifacts(s1.run_id)} | {a.path for a in client.list_artifacts(s1.run_id, "job")}
    assert "step.yaml" in artifacts and f"job/{s1.run_id}.log" in artifacts
    tags2 = client.get_run(s2.run_id).data.tags
    assert tags2["mimovl.input_checkpoint"] == s1.output_uri and tags2["mimovl.input_run_id"] == s1.run_id
    assert [m.model_id for m in client.get_run(s2.run_id).inputs.model_inputs] == [s1.model_id]
    assert client.get_logged_model(s1.model_id).tags["mimovl.checkpoint_digest"] == s1.output_digest

    def no_job(*args, **kwargs):
        raise AssertionError("a cached step launched a job")

    monkeypatch.setattr(steps_module, "run_job", no_job)
    second = new_pipeline_run(tracker, experiment)
    c1 = run(plan, "stage1", data, None, second, tracker)
    c2 = run(plan, "stage2", data, c1, second, tracker)
    assert (c1.status, c2.status) == ("cached", "cached")
    assert (c1.step_key, c2.step_key) == (s1.step_key, s2.step_key)
    assert (c1.source_run_id, c2.source_run_id) == (s1.run_id, s2.run_id)  # the earlier runs, linked
    assert c1.model_id == s1.model_id and c1.run_id != s1.run_id
    cached = client.get_run(c2.run_id)
    assert cached.data.tags["mimovl.status"] == "cached" and cached.data.tags["mimovl.source_run_id"] == s2.run_id
    assert cached.data.tags["mlflow.parentRunId"] == second.parent_run_id
    assert [m.model_id for m in cached.inputs.model_inputs] == [s1.model_id]


def test_a_changed_data_digest_reruns_the_step(env):
    plan, data, tracker, experiment = env
    pipeline_run = new_pipeline_run(tracker, experiment)
    first = run(plan, "stage1", data, None, pipeline_run, tracker)
    other = DataSet(**{**data.__dict__, "digest": "e" * 64})
    again = run(plan, "stage1", other, None, pipeline_run, tracker)
    assert again.status == "ran" and again.step_key != first.step_key


def test_a_failing_job_fails_the_step_with_its_last_lines(env, monkeypatch):
    plan, data, tracker, experiment = env
    monkeypatch.setenv("FAKE_FAIL_STEP", "stage1")
    pipeline_run = new_pipeline_run(tracker, experiment)
    with pytest.raises(JobFailed, match=r"(?s)exit code 3.*ValueError: fake failure of step stage1") as info:
        run(plan, "stage1", data, None, pipeline_run, tracker)
    assert info.value.tail[-1] == "ValueError: fake failure of step stage1"
    (failed,) = tracker.client.search_runs([experiment], "tags.`mimovl.step` = 'stage1'")
    assert failed.info.status == "FAILED" and failed.data.tags["mimovl.status"] == "failed"
    assert [a.path for a in tracker.client.list_artifacts(failed.info.run_id, "job")] == [
        f"job/{failed.info.run_id}.log"]


def test_only_launch_errors_are_retried():
    assert retry_launch_errors(None, None, Failed(data=LaunchError("cannot start job")))
    assert not retry_launch_errors(None, None, Failed(data=JobFailed("job failed", None, 1, ["boom"])))
    assert not retry_launch_errors(None, None, Failed(data=ValueError("bug")))
