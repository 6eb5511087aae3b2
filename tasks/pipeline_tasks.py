"""The Prefect tasks of the `mimovl` flow (flows/pipeline.py): the design's tracked tasks.

prepare-data generates the data set once per data config (tasks/datasets.py); step runs one pipeline step,
cached by its key or run as its job (tasks/steps.py). Prefect retries either only when its job could not
be started (LaunchError: an infrastructure failure); a job that ran and failed fails the task at once.
"""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.datasets import DataSet, prepare_dataset
from tasks.launcher import LaunchError
from tasks.plan import PipelinePlan
from tasks.steps import PipelineRun, StepOutcome, run_step
from tasks.tracking import Tracker


def retry_launch_errors(task_, task_run, state) -> bool:
    """Prefect's retry condition: retry only when the job could not be started (infrastructure)."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(error, LaunchError)


@task(name="prepare-data", cache_policy=NO_CACHE, retry_condition_fn=retry_launch_errors)
def prepare_data(plan: PipelinePlan) -> DataSet:
    logger = get_run_logger()
    data = prepare_dataset(plan.config["data"], plan.orchestration.data_prep,
                           plan.runs_dir / plan.orchestration.datasets_dir, plan.orchestration.key_chars,
                           plan.code_versions["data_prep"], plan.launcher, on_line=logger.info)
    logger.info("data set %s: %s (digest %s)", "generated" if data.generated else "reused", data.uri, data.digest[:12])
    return data


@task(name="step", cache_policy=NO_CACHE, retry_condition_fn=retry_launch_errors)
def pipeline_step(plan: PipelinePlan, name: str, data: DataSet, upstream: StepOutcome | None,
                  pipeline_run: PipelineRun) -> StepOutcome:
    logger = get_run_logger()
    tracker = Tracker(plan.tracking)
    return run_step(plan, plan.by_name[name], data, upstream, pipeline_run, tracker, on_line=logger.info,
                    log=logger.info)
