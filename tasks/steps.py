"""Run one pipeline step: reuse its output when the store has one for its key, else launch its job.

    key = step_key(resolved step config, resources (world size, device), input digest, data digest, code)

- cached: the store holds an output (a checkpoint or an artifact set, as the step's kind declares) at
  <store root>/<step>/<key>. No job runs; the step gets a child run in this pipeline's MLflow run,
  tagged `mimovl.status=cached` and linked to the run that produced the output (`mimovl.source_run_id`,
  and the logged model lineage).
- claimed: otherwise the step claims its output URI (storage.store.try_claim, lease and polling from
  conf/orchestration `claims`) before touching its work folder, and renews the claim while its job
  runs. When another flow run holds the claim, it logs "waiting for <owner>" and polls until that run's
  output appears (then it is cached here) or the claim is free again (its owner failed or crashed, and
  the lease ran out): two runs never share a work folder at the same time.
- ran: a child run is created, the resolved config written to <runs>/work/<step>-<key[:n]>/step.yaml
  with that run's id (the job logs its metrics into it), and the job launched through tasks.launcher
  with the step's own launcher (its kind's resources and the step entry's), its lines streamed to
  `on_line`. The work folder is a function of the key, so a step that was interrupted (a lost worker, a
  killed job) resumes from its own checkpoints when run again; result.json says whether it did. The
  output becomes the run's output logged model, the next step's input.
Failures: tasks.launcher.LaunchError (the job could not start) is for the caller to retry; JobFailed
(the job ran and failed, with its last lines) and StepError are final.

Plain Python, no Prefect: flows/pipeline.py wraps `run_step` in a Prefect task.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from storage.claims import ClaimLost
from storage.store import open_store
from tasks.cache_keys import params_of, step_key
from tasks.datasets import DataSet
from tasks.launcher import JobResult, run_job
from tasks.orchestration_config import ClaimsConfig
from tasks.plan import PipelinePlan, StepSpec
from tasks.tracking import SOURCE_RUN_TAG, STATUS_TAG, Tracker, flatten, step_tags


STEP_CONFIG_FILE = "step.yaml"
RESULT_FILE = "result.json"


class StepError(RuntimeError):
    """A step broke the job contract (e.g. reported an output the store does not hold): not retried."""


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
    source_run_id: str | None     # the run that produced the output (run_id when it ran here)
    model_id: str | None          # the output's MLflow logged model
    work_dir: str
    output_type: str = "checkpoint"  # checkpoint | artifacts (the kind's `output`)
    job_wall_time_s: float = 0.0  # the job's own wall time (result.json); 0 when cached
    job_process_s: float = 0.0    # from launch to exit of the job's process; 0 when cached
    step_s: float = 0.0           # the whole step, bookkeeping included
    resumed: bool = False         # result.json's `resumed`
    metrics: dict[str, float] = field(default_factory=dict)
    run_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def claim_owner(pipeline_run: PipelineRun) -> str:
    """Who holds a step's claim: this flow run, in this process on this host."""
    return f"flow run {pipeline_run.flow_run_id} (pid {os.getpid()} on {os.uname().nodename})"


def run_step(plan: PipelinePlan, step: StepSpec, data: DataSet, upstream: StepOutcome | None, pipeline_run: PipelineRun,
             tracker: Tracker, on_line: Callable[[str], None], log: Callable[[str], None]) -> StepOutcome:
    """Run `step` of `plan` or reuse its output; see the module docstring."""
    started = time.monotonic()
    if step.source is not None and upstream is None:
        raise StepError(f"step '{step.name}' starts from '{step.source}' but got no outcome of it")
    kind = plan.kind(step)
    resources = plan.resources[step.name]
    input_uri = upstream.output_uri if upstream else None
    config, key = keyed_config(plan, step, data, upstream)
    output_uri = plan.output_uri(step, key)
    work_dir = plan.work_dir(step, key)
    store = open_store(plan.storage)
    tags = step_tags(step.name, key, input_uri, upstream.source_run_id if upstream else None, output_uri,
                     plan.git_sha)
    tags |= {"mimovl.kind": step.kind, "mimovl.output_type": kind.output}
    params = flatten(params_of(config)) | flatten({"resources": {
        "launcher": resources.launcher.name, "runner": resources.launcher.resolved_runner,
        "nproc_per_node": resources.launcher.nproc_per_node, **resources.key_material()}})
    record = _Record(step, kind.output, data if kind.split is not None else None, kind.split, upstream, pipeline_run,
                     tracker, key, output_uri, work_dir, tags, params, started, log)

    manifest = store.read_manifest(output_uri)
    if manifest is not None:
        return _cached(record, step, manifest)
    claim = _claim_or_wait(store, output_uri, claim_owner(pipeline_run), plan.orchestration.claims, step.name, log)
    if claim is None:  # another flow run produced it meanwhile
        return _cached(record, step, store.read_manifest(output_uri))
    outcome = None
    try:
        with claim.keep_alive(plan.orchestration.claims.renew_s):
            outcome = _run(plan, step, record, store, config, input_uri, on_line)
    except ClaimLost as exc:
        # Lost only once the job had finished (a failing job's own error wins): the output the store holds
        # now, ours or that of whoever took the claim over, is the step's; without one the step fails.
        manifest = store.read_manifest(output_uri)
        if manifest is None:
            raise StepError(f"step '{step.name}': {exc}; nothing is published at {output_uri}") from exc
        if outcome is not None and outcome.output_digest == manifest.digest:
            log(f"step {step.name}: {exc}; the job had already published {output_uri}, its output stands")
            return outcome
        log(f"step {step.name}: {exc}; using the output published at {output_uri} (digest {manifest.digest[:12]})")
        return _cached(record, step, manifest)
    return outcome


def _cached(record: "_Record", step: StepSpec, manifest) -> StepOutcome:
    """The step's earlier output; an output its job published as failed (meta `failure`, e.g. a quality
    gate that fell short) fails the step again instead of passing as cached."""
    failure = manifest.meta.get("failure")
    if failure:
        raise StepError(f"step '{step.name}': its output for this key was published as failed: {failure}")
    return record.cached(manifest.digest, manifest.run_id)


def keyed_config(plan: PipelinePlan, step: StepSpec, data: DataSet,
                 upstream: StepOutcome | None) -> tuple[dict[str, Any], str]:
    """The step's resolved config (before it has a run) and its key."""
    config = plan.step_config(step, data_uri=data.uri, input_checkpoint=upstream.output_uri if upstream else None)
    key = step_key(config, upstream.output_digest if upstream else None,
                   data.digest if plan.kind(step).split is not None else None, plan.code_versions[step.kind],
                   resources=plan.resources[step.name].key_material())
    return config, key


def _claim_or_wait(store: Any, uri: str, owner: str, claims: ClaimsConfig, step: str,
                   log: Callable[[str], None]) -> Any | None:
    """Our claim on `uri`, or None once the output is there (published by whoever held the claim)."""
    waiting_for = None
    while True:
        claim = store.try_claim(uri, owner, claims.lease_s)
        if claim is not None:
            if store.read_manifest(uri) is None:
                return claim
            claim.release()  # published between our look and our claim
            return None
        if store.read_manifest(uri) is not None:
            return None
        info = store.claim_info(uri)
        holder = info.owner if info is not None else "an owner that just released it"
        if holder != waiting_for:
            log(f"step {step}: waiting for {holder} (it holds the claim on {uri})")
            waiting_for = holder
        time.sleep(claims.poll_s)


def _run(plan: PipelinePlan, step: StepSpec, record: _Record, store: Any, config: dict[str, Any],
         input_uri: str | None, on_line: Callable[[str], None]) -> StepOutcome:
    tracker, pipeline_run, key, work_dir = record.tracker, record.pipeline_run, record.key, record.work_dir
    run_id = tracker.start_run(pipeline_run.experiment_id, step.name, {**record.tags, STATUS_TAG: "running"},
                               parent_run_id=pipeline_run.parent_run_id)
    record.log(f"step {step.name}: key {key[:12]}, running {plan.job_module(step)} (MLflow run {run_id})")
    ok = False
    log_path = work_dir / "logs" / f"{run_id}.log"
    try:
        tracker.log_params(run_id, record.params)
        record.log_inputs(run_id)
        config = plan.step_config(step, data_uri=record.data.uri if record.data else "", input_checkpoint=input_uri,
                                  step_key=key, output_uri=record.output_uri, work_dir=str(work_dir), run_id=run_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        config_path = work_dir / STEP_CONFIG_FILE
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        tracker.log_artifact(run_id, config_path)

        launched = time.monotonic()
        result = run_job(plan.resources[step.name].launcher, plan.job_module(step), config_path,
                         work_dir / RESULT_FILE, log_path=log_path, on_line=on_line)
        job_process_s = time.monotonic() - launched
        digest = _check_published(store, result, record.output_uri, step)
        model_id = tracker.log_output(run_id, pipeline_run.experiment_id, step.name, record.output_uri, digest, key,
                                      record.output_type)
        tracker.log_metrics(run_id, {f"job.{k}": v for k, v in result.metrics.items()}
                            | {"job.tokens_seen": result.tokens_seen, "job.wall_time_s": result.wall_time_s})
        tracker.set_tags(run_id, {STATUS_TAG: "ran", "mimovl.resumed": result.resumed})
        ok = True
    finally:
        if log_path.exists():
            tracker.log_artifact(run_id, log_path, "job")
        if not ok:
            tracker.set_tags(run_id, {STATUS_TAG: "failed"})
        tracker.end_run(run_id, ok)
    return StepOutcome(step=step.name, kind=step.kind, status="ran", step_key=key, output_uri=record.output_uri,
                       output_digest=digest, run_id=run_id, source_run_id=run_id, model_id=model_id,
                       work_dir=str(work_dir), output_type=record.output_type, job_wall_time_s=result.wall_time_s,
                       job_process_s=job_process_s, step_s=time.monotonic() - record.started,
                       resumed=result.resumed, metrics=dict(result.metrics),
                       run_url=tracker.run_url(pipeline_run.experiment_id, run_id))


@dataclass
class _Record:
    """What a step's MLflow records need, ran or cached."""

    step: StepSpec
    output_type: str
    data: DataSet | None          # None: the kind reads no data
    split: str | None             # the data split the kind reads
    upstream: StepOutcome | None
    pipeline_run: PipelineRun
    tracker: Tracker
    key: str
    output_uri: str
    work_dir: Path
    tags: dict[str, str]
    params: dict[str, str]
    started: float
    log: Callable[[str], None]

    def log_inputs(self, run_id: str) -> None:
        if self.data is not None:
            self.tracker.log_dataset(run_id, f"{self.data.name}/{self.split}", self.data.digest, self.data.uri,
                                     context="training")
        if self.upstream is not None and self.upstream.model_id:
            self.tracker.log_input_checkpoint(run_id, self.upstream.model_id)

    def cached(self, digest: str, source_run_id: str | None) -> StepOutcome:
        tracker, pipeline_run = self.tracker, self.pipeline_run
        model_id = tracker.output_model_of(source_run_id)
        note = (f"Cached: the store already holds this step's output {self.output_uri} (key {self.key[:12]}), "
                f"produced by MLflow run {source_run_id or 'unknown'}.")
        run_id = tracker.start_run(pipeline_run.experiment_id, self.step.name,
                                   {**self.tags, STATUS_TAG: "cached", SOURCE_RUN_TAG: source_run_id or "",
                                    "mimovl.output_model_id": model_id or "", "mlflow.note.content": note},
                                   parent_run_id=pipeline_run.parent_run_id)
        tracker.log_params(run_id, self.params)
        self.log_inputs(run_id)
        tracker.end_run(run_id, ok=True)
        self.log(f"step {self.step.name}: key {self.key[:12]} cached ({self.output_uri}, produced by MLflow run "
                 f"{source_run_id})")
        return StepOutcome(step=self.step.name, kind=self.step.kind, status="cached", step_key=self.key,
                           output_uri=self.output_uri, output_digest=digest, run_id=run_id,
                           source_run_id=source_run_id, model_id=model_id, work_dir=str(self.work_dir),
                           output_type=self.output_type, step_s=time.monotonic() - self.started,
                           run_url=tracker.run_url(pipeline_run.experiment_id, run_id))


def _check_published(store: Any, result: JobResult, output_uri: str, step: StepSpec) -> str:
    """The digest of the output the job published; StepError if it is not where it must be."""
    if result.output_uri != output_uri:
        raise StepError(f"step '{step.name}': the job reported output {result.output_uri}, expected {output_uri}")
    manifest = store.read_manifest(output_uri)
    if manifest is None:
        raise StepError(f"step '{step.name}': the job finished but the store holds no output at {output_uri}")
    if result.output_digest is not None and result.output_digest != manifest.digest:
        raise StepError(f"step '{step.name}': the job reported digest {result.output_digest}, the store holds "
                        f"{manifest.digest} at {output_uri}")
    return manifest.digest
