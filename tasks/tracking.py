"""MLflow records of a pipeline run (DESIGN.md, "Caching, reruns, lineage").

- one experiment per pipeline: `<experiment_prefix>-<pipeline name>`;
- a parent run per flow run, tagged with the flow run id, deployment, overrides and git sha;
- a child run per step, tagged `mimovl.step`, `mimovl.step_key`, `mimovl.input_checkpoint`,
  `mimovl.input_run_id`, `mimovl.output_checkpoint`, `mimovl.git_sha`, with the flattened step config as
  params and the resolved config and job log as artifacts; the job logs its step metrics into it;
- lineage through MLflow 3 logged models: the run that produced an output (a checkpoint, or an artifact
  set such as evaluation scores: its model_type) outputs a logged model tagged with the output's URI and
  digest, and each run that starts from that output logs the model as an input
  (`get_run(id).inputs.model_inputs`).

Everything goes through one MlflowClient with explicit run ids (no fluent API: its active-run stack is
per thread, and Prefect runs tasks in a thread pool). MLflow is imported when a Tracker is made.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conf import REPO_ROOT
from tasks.orchestration_config import TrackingConfig

log = logging.getLogger("mimovl.tracking")

TAG_PREFIX = "mimovl."
STEP_TAGS = ("step", "step_key", "input_checkpoint", "input_run_id", "output_checkpoint", "git_sha")
OUTPUT_MODEL_TAG = "mimovl.output_model_id"
STATUS_TAG = "mimovl.status"           # ran | cached | failed
SOURCE_RUN_TAG = "mimovl.source_run_id"  # for a cached step: the run that produced its checkpoint
MAX_PARAM_VALUE = 6000                 # MLflow's limit on a param value
PARAM_BATCH = 100                      # MLflow's limit on params per log_batch


def resolve_tracking_uri(uri: str) -> str:
    """A sqlite:/// or file: URI with a relative path made absolute against the repository root."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{(REPO_ROOT / path).resolve()}"
    if uri.startswith("file:") and not uri.startswith("file:///"):
        return "file://" + str((REPO_ROOT / uri[len("file:"):].lstrip("/")).resolve())
    return uri


def resolve_artifact_location(location: str | None) -> str | None:
    if location is None or "://" in location or Path(location).is_absolute():
        return location
    return str((REPO_ROOT / location).resolve())


def resolved_tracking(cfg: TrackingConfig) -> TrackingConfig:
    """The config with absolute local paths (so the job, in any working directory, finds the same store)."""
    return dataclasses.replace(cfg, tracking_uri=resolve_tracking_uri(cfg.tracking_uri),
                               artifact_location=resolve_artifact_location(cfg.artifact_location))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"stage": {"optim": {"lr": 0.001}}} -> {"stage.optim.lr": "0.001"}; lists as JSON."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            flat[name] = text[:MAX_PARAM_VALUE]
    return flat


class Tracker:
    """The MLflow side of a pipeline run."""

    def __init__(self, cfg: TrackingConfig):
        from mlflow import MlflowClient

        self.cfg = resolved_tracking(cfg)
        if self.cfg.tracking_uri.startswith("sqlite:///"):
            Path(self.cfg.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.cfg.tracking_uri)

    @property
    def tracking_uri(self) -> str:
        return self.cfg.tracking_uri

    # ------------------------------------------------------------------------------------------ runs

    def experiment_id(self, pipeline: str) -> str:
        name = f"{self.cfg.experiment_prefix}-{pipeline}"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=self.cfg.artifact_location)
        except MlflowException:  # created concurrently by another flow run
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def start_run(self, experiment_id: str, name: str, tags: Mapping[str, Any],
                  parent_run_id: str | None = None) -> str:
        all_tags = {k: _tag_value(v) for k, v in tags.items()}
        if parent_run_id is not None:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        return self.client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id

    def end_run(self, run_id: str, ok: bool) -> None:
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, _tag_value(v)) for k, v in tags.items()])

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = sorted(params.items())
        for start in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + PARAM_BATCH]])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def get_tags(self, run_id: str) -> dict[str, str] | None:
        """The run's tags, or None when this tracking store does not know the run."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.tags)
        except MlflowException:
            return None

    # ------------------------------------------------------------------------------------------ lineage

    def log_output(self, run_id: str, experiment_id: str, step: str, uri: str, digest: str, step_key: str,
                   output_type: str) -> str:
        """A logged model standing for the output (a checkpoint or an artifact set, `output_type`)
        `run_id` produced; returns its id."""
        from mlflow.entities import LoggedModelOutput

        model = self.client.create_logged_model(
            experiment_id, name=step, source_run_id=run_id, model_type=output_type,
            tags={"mimovl.checkpoint_uri": uri, "mimovl.checkpoint_digest": digest, "mimovl.step_key": step_key,
                  "mimovl.step": step, "mimovl.output_type": output_type})
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        self.client.finalize_logged_model(model.model_id, "READY")
        self.set_tags(run_id, {OUTPUT_MODEL_TAG: model.model_id})
        return model.model_id

    def log_input_checkpoint(self, run_id: str, model_id: str) -> None:
        from mlflow.entities import LoggedModelInput

        self.client.log_inputs(run_id, models=[LoggedModelInput(model_id)])

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, context: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}))
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])

    def output_model_of(self, run_id: str | None) -> str | None:
        """The logged model a run produced (its OUTPUT_MODEL_TAG), or None."""
        if not run_id:
            return None
        tags = self.get_tags(run_id)
        return None if tags is None else tags.get(OUTPUT_MODEL_TAG)

    # ------------------------------------------------------------------------------------------ links

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        if not self.cfg.ui_url:
            return None
        return f"{self.cfg.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def step_tags(step: str, step_key: str, input_checkpoint: str | None, input_run_id: str | None,
              output_checkpoint: str | None, git_sha: str) -> dict[str, str]:
    values = dict(step=step, step_key=step_key, input_checkpoint=input_checkpoint or "",
                  input_run_id=input_run_id or "", output_checkpoint=output_checkpoint or "", git_sha=git_sha)
    return {TAG_PREFIX + name: values[name] for name in STEP_TAGS}


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
