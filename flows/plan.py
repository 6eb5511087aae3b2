"""A pipeline run's plan: the config composed once and everything checked before any step runs.

`build_plan("full", overrides)` composes conf/config.yaml with `pipeline=<name>` and the overrides,
validates the orchestration, tracking, launcher and storage sections, the DAG (flows/dag.py), each step's
resources (its launcher, world size, device) and resolved config (built and validated as its kind
declares, tasks/step_kinds.py: a typo in a stage fails here, naming the key), and computes the code
versions that go into the step keys. The plan is plain data: Prefect tasks get it as an argument (Hydra
is not used again after composing, so tasks need no lock).
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import conf
from conf import REPO_ROOT, ConfigError, validated
from flows.dag import PipelineError, parse_steps
from flows.report import ReportConfig
from model.config import model_config_from, require_weights
from tasks.cache_keys import code_version
from tasks.datasets import check_generator_config
from storage.store import join_uri, open_store
from tasks.launcher import LauncherConfig, launcher_config
from tasks.orchestration_config import OrchestrationConfig, TrackingConfig
from tasks.plan import PipelinePlan
from tasks.step_kinds import StepResources, check_sections, resolve_resources, resolved_precision
from tasks.tracking import resolved_tracking

# Stand-ins for what is known only at run time, for checking a step's config before anything runs
# (none of them enters the step key).
PENDING_DATA_URI = "<prepared data set>"
PENDING_INPUT = "<checkpoint of step {source}>"


def compose_pipeline(pipeline: str, overrides: list[str]) -> DictConfig:
    return conf.compose([f"pipeline={pipeline}", *overrides])


def _check_gate_steps(resolved: dict[str, Any], steps, orchestration: OrchestrationConfig, pipeline: str) -> None:
    """Every `eval.gates` entry names a step of this pipeline whose kind reads the `eval` section: a gate on a
    misspelt or absent step would never be checked."""
    gated = set(((resolved.get("eval") or {}).get("gates") or {}))
    readers = [s.name for s in steps if "eval" in orchestration.kinds[s.kind].config.values()]
    for step in sorted(gated - set(readers)):
        raise ConfigError(f"eval.gates.{step}: pipeline '{pipeline}' has no evaluation step '{step}' "
                          f"(its evaluation steps: {readers})")


def build_plan(pipeline: str, overrides: list[str] | None = None) -> PipelinePlan:
    """Compose and check everything; raises ConfigError (PipelineError for the DAG) naming the problem."""
    overrides = list(overrides or [])
    cfg = compose_pipeline(pipeline, overrides)
    try:
        resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {exc}") from exc
    for section in ("pipeline", "orchestration", "tracking", "launcher", "storage", "model", "data", "report",
                    "runs_dir"):
        if section not in resolved:
            raise ConfigError(f"the composed config has no '{section}' section (conf/config.yaml defaults)")
    orchestration = validated(OrchestrationConfig, resolved["orchestration"], "orchestration")
    tracking = resolved_tracking(validated(TrackingConfig, resolved["tracking"], "tracking"))
    launcher = launcher_config(resolved["launcher"])
    open_store(resolved["storage"])  # validates the storage section
    validated(ReportConfig, resolved["report"], "report")
    steps = parse_steps(resolved["pipeline"], orchestration.kinds)
    name = resolved["pipeline"]["name"]
    by_name = {s.name: s for s in steps}
    for step in steps:
        where = f"pipeline '{name}': step '{step.name}'"
        kind = orchestration.kinds[step.kind]
        check_sections(kind, resolved, step.options, where)
        if step.source is not None:
            source_output = orchestration.kinds[by_name[step.source].kind].output
            if kind.input is None:
                raise PipelineError(f"{where}: kind '{step.kind}' takes no input; set `from: null`")
            if kind.input != source_output:
                raise PipelineError(f"{where}: kind '{step.kind}' starts from a {kind.input}, but step "
                                    f"'{step.source}' (kind '{by_name[step.source].kind}') outputs {source_output}")
    _check_gate_steps(resolved, steps, orchestration, name)
    check_generator_config(resolved["data"], resolved["model"])
    model = model_config_from(resolved["model"])
    if model.init.source == "pretrained" and any(step.source is None for step in steps):
        for part in ("vit", "llm"):  # a first step builds the model from these folders
            require_weights(model, part)

    runs_dir = Path(resolved["runs_dir"])
    runs_dir = (runs_dir if runs_dir.is_absolute() else REPO_ROOT / runs_dir).resolve()
    versions = {"data_prep": code_version(REPO_ROOT, orchestration.data_prep.code)}
    for kind_name in sorted({s.kind for s in steps}):
        versions[kind_name] = code_version(REPO_ROOT, orchestration.kinds[kind_name].code)
    plan = PipelinePlan(pipeline=name, overrides=overrides, steps=steps, config=resolved,
                        orchestration=orchestration, tracking=tracking, launcher=launcher, runs_dir=runs_dir,
                        code_versions=versions, git_sha=git_sha())
    for step in steps:
        kind = plan.kind(step)
        step_launcher, size, device = resolve_resources(kind, step.resources, launcher,
                                                        f"pipeline '{name}': step '{step.name}': resources")
        source = None if step.source is None else PENDING_INPUT.format(source=step.source)
        config = plan.step_config(step, data_uri=PENDING_DATA_URI, input_checkpoint=source)
        plan.resources[step.name] = StepResources(step_launcher, size, device,
                                                  resolved_precision(kind, config, device))
    return plan


def git_sha(root: Path = REPO_ROOT) -> str:
    """HEAD's commit, with "-dirty" when tracked files differ from it; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def write_step_configs(plan: PipelinePlan, out_dir: Path, data_uri: str) -> list[Path]:
    """Each step's resolved config as <out_dir>/<step>.yaml, for running the jobs by hand in dependency
    order: a step publishes to <store root>/hand/<step> and the next step starts from there. No step key
    (nothing is cached) and no MLflow run (the job then logs only to its output)."""
    import yaml

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for step in plan.steps:
        source = None if step.source is None else join_uri(plan.storage["root"], "hand", step.source)
        config = plan.step_config(step, data_uri=data_uri, input_checkpoint=source,
                                  output_uri=join_uri(plan.storage["root"], "hand", step.name),
                                  work_dir=str(out_dir / "work" / step.name))
        path = out_dir / f"{step.name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m flows.plan",
                                     description="Check a pipeline and write its steps' resolved configs.")
    parser.add_argument("--pipeline", default="full", help="conf/pipeline/<name>.yaml (default: full)")
    parser.add_argument("--write-steps", metavar="DIR", type=Path,
                        help="write <DIR>/<step>.yaml for each step (run them in the printed order)")
    parser.add_argument("--data", metavar="URI", help="the data set folder or s3:// prefix the steps read")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. stages.stage1_projector_warmup.seed=3")
    args = parser.parse_args(argv)
    try:
        plan = build_plan(args.pipeline, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pipeline {plan.pipeline}: " + " -> ".join(f"{s.name}({s.source or '-'})" for s in plan.steps))
    if args.write_steps is not None:
        if not args.data:
            parser.error("--write-steps needs --data (the folder written by `python -m data.synth --out`)")
        data = args.data if "://" in args.data else str(Path(args.data).resolve())
        for path in write_step_configs(plan, args.write_steps, data):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
