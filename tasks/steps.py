"""Run one pipeline step: reuse its checkpoint when the store has one for its key, else launch its job.

    key = step_key(resolved step config, input checkpoint digest, data digest, code version)

- cached: the store holds a checkpoint at <store root>/<step>/<key>. No job runs; the step gets a child
  run in this pipeline's MLflow run, tagged `mimovl.status=cached` and linked to the run that produced
  the checkpoint (`mimovl.source_run_id`, and the logged model lineage).
- ran: a child run is created, the resolved config written to <runs>/work/<step>-<key[:n]>/step.yaml
  with that run's id (the job logs its metrics into it), and the job launched through tasks.launcher,
  its lines streamed to `on_line`. The work folder is a function of the key, so a step that was
  interrupted (a lost worker, a killed job) resumes from its DeepSpeed checkpoints when run again.
  The job's checkpoint becomes the run's output logged model, the next step's input.
Failures: tasks.launcher.LaunchError (the job could not start) is for the caller to retry; JobFailed
(the job ran and failed, with its last lines) and StepError are final.

Plain Python, no Prefect: flows/pipeline.py wraps `run_step` in a Prefect task.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tasks.cache_keys import step_key
from tasks.datasets import DataSet
from tasks.launcher import JobResult, run_job
from storage.store import open_store
from tasks.tracking import (SOURCE_RUN_TAG, STATUS_TAG, Tracker, flatten, step_tags)

if TYPE_CHECKING:
    from flows.dag import StepSpec
    from flows.plan import PipelinePlan

RESUME_MARKER = "resumed from"   # the pretrain job's log line when it restarts from a DeepSpeed checkpoint
STEP_CONFIG_FILE = "step.yaml"
RESULT_FILE = "result.json"


class StepError(RuntimeError):
    """A step broke the job contract (e.g. reported a checkpoint the store does not hold): not retried."""


@dataclass(frozen=True)
class PipelineRun:
    """This pipeline run's identity in MLflow and Prefect."""

    experiment_id: str
    parent_run_id: str
    flow_run_id: str


@dataclass
class StepOutcome:
    step: str
    kind: str
    status: str                   # ran | cached
    step_key: str
    output_uri: str
    output_digest: str
    run_id: str                   # the step's child run in this pipeline run
    source_run_id: str | None     # the run that produced the checkpoint (run_id when it ran here)
    model_id: str | None          # the checkpoint's MLflow logged model
    work_dir: str
    job_wall_time_s: float = 0.0  # the job's own wall time (result.json); 0 when cached
    job_process_s: float = 0.0    # from launch to exit of the job's process; 0 when cached
    step_s: float = 0.0           # the whole step, bookkeeping included
    resumed: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    run_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_step(plan: PipelinePlan, step: StepSpec, data: DataSet, upstream: StepOutcome | None, pipeline_run: PipelineRun,
             tracker: Tracker, on_line: Callable[[str], None], log: Callable[[str], None]) -> StepOutcome:
    """Run `step` of `plan` or reuse its checkpoint; see the module docstring."""
    started = time.monotonic()
    if step.source is not None and upstream is None:
        raise StepError(f"step '{step.name}' starts from '{step.source}' but got no outcome of it")
    input_uri = upstream.output_uri if upstream else None
    config = plan.step_config(step, data_uri=data.uri, input_checkpoint=input_uri)
    key = step_key(config, upstream.output_digest if upstream else None, data.digest, plan.code_versions[step.kind])
    output_uri = plan.output_uri(step, key)
    work_dir = plan.work_dir(step, key)
    store = open_store(plan.storage)
    tags = step_tags(step.name, key, input_uri, upstream.source_run_id if upstream else None, output_uri,
                     plan.git_sha)
    tags["mimovl.kind"] = step.kind
    params = flatten(_without_run_fields(config))

    manifest = store.read_manifest(output_uri)
    if manifest is not None:
        return _record_cached(step, data, upstream, pipeline_run, tracker, key, output_uri, work_dir,
                              manifest.digest, manifest.run_id, tags, params, started, log)

    run_id = tracker.start_run(pipeline_run.experiment_id, step.name, {**tags, STATUS_TAG: "running"},
                               parent_run_id=pipeline_run.parent_run_id)
    log(f"step {step.name}: key {key[:12]}, running {plan.job_module(step)} (MLflow run {run_id})")
    ok = False
    log_path = work_dir / "logs" / f"{run_id}.log"
    try:
        tracker.log_params(run_id, params)
        _log_inputs(tracker, run_id, data, upstream)
        config = plan.step_config(step, data_uri=data.uri, input_checkpoint=input_uri, step_key=key,
                                  output_uri=output_uri, work_dir=str(work_dir), run_id=run_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        config_path = work_dir / STEP_CONFIG_FILE
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        tracker.log_artifact(run_id, config_path)

        resumed = False

        def handle_line(line: str) -> None:
            nonlocal resumed
            if RESUME_MARKER in line:
                resumed = True
            on_line(line)

        launched = time.monotonic()
        result = run_job(plan.launcher, plan.job_module(step), config_path, work_dir / RESULT_FILE,
                         log_path=log_path, on_line=handle_line)
        job_process_s = time.monotonic() - launched
        digest = _check_published(store, result, output_uri, step)
        model_id = tracker.log_output_checkpoint(run_id, pipeline_run.experiment_id, step.name, output_uri, digest,
                                                 key)
        tracker.log_metrics(run_id, {f"job.{k}": v for k, v in result.metrics.items()}
                            | {"job.tokens_seen": result.tokens_seen, "job.wall_time_s": result.wall_time_s})
        tracker.set_tags(run_id, {STATUS_TAG: "ran", "mimovl.resumed": resumed})
        ok = True
    finally:
        if log_path.exists():
            tracker.log_artifact(run_id, log_path, "job")
        if not ok:
            tracker.set_tags(run_id, {STATUS_TAG: "failed"})
        tracker.end_run(run_id, ok)
    return StepOutcome(step=step.name, kind=step.kind, status="ran", step_key=key, output_uri=output_uri,
                       output_digest=digest, run_id=run_id, source_run_id=run_id, model_id=model_id,
                       work_dir=str(work_dir), job_wall_time_s=result.wall_time_s, job_process_s=job_process_s,
                       step_s=time.monotonic() - started, resumed=resumed, metrics=dict(result.metrics),
                       run_url=tracker.run_url(pipeline_run.experiment_id, run_id))


def _record_cached(step: StepSpec, data: DataSet, upstream: StepOutcome | None,
                   pipeline_run: PipelineRun, tracker: Tracker, key: str, output_uri: str, work_dir: Path,
                   digest: str, source_run_id: str | None, tags: dict[str, str], params: dict[str, str],
                   started: float, log: Callable[[str], None]) -> StepOutcome:
    model_id = tracker.output_model_of(source_run_id)
    note = (f"Cached: the store already holds this step's checkpoint {output_uri} (key {key[:12]}), "
            f"produced by MLflow run {source_run_id or 'unknown'}.")
    run_id = tracker.start_run(pipeline_run.experiment_id, step.name,
                               {**tags, STATUS_TAG: "cached", SOURCE_RUN_TAG: source_run_id or "",
                                "mimovl.output_model_id": model_id or "", "mlflow.note.content": note},
                               parent_run_id=pipeline_run.parent_run_id)
    tracker.log_params(run_id, params)
    _log_inputs(tracker, run_id, data, upstream)
    tracker.end_run(run_id, ok=True)
    log(f"step {step.name}: key {key[:12]} cached ({output_uri}, produced by MLflow run {source_run_id})")
    return StepOutcome(step=step.name, kind=step.kind, status="cached", step_key=key, output_uri=output_uri,
                       output_digest=digest, run_id=run_id, source_run_id=source_run_id, model_id=model_id,
                       work_dir=str(work_dir), step_s=time.monotonic() - started,
                       run_url=tracker.run_url(pipeline_run.experiment_id, run_id))


def _log_inputs(tracker: Tracker, run_id: str, data: DataSet, upstream: StepOutcome | None) -> None:
    tracker.log_dataset(run_id, f"{data.name}/{data.split}", data.digest, data.uri, context="training")
    if upstream is not None and upstream.model_id:
        tracker.log_input_checkpoint(run_id, upstream.model_id)


def _check_published(store: Any, result: JobResult, output_uri: str, step: StepSpec) -> str:
    """The digest of the checkpoint the job published; StepError if it is not where it must be."""
    if result.output_uri != output_uri:
        raise StepError(f"step '{step.name}': the job reported output {result.output_uri}, expected {output_uri}")
    manifest = store.read_manifest(output_uri)
    if manifest is None:
        raise StepError(f"step '{step.name}': the job finished but the store holds no checkpoint at {output_uri}")
    if result.output_digest is not None and result.output_digest != manifest.digest:
        raise StepError(f"step '{step.name}': the job reported digest {result.output_digest}, the store holds "
                        f"{manifest.digest} at {output_uri}")
    return manifest.digest


def _without_run_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The config as params: without the run's own id and paths (they are tags or artifacts)."""
    return {k: v for k, v in config.items() if k not in ("tracking", "work_dir", "output_uri", "step_key", "runs_dir")}
