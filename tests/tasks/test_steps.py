"""One step at a time, without Prefect: run, cache, lineage, resources, claims and failures, with a
stand-in job (tests/flows/fake_pretrain.py: the pretrain job's contract without torch, run as a real
process) and MLflow on SQLite."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prefect.states import Failed

from tasks.pipeline_tasks import retry_launch_errors
from flows.plan import build_plan
from tasks import steps as steps_module
from tasks.datasets import DataSet
from tasks.launcher import JobFailed, LaunchError
from storage.store import open_store
from tasks.steps import PipelineRun, StepError, claim_owner, keyed_config, run_step
from tasks.tracking import Tracker


def fake_plan(tmp_path, *extra: str):
    return build_plan("smoke", [f"runs_dir={tmp_path}", f"storage.root=file://{tmp_path}/store",
                                "orchestration.kinds.pretrain.module=tests.flows.fake_pretrain",
                                "orchestration.kinds.pretrain.code=[tests/flows/fake_pretrain.py]",  # the job's code
                                "launcher.runner=python", "orchestration.claims.poll_s=0.1", *extra])


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_FAIL_STEP", raising=False)
    monkeypatch.delenv("FAKE_STEP_SECONDS", raising=False)
    plan = fake_plan(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = DataSet(name="synthetic", uri=str(data_dir), digest="d" * 64, key="k" * 64,
                   generated=False)
    tracker = Tracker(plan.tracking)
    experiment = tracker.experiment_id(plan.pipeline)
    return plan, data, tracker, experiment


def new_pipeline_run(tracker: Tracker, experiment: str, flow_run_id: str = "flow-run-id") -> PipelineRun:
    return PipelineRun(experiment, tracker.start_run(experiment, "pipeline", {}), flow_run_id)


def run(plan, name, data, upstream, pipeline_run, tracker, lines=None, logged=None):
    lines = [] if lines is None else lines
    logged = [] if logged is None else logged
    return run_step(plan, plan.by_name[name], data, upstream, pipeline_run, tracker, on_line=lines.append,
                    log=logged.append)


def progress(name: str, total: int) -> list[str]:
    """The fake job's progress lines for a run of `total` steps from the start."""
    return [f"[{name}] step {n}/{total} loss {1.0 / n:.4f} tokens/s 1000 ETA 0s" for n in range(1, total + 1)]


def test_a_step_runs_then_is_cached_with_lineage_to_the_next(env, monkeypatch):
    plan, data, tracker, experiment = env
    first = new_pipeline_run(tracker, experiment)
    lines: list[str] = []
    s1 = run(plan, "stage1", data, None, first, tracker, lines)
    assert s1.status == "ran" and s1.source_run_id == s1.run_id and s1.model_id
    assert [line for line in lines if line.startswith("[stage1] step ")] == progress("stage1", 4)  # streamed
    assert s1.output_uri.endswith(f"/stage1/{s1.step_key}")
    s2 = run(plan, "stage2", data, s1, first, tracker)

    client = tracker.client
    run1 = client.get_run(s1.run_id)
    tags = run1.data.tags
    assert tags["mlflow.parentRunId"] == first.parent_run_id
    assert tags["mimovl.step"] == "stage1" and tags["mimovl.step_key"] == s1.step_key
    assert tags["mimovl.input_checkpoint"] == "" and tags["mimovl.output_checkpoint"] == s1.output_uri
    assert tags["mimovl.git_sha"] == plan.git_sha and tags["mimovl.status"] == "ran"
    assert run1.data.params["stage.optim.lr"] == str(plan.config["stages"]["stage1_projector_warmup"]["optim"]["lr"])
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


def no_job(*args, **kwargs):
    raise AssertionError("a cached step launched a job")


def test_a_changed_log_every_is_a_cache_hit(env, tmp_path, monkeypatch):
    plan, data, tracker, experiment = env
    first = run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker)
    assert first.status == "ran"
    monkeypatch.setattr(steps_module, "run_job", no_job)
    quieter = fake_plan(tmp_path, "stages.stage1_projector_warmup.log_every=1",
                        "stages.stage1_projector_warmup.checkpoint_every=1")
    again = run(quieter, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker)
    assert (again.status, again.step_key, again.source_run_id) == ("cached", first.step_key, first.run_id)
    # the cached run's params say how it was asked to run
    assert tracker.client.get_run(again.run_id).data.params["stage.log_every"] == "1"


def test_a_1_process_checkpoint_is_no_cache_hit_for_a_2_process_request(env, tmp_path):
    plan, data, tracker, experiment = env
    one = run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker)
    two_plan = fake_plan(tmp_path, "+pipeline.steps.stage1.resources={runner: torchrun, nproc_per_node: 2}")
    lines: list[str] = []
    two = run(two_plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker, lines)
    assert one.status == "ran" and two.status == "ran"  # not a cache hit
    assert two.step_key != one.step_key and two.output_uri != one.output_uri
    assert (one.metrics["world_size"], two.metrics["world_size"]) == (1.0, 2.0)  # each ran as requested
    assert sorted(line for line in lines if line.startswith("[stage1] step 4/4")) == [progress("stage1", 4)[-1]] * 2
    params = tracker.client.get_run(two.run_id).data.params
    assert (params["resources.world_size"], params["resources.device"], params["resources.runner"]) == (
        "2", "cpu", "torchrun")


def test_resumed_comes_from_the_jobs_result(env):
    plan, data, tracker, experiment = env
    _, key = keyed_config(plan, plan.by_name["stage1"], data, None)
    work = plan.work_dir(plan.by_name["stage1"], key)
    (work / "deepspeed").mkdir(parents=True)
    (work / "deepspeed" / "latest").write_text("2")  # what an interrupted run of this key left
    lines: list[str] = []
    resumed = run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker, lines)
    assert resumed.status == "ran" and resumed.resumed and resumed.work_dir == str(work)
    assert [line for line in lines if line.startswith("[stage1] step ")] == progress("stage1", 4)[2:]
    assert tracker.client.get_run(resumed.run_id).data.tags["mimovl.resumed"] == "true"
    fresh = run(plan, "stage2", data, resumed, new_pipeline_run(tracker, experiment), tracker)
    assert not fresh.resumed and tracker.client.get_run(fresh.run_id).data.tags["mimovl.resumed"] == "false"


def test_two_runs_of_one_key_at_once_run_one_job_and_share_its_output(env, monkeypatch):
    plan, data, tracker, experiment = env
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.5")  # long enough for the second run to find the claim
    launched: list[str] = []
    real_run_job = steps_module.run_job

    def counting_run_job(launcher, module, config_path, *args, **kwargs):
        launched.append(str(config_path))
        return real_run_job(launcher, module, config_path, *args, **kwargs)

    monkeypatch.setattr(steps_module, "run_job", counting_run_job)
    outcomes: dict[str, object] = {}
    logs: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def one_flow_run(name: str) -> None:
        try:
            pipeline_run = new_pipeline_run(Tracker(plan.tracking), experiment, f"flow-run-{name}")
            outcomes[name] = run(plan, "stage1", data, None, pipeline_run, Tracker(plan.tracking), logged=logs[name])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_flow_run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    ran = [name for name, o in outcomes.items() if o.status == "ran"]
    cached = [name for name, o in outcomes.items() if o.status == "cached"]
    assert len(ran) == 1 and len(cached) == 1, {n: o.status for n, o in outcomes.items()}
    runner, waiter = outcomes[ran[0]], outcomes[cached[0]]
    assert len(launched) == 1  # one job, so one user of the work folder
    assert waiter.output_uri == runner.output_uri and waiter.output_digest == runner.output_digest
    assert waiter.source_run_id == runner.run_id
    owner = claim_owner(PipelineRun(experiment, "", f"flow-run-{ran[0]}"))
    assert f"step stage1: waiting for {owner} (it holds the claim on {runner.output_uri})" in logs[cached[0]]
    assert open_store(plan.storage).claim_info(runner.output_uri) is None  # released when the job was done


def test_a_claim_whose_owner_crashed_is_taken_over_when_its_lease_runs_out(env):
    plan, data, tracker, experiment = env
    _, key = keyed_config(plan, plan.by_name["stage1"], data, None)
    uri = plan.output_uri(plan.by_name["stage1"], key)
    assert open_store(plan.storage).try_claim(uri, "a crashed flow run", lease_s=1.0) is not None  # never renewed
    logged: list[str] = []
    outcome = run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker, logged=logged)
    assert outcome.status == "ran" and outcome.output_uri == uri
    assert f"step stage1: waiting for a crashed flow run (it holds the claim on {uri})" in logged


def test_a_claim_lost_while_the_job_ran_keeps_the_output_it_published(env, tmp_path, monkeypatch):
    """The renewal thread finds the claim taken over while the job runs: the job still publishes, and the
    step returns that output instead of failing (the claim only guards against running twice)."""
    from storage.claims import Claim, ClaimLost

    plan, data, tracker, experiment = env
    plan = fake_plan(tmp_path, "orchestration.claims.renew_s=0.2")
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.3")

    def taken_over(self):
        raise ClaimLost(f"claim on {self.uri} was taken over by another flow run")

    monkeypatch.setattr(Claim, "renew", taken_over)
    logged: list[str] = []
    outcome = run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker, logged=logged)
    assert outcome.status == "ran"
    assert open_store(plan.storage).read_manifest(outcome.output_uri).digest == outcome.output_digest
    assert any("taken over by another flow run; the job had already published" in line for line in logged)


def test_an_output_published_as_failed_fails_the_step_again_instead_of_passing_as_cached(env, monkeypatch):
    """A job may publish its output and still fail (an evaluation below its quality gate records its scores,
    then fails): a rerun of the same key must fail again, not pass as cached."""
    plan, data, tracker, experiment = env
    first = run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker)
    store_root = Path(plan.storage["root"].removeprefix("file://"))
    manifest_path = next(p for p in store_root.rglob("manifest.json") if first.step_key in str(p))
    body = json.loads(manifest_path.read_text())
    body["meta"] = {**body.get("meta", {}), "failure": "eval4: synthetic_counting 0.1000 < minimum 0.3000"}
    manifest_path.write_text(json.dumps(body))
    monkeypatch.setattr(steps_module, "run_job", lambda *a, **k: pytest.fail("a failed output launched a job"))
    with pytest.raises(StepError, match="published as failed: eval4: synthetic_counting 0.1000 < minimum"):
        run(plan, "stage1", data, None, new_pipeline_run(tracker, experiment), tracker)
