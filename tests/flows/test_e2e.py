"""End to end: `prefect deployment run mimovl/full-pipeline` with pipeline=smoke on a real Prefect server
and process worker, running the real pretrain and eval jobs (one process per job: launcher.runner=python):
four stages, each evaluated (eval1..eval4) while the next one trains.

The tests share one runs folder and build on each other in file order: the first run trains all four
stages, the next ones reuse what it published.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from flows.services import DeploymentRun, LocalServices

pytestmark = pytest.mark.slow

STAGES = ["stage1", "stage2", "stage3", "stage4"]
EVALS = ["eval1", "eval2", "eval3", "eval4"]
STEPS = [step for pair in zip(STAGES, EVALS) for step in pair]   # the plan's order: each stage, then its evaluation
DEADLINE_S = 300


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def overrides(runs: Path, *extra: str) -> list[str]:
    return [f"runs_dir={runs}", f"storage.root=file://{runs}/store", "launcher.runner=python", *extra]


def run_pipeline(services: LocalServices, runs: Path, *extra: str, watch: bool = True) -> DeploymentRun:
    return services.run_deployment({"pipeline": "smoke", "overrides": overrides(runs, *extra)}, watch=watch,
                                   timeout_s=DEADLINE_S)


def summary(runs: Path, run: DeploymentRun) -> dict:
    path = runs / "pipelines" / f"{run.flow_run_id}.json"
    assert path.is_file(), f"no summary {path}; CLI output:\n{run.output}"
    return json.loads(path.read_text())


def statuses(summary_: dict) -> list[str]:
    return [step["status"] for step in summary_["steps"]]


def status_of(summary_: dict) -> dict[str, str]:
    return {step["step"]: step["status"] for step in summary_["steps"]}


def job_logs(runs: Path) -> set[Path]:
    return set(runs.glob("work/*/logs/*.log"))


def mlflow(runs: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{runs}/mlflow/mlflow.db")


def task_runs(services: LocalServices, flow_run_id: str) -> dict[str, int]:
    """{task run name: run count} of a flow run, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: services.api_url}), get_client(sync_client=True) as client:
        found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.run_count for run in found}


def prefect_records(services: LocalServices, flow_run_id: str) -> tuple[list[str], list[str]]:
    """(markdown artifacts, log messages) of a flow run, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, LogFilter,
                                                LogFilterFlowRunId)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: services.api_url}), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        messages: list[str] = []
        while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                       limit=200, offset=len(messages)):
            messages += [log.message for log in page]
    return [a.data for a in artifacts if a.type == "markdown"], messages


@pytest.fixture(scope="module")
def first_run(prefect_services, runs) -> tuple[DeploymentRun, dict]:
    run = run_pipeline(prefect_services, runs)
    assert run.returncode == 0, run.output
    return run, summary(runs, run)


def test_the_smoke_pipeline_completes_through_the_deployment(first_run, prefect_services, runs):
    run, result = first_run
    assert "Completed" in run.output
    assert result["status"] == "completed" and [s["step"] for s in result["steps"]] == STEPS
    assert statuses(result) == ["ran"] * len(STEPS)
    assert result["deployment"] == "full-pipeline" and result["data"]["generated"]
    steps = {s["step"]: s for s in result["steps"]}
    for name in STAGES:  # the job's progress lines reached the step's log
        log = Path(steps[name]["work_dir"]) / "logs" / f"{steps[name]['run_id']}.log"
        assert f"[{name}] step 2/" in log.read_text()

    client = mlflow(runs)
    parent = client.get_run(result["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mimovl.flow_run_id"] == run.flow_run_id
    assert parent.data.tags["mimovl.deployment"] == "full-pipeline"
    assert json.loads(parent.data.tags["mimovl.overrides"]) == overrides(runs)
    assert parent.data.tags["mimovl.git_sha"]
    assert client.get_experiment(parent.info.experiment_id).name == "mimovl-smoke"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["mimovl.step"] for c in children) == sorted(STEPS)
    by_step = {c.data.tags["mimovl.step"]: c for c in children}
    for previous, name in zip(STAGES, STAGES[1:]):
        child, source = by_step[name], by_step[previous]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mimovl.input_checkpoint"] == source.data.tags["mimovl.output_checkpoint"]
        assert child.data.tags["mimovl.input_run_id"] == source.info.run_id
        # lineage: the previous step's output model is this step's input
        assert [m.model_id for m in client.get_run(child.info.run_id).inputs.model_inputs] == [
            source.data.tags["mimovl.output_model_id"]]
        assert child.data.metrics["loss"] > 0  # logged by the job into the run it was given
        assert "stage.optim.lr" in child.data.params
    artifacts = {a.path for a in client.list_artifacts(by_step["stage1"].info.run_id)}
    assert {"step.yaml", "job"} <= artifacts
    check_evaluations(result, by_step, client, runs)

    markdown, messages = prefect_records(prefect_services, run.flow_run_id)
    (table,) = markdown  # the run's summary for a person watching: every step, ran, its checkpoint
    for step in result["steps"]:
        assert f"| {step['step']} | {step['kind']} | ran |" in table and step["output_uri"] in table
    for name in STAGES:  # the job's progress reached the Prefect logs
        assert any(m.startswith(f"[{name}] step ") and "loss" in m and "ETA" in m for m in messages), name
    for name in EVALS:
        assert any(m.startswith(f"[{name}] benchmark ") and "samples/s" in m for m in messages), name


def check_evaluations(result: dict, by_step: dict, client, runs: Path) -> None:
    """Each stage's checkpoint evaluated: its scores published as the eval step's artifact set (every
    synthetic benchmark, smoke's few items each) and logged into the eval step's run."""
    from flows.plan import build_plan
    from storage.store import open_store

    steps = {s["step"]: s for s in result["steps"]}
    smoke_samples = build_plan("smoke").config["eval"]["max_samples"]   # conf/pipeline/smoke.yaml
    store = open_store({**storage_section(), "root": f"file://{runs}/store"})
    for stage, name in zip(STAGES, EVALS):
        step, run = steps[name], by_step[name]
        assert (step["kind"], step["output_type"]) == ("evaluate", "artifacts")
        assert run.data.tags["mimovl.input_checkpoint"] == steps[stage]["output_uri"]
        manifest = store.read_manifest(step["output_uri"])
        assert sorted(manifest.files) == ["predictions.jsonl", "scores.json"] and manifest.run_id == step["run_id"]
        scores = json.loads((Path(store.local_path(step["output_uri"])) / "scores.json").read_text())["benchmarks"]
        assert scores and all(name.startswith("synthetic_") for name in scores)
        assert {entry["n"] for entry in scores.values()} == {smoke_samples}
        for benchmark, entry in scores.items():  # logged by the job into the run it was given
            assert run.data.metrics[f"score/{benchmark}"] == pytest.approx(entry["score"])
        assert "system/cpu_utilization_percentage" in run.data.metrics
        assert "system/cpu_utilization_percentage" in by_step[stage].data.metrics  # the training job's too


def storage_section() -> dict:
    from omegaconf import OmegaConf

    from conf import load_group

    return OmegaConf.to_container(load_group("storage", "local"))


def test_the_same_run_again_launches_no_job(first_run, prefect_services, runs):
    _, result = first_run
    logs_before = job_logs(runs)
    run = run_pipeline(prefect_services, runs)
    assert run.returncode == 0, run.output
    again = summary(runs, run)
    assert statuses(again) == ["cached"] * len(STEPS)  # every evaluation reused too
    assert job_logs(runs) == logs_before  # no job started
    assert again["jobs_process_s"] == 0
    for before, now in zip(result["steps"], again["steps"]):
        assert now["step_key"] == before["step_key"] and now["output_uri"] == before["output_uri"]
        assert now["source_run_id"] == before["run_id"]  # the earlier MLflow run is linked
    assert not again["data"]["generated"]


def test_a_failing_job_fails_at_once_with_its_last_lines(first_run, prefect_services, runs):
    # A split the data set does not have: the job fails reading its data, a deterministic error.
    run = run_pipeline(prefect_services, runs, "orchestration.kinds.pretrain.split=no_such_split",
                       "orchestration.launch_retry_delay_s=0")
    assert run.returncode != 0
    failed = summary(runs, run)
    assert statuses(failed) == ["failed"] * len(STEPS)
    assert "JobFailed" in failed["failures"]["stage1"] and "no_such_split" in failed["failures"]["stage1"]
    assert failed["failures"]["stage2"] == failed["failures"]["eval1"] == "not run: an upstream step failed"
    assert task_runs(prefect_services, run.flow_run_id)["stage1"] == 1  # JobFailed is not retried


def test_a_job_that_cannot_start_is_retried(prefect_services, tmp_path):
    run = run_pipeline(prefect_services, tmp_path, "launcher.python=/no/such/python",
                       "orchestration.launch_retries=1", "orchestration.launch_retry_delay_s=0")
    assert run.returncode != 0
    failed = summary(tmp_path, run)
    assert "LaunchError" in failed["failures"]["prepare-data"]
    assert task_runs(prefect_services, run.flow_run_id)["prepare-data"] == 2  # one retry


def test_a_stage3_override_reruns_stage3_onward_and_a_killed_worker_resumes(first_run, prefect_services, runs):
    # stage3 changes (it runs and finishes: stage1 and stage2 are reused), stage4 gets a longer budget (it is
    # killed mid-way, then resumed by the rerun). The training chain only: resuming is the pretrain job's, and
    # the evaluate steps' caching is tested above.
    _, first = first_run
    extra = ("stages.stage3_multimodal.seed=7", "stages.stage4_long_context.budget.steps=6",
             *(f"~pipeline.steps.{name}" for name in EVALS))
    existing = set(runs.glob("work/stage4-*"))
    logs_before = job_logs(runs)
    started = run_pipeline(prefect_services, runs, *extra, watch=False)
    work = wait_for_checkpoint(runs, existing)
    kill_worker_and_jobs(prefect_services, work)

    prefect_services.start_worker()
    run = run_pipeline(prefect_services, runs, *extra)
    assert run.returncode == 0, run.output
    resumed = summary(runs, run)
    assert status_of(resumed) == {"stage1": "cached", "stage2": "cached", "stage3": "cached", "stage4": "ran"}
    steps = {s["step"]: s for s in resumed["steps"]}
    before = {s["step"]: s for s in first["steps"]}
    for name in ("stage1", "stage2"):  # upstream of the override: the first run's checkpoints, its runs linked
        assert steps[name]["step_key"] == before[name]["step_key"]
        assert steps[name]["source_run_id"] == before[name]["run_id"]
    for name in ("stage3", "stage4"):
        assert steps[name]["step_key"] != before[name]["step_key"]
    new_logs = job_logs(runs) - logs_before  # work folders are <step>-<key>: only stage3's and stage4's jobs ran
    assert new_logs and {log.parent.parent.name.rsplit("-", 1)[0] for log in new_logs} == {"stage3", "stage4"}
    stage3, stage4 = steps["stage3"], steps["stage4"]
    assert stage4["resumed"] and Path(stage4["work_dir"]) == work
    log = (work / "logs" / f"{stage4['run_id']}.log").read_text()
    assert "resumed from" in log
    # stage3 was finished by the interrupted flow run, not rerun
    client = mlflow(runs)
    (interrupted,) = client.search_runs([resumed["mlflow"]["experiment_id"]],
                                        f"tags.`mimovl.flow_run_id` = '{started.flow_run_id}'")
    assert client.get_run(stage3["source_run_id"]).data.tags["mlflow.parentRunId"] == interrupted.info.run_id


def wait_for_checkpoint(runs: Path, existing: set[Path]) -> Path:
    """The new stage4 work folder, once its job has saved a DeepSpeed checkpoint."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for work in set(runs.glob("work/stage4-*")) - existing:
            if (work / "deepspeed" / "latest").is_file():
                return work
        time.sleep(0.2)
    raise AssertionError("stage4 saved no checkpoint in time")


def kill_worker_and_jobs(services: LocalServices, work: Path) -> None:
    """SIGKILL the worker and everything under it (flow run process, the job): a lost machine."""
    worker = psutil.Process(services.pid("worker"))
    victims = [worker, *worker.children(recursive=True)]
    job = [p for p in victims if str(work) in " ".join(p.cmdline())]
    assert job, "the stage4 job is not among the worker's processes"
    for process in victims:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    psutil.wait_procs(victims, timeout=30)
    for _ in range(100):  # the worker is the fixture's child: reaped by pid()'s zombie check
        if services.pid("worker") is None:
            break
        time.sleep(0.1)
    assert services.pid("worker") is None
