"""The plan of a pipeline run as plain data: its steps and everything the Prefect tasks need to run them.

flows/plan.py builds it (composes the config once and checks everything before any step runs); the tasks
(tasks/pipeline_tasks.py, tasks/steps.py) only read it, so Hydra is not used again and tasks need no lock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.store import join_uri
from tasks.launcher import LauncherConfig
from tasks.orchestration_config import KindConfig, OrchestrationConfig, ResourcesConfig, TrackingConfig
from tasks.step_kinds import StepResources, build_step_config, set_path


@dataclass(frozen=True)
class StepSpec:
    name: str
    kind: str
    source: str | None          # `from:`: the step whose output this step starts from
    options: dict[str, Any]     # the kind's own keys, e.g. {"stage": "stage1_projector_warmup"}
    resources: ResourcesConfig  # the entry's `resources:` (null fields: the kind's defaults)


@dataclass
class PipelinePlan:
    pipeline: str                    # pipeline.name
    overrides: list[str]
    steps: list[StepSpec]            # in dependency order
    config: dict[str, Any]           # the whole composed config, resolved
    orchestration: OrchestrationConfig
    tracking: TrackingConfig         # local paths absolute
    launcher: LauncherConfig         # the composed `launcher` (data preparation; steps start from it)
    runs_dir: Path                   # absolute
    code_versions: dict[str, str]    # step kind -> code version; "data_prep" -> the generator's
    resources: dict[str, StepResources] = field(default_factory=dict)   # step name -> its resources
    git_sha: str = "unknown"
    by_name: dict[str, StepSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.steps}

    @property
    def storage(self) -> dict[str, Any]:
        return self.config["storage"]

    def kind(self, step: StepSpec) -> KindConfig:
        return self.orchestration.kinds[step.kind]

    def job_module(self, step: StepSpec) -> str:
        module = self.kind(step).module
        assert module is not None  # parse_steps refuses kinds without one
        return module

    def work_dir(self, step: StepSpec, key: str) -> Path:
        return self.runs_dir / self.orchestration.work_dir / f"{step.name}-{key[:self.orchestration.key_chars]}"

    def output_uri(self, step: StepSpec, key: str) -> str:
        return join_uri(self.storage["root"], step.name, key)

    def step_config(self, step: StepSpec, *, data_uri: str, input_checkpoint: str | None, step_key: str | None = None,
                    output_uri: str = "", work_dir: str = "", run_id: str | None = None) -> dict[str, Any]:
        """The step's resolved config (what the job gets), built and validated as its kind declares, with
        the precision its resources resolve `auto` to."""
        run_fields = {
            "step": step.name,
            "step_key": step_key,
            "data_uri": data_uri,
            "input_checkpoint": input_checkpoint,
            "output_uri": output_uri,
            "work_dir": work_dir,
            "runs_dir": str(self.runs_dir),
            "storage": self.storage,
            "tracking": {"tracking_uri": self.tracking.tracking_uri, "run_id": run_id},
        }
        config = build_step_config(self.kind(step), self.config, step.options, run_fields, self.where(step))
        precision = self.kind(step).precision
        if precision is not None and step.name in self.resources:
            set_path(config, precision.path, self.resources[step.name].precision)
        return config

    def where(self, step: StepSpec) -> str:
        options = ", ".join(f"{key} {value}" for key, value in step.options.items())
        return f"pipeline '{self.pipeline}': step '{step.name}'" + (f" ({options})" if options else "")
