"""The `mimovl` Prefect flow: the pipeline of conf/pipeline/<name>.yaml as Prefect tasks.

    prefect deployment run mimovl/full-pipeline --param pipeline=smoke \
        --param 'overrides=["stages.stage3_multimodal.optim.lr=2e-5"]'

1. Compose the config once and check everything (flows/plan.py): a bad DAG, kind, stage or key fails
   here, before anything runs.
2. Prepare the data set (once per data config) and start a parent MLflow run.
3. Submit every step as a task that waits for the step it starts from: independent branches run at the
   same time. Each step is cached by its key or runs its job (tasks/steps.py); Prefect retries a step
   only when its job could not be started (LaunchError).
4. Report the scores of the evaluate steps (flows/report.py): a table per benchmark per evaluated step,
   with chance, and a plot, into the parent MLflow run (report/) and as the Prefect table artifact
   `<pipeline key>-scores`.
5. Publish a markdown artifact (steps, ran/cached, outputs, MLflow links, the score table) and a JSON
   summary under <runs_dir>/<summaries_dir>/<flow run id>.json; fail the flow run if a step failed.

Without a deployment or worker, `python -m flows.pipeline [PIPELINE] [OVERRIDE ...]` runs the flow in
this process against the project's local Prefect server (flows/services.py: started unless it already
runs, like `make demo-services`; `make stop` stops it), so a run still shows in the Prefect UI and no
temporary server has to start within Prefect's timeout.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from flows.plan import build_plan
from flows.report import Report, report_run
from storage.store import open_store
from tasks.datasets import DataSet
from tasks.launcher import cancel_all
from tasks.pipeline_tasks import pipeline_step, prepare_data
from tasks.plan import PipelinePlan
from tasks.steps import PipelineRun, StepOutcome
from tasks.tracking import Tracker

FLOW_NAME = "mimovl"


class PipelineFailed(RuntimeError):
    """One or more steps failed; the message names them and why."""


def _cancel_jobs(flow_, flow_run_, state) -> None:
    """A cancelled or crashed flow run stops the jobs it started (they run in their own sessions)."""
    cancel_all(f"flow run {state.name.lower()}")


@flow(name=FLOW_NAME, log_prints=True, on_cancellation=[_cancel_jobs], on_crashed=[_cancel_jobs])
def mimovl(pipeline: str = "full", overrides: list[str] = []) -> dict[str, Any]:  # noqa: B006 (Prefect parameter)
    """Run the pipeline conf/pipeline/<pipeline>.yaml with Hydra `overrides`, reusing every step whose
    checkpoint the store already holds for its key."""
    logger = get_run_logger()
    started = time.monotonic()
    plan = build_plan(pipeline, list(overrides))
    logger.info("pipeline %s: steps %s; overrides %s", plan.pipeline,
                " -> ".join(f"{s.name}({s.source or '-'})" for s in plan.steps), plan.overrides)
    run_id = str(flow_run.get_id() or "local")
    run_name = flow_run.get_name() or "local"
    deployment_name = deployment.get_name() or ""

    tracker = Tracker(plan.tracking)
    experiment_id = tracker.experiment_id(plan.pipeline)
    parent_run_id = tracker.start_run(experiment_id, run_name, {
        "mimovl.flow_run_id": run_id, "mimovl.flow_run_name": run_name, "mimovl.deployment": deployment_name,
        "mimovl.pipeline": plan.pipeline, "mimovl.overrides": json.dumps(plan.overrides),
        "mimovl.git_sha": plan.git_sha, "mimovl.code_versions": json.dumps(plan.code_versions, sort_keys=True)})
    pipeline_run = PipelineRun(experiment_id, parent_run_id, run_id)
    ok = False
    try:
        tracker.log_text(parent_run_id, yaml.safe_dump(plan.config, sort_keys=False), "config.yaml")
        retries = dict(retries=plan.orchestration.launch_retries,
                       retry_delay_seconds=plan.orchestration.launch_retry_delay_s)
        data_future = prepare_data.with_options(task_run_name="prepare-data", **retries).submit(plan)
        futures = {}
        for step in plan.steps:
            upstream = futures[step.source] if step.source else None
            futures[step.name] = pipeline_step.with_options(task_run_name=step.name, **retries).submit(
                plan, step.name, data_future, upstream, pipeline_run)

        outcomes: dict[str, StepOutcome] = {}
        failures: dict[str, str] = {}
        data_future.wait()
        data: DataSet | None = data_future.result(raise_on_failure=False)
        lines = plan.orchestration.failure_lines
        if not isinstance(data, DataSet):
            failures["prepare-data"] = _failure_text(data_future, lines)
        for name, future in futures.items():
            future.wait()
            if future.state.is_completed():
                outcomes[name] = future.result()
            else:
                failures[name] = _failure_text(future, lines)
        report = _report(plan, outcomes, tracker, parent_run_id, run_id, failures, logger)
        summary = _summary(plan, run_id, run_name, deployment_name, pipeline_run, tracker,
                           data if isinstance(data, DataSet) else None, outcomes, failures,
                           time.monotonic() - started)
        summary["scores"] = None if report is None else {"rows": report.rows, "markdown": report.markdown,
                                                         "plot": str(report.plot)}
        _publish(plan, summary)
        ok = not failures
    finally:
        tracker.end_run(parent_run_id, ok)
    if failures:
        raise PipelineFailed(f"pipeline {plan.pipeline} failed:\n" + "\n".join(
            f"- {name}: {why}" for name, why in failures.items()))
    return summary


def _report(plan: PipelinePlan, outcomes: dict[str, StepOutcome], tracker: Tracker, parent_run_id: str,
            run_id: str, failures: dict[str, str], logger) -> Report | None:
    """The score report of the steps that completed; a report that cannot be built is a failure of the run
    (named "report": the steps' outputs stay cached, a rerun only reports)."""
    out_dir = plan.runs_dir / plan.orchestration.summaries_dir / f"{run_id}-report"
    try:
        report = report_run(plan, outcomes, open_store(plan.storage), tracker.client, parent_run_id, out_dir,
                            table_key=f"{artifact_key(plan.pipeline)}-scores")
    except Exception as exc:  # noqa: BLE001 (whatever broke, the run says so and keeps its summary)
        failures["report"] = f"{type(exc).__name__}: {exc}"
        logger.error("score report failed: %s", failures["report"])
        return None
    if report is not None:
        logger.info("scores per evaluated step (%s):\n%s", out_dir, report.markdown)
    return report


def _failure_text(future, lines: int) -> str:
    """Why a task did not complete: its error's first line and last `lines` lines (the job's last lines)."""
    state = future.state
    if state.name == "NotReady":
        return "not run: an upstream step failed"
    error = future.result(raise_on_failure=False)
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (state.message or state.name)
    parts = text.strip().splitlines()
    if len(parts) > lines + 1:
        parts = [parts[0], "...", *parts[-lines:]]
    return "\n".join(parts)


def _summary(plan: PipelinePlan, run_id: str, run_name: str, deployment_name: str, pipeline_run: PipelineRun,
             tracker: Tracker, data: DataSet | None, outcomes: dict[str, StepOutcome], failures: dict[str, str],
             elapsed_s: float) -> dict[str, Any]:
    data_s = 0.0 if data is None else data.wall_time_s
    steps = []
    for step in plan.steps:
        if step.name in outcomes:
            steps.append(outcomes[step.name].to_dict())
        else:
            steps.append({"step": step.name, "kind": step.kind, "status": "failed",
                          "error": failures.get(step.name, "")})
    return {
        "flow_run_id": run_id,
        "flow_run_name": run_name,
        "deployment": deployment_name,
        "pipeline": plan.pipeline,
        "overrides": plan.overrides,
        "git_sha": plan.git_sha,
        "status": "failed" if failures else "completed",
        "failures": failures,
        "flow_wall_time_s": elapsed_s,
        # the jobs: the data generator (when it ran) and each step's job
        "jobs_wall_time_s": data_s + sum(o.job_wall_time_s for o in outcomes.values()),
        "jobs_process_s": data_s + sum(o.job_process_s for o in outcomes.values()),
        "data": None if data is None else {"uri": data.uri, "digest": data.digest, "generated": data.generated,
                                           "wall_time_s": data.wall_time_s},
        "mlflow": {"tracking_uri": tracker.tracking_uri, "experiment_id": pipeline_run.experiment_id,
                   "parent_run_id": pipeline_run.parent_run_id,
                   "parent_run_url": tracker.run_url(pipeline_run.experiment_id, pipeline_run.parent_run_id)},
        "steps": steps,
    }


def _publish(plan: PipelinePlan, summary: dict[str, Any]) -> Path:
    """The JSON summary under runs_dir and the run's markdown artifact in Prefect."""
    folder = plan.runs_dir / plan.orchestration.summaries_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{summary['flow_run_id']}.json"
    path.write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")
    create_markdown_artifact(markdown=render_markdown(summary), key=artifact_key(plan.pipeline),
                             description=f"mimovl pipeline {plan.pipeline}: steps, checkpoints, MLflow runs")
    return path


def artifact_key(pipeline: str) -> str:
    """The run's markdown artifact key: Prefect allows only lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{FLOW_NAME}-{pipeline}".lower())


def render_markdown(summary: dict[str, Any]) -> str:
    mlflow = summary["mlflow"]
    parent = mlflow["parent_run_url"] or mlflow["parent_run_id"]
    lines = [
        f"# mimovl pipeline `{summary['pipeline']}`: {summary['status']}",
        "",
        f"- overrides: `{json.dumps(summary['overrides'])}`",
        f"- git: `{summary['git_sha']}`",
        f"- MLflow parent run: {_link(parent, mlflow['parent_run_id'])} ({mlflow['tracking_uri']})",
        f"- wall time: {summary['flow_wall_time_s']:.1f} s (jobs: {summary['jobs_wall_time_s']:.1f} s)",
        "",
        "| step | kind | status | key | output | MLflow run | job time |",
        "|---|---|---|---|---|---|---|",
    ]
    for step in summary["steps"]:
        if step["status"] == "failed":
            lines.append(f"| {step['step']} | {step['kind']} | **failed** | | | | {step['error'][:200]} |")
            continue
        status = step["status"] + (" (resumed)" if step["resumed"] else "")
        run = _link(step["run_url"] or step["run_id"], step["run_id"][:12])
        if step["status"] == "cached":
            run += f" (from {step['source_run_id'] or 'unknown'})"
        lines.append(f"| {step['step']} | {step['kind']} | {status} | `{step['step_key'][:12]}` | "
                     f"`{step['output_uri']}` | {run} | {step['job_wall_time_s']:.1f} s |")
    if summary.get("scores"):
        lines += ["", "## Scores", "", summary["scores"]["markdown"]]
    return "\n".join(lines) + "\n"


def _link(target: str, text: str) -> str:
    return f"[{text}]({target})" if target.startswith("http") else f"`{text}`"


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.pipeline [PIPELINE] [OVERRIDE ...]` (see the module docstring); the exit code is 0
    when the pipeline completed, 1 when a step failed, 2 for a config error."""
    import os
    import sys

    from conf import ConfigError
    from flows.demo import render_summary
    from flows.services import TELEMETRY_OFF, LocalServices

    args = list(sys.argv[1:] if argv is None else argv)
    pipeline = args.pop(0) if args and "=" not in args[0] else "full"
    os.environ.update(TELEMETRY_OFF)
    try:
        services = LocalServices.from_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = services.start_prefect_server()
    print(f"Prefect server {services.prefect_url}: {'started' if started else 'already running'} "
          f"(`make stop` stops it)", flush=True)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: services.api_url}):
        try:
            summary = mimovl(pipeline=pipeline, overrides=args)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except PipelineFailed as exc:
            print(str(exc), file=sys.stderr)
            return 1
    print(render_summary(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
