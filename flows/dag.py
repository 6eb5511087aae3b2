"""The pipeline DAG of conf/pipeline/<name>.yaml: parse, check and order its steps.

    pipeline:
      name: full
      steps:
        stage1: {kind: pretrain, stage: stage1_projector_warmup, from: null}
        stage2: {kind: pretrain, stage: stage2_vl_alignment, from: stage1}

Each step names its kind, the kind's own keys (conf/orchestration `kinds.<kind>.step_keys`; for
pretrain: `stage`, a stage of `stages`), `from:`, the step whose output it starts from (null: none), and
optionally `resources:` (launcher, runner, nproc_per_node, nodes, device) over its kind's defaults.
Every problem raises PipelineError naming the pipeline, the step and the key, before anything runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conf import ConfigError, validated
from tasks.orchestration_config import KindConfig, ResourcesConfig
from tasks.plan import StepSpec

PIPELINE_KEYS = ("name", "steps")
COMMON_STEP_KEYS = ("kind", "from")
OPTIONAL_STEP_KEYS = ("resources",)


class PipelineError(ConfigError):
    """The pipeline definition cannot run; the message names the step and key to fix."""



def parse_steps(pipeline: Mapping[str, Any], kinds: Mapping[str, KindConfig]) -> list[StepSpec]:
    """The steps of a `pipeline:` section (a plain mapping), checked and in dependency order."""
    if not isinstance(pipeline, Mapping):
        raise PipelineError(f"pipeline: expected a mapping with keys {list(PIPELINE_KEYS)}, got {pipeline!r}")
    unknown = sorted(set(pipeline) - set(PIPELINE_KEYS))
    if unknown:
        raise PipelineError(f"pipeline: unknown key(s) {unknown}; expected {list(PIPELINE_KEYS)}")
    name = pipeline.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineError(f"pipeline.name: expected a non-empty string, got {name!r}")
    where = f"pipeline '{name}'"
    entries = pipeline.get("steps")
    if not isinstance(entries, Mapping) or not entries:
        raise PipelineError(f"{where}: pipeline.steps must be a non-empty mapping of step name -> step")

    steps = [_parse_step(where, str(step), entry, kinds) for step, entry in entries.items()]
    names = [s.name for s in steps]
    for step in steps:
        if step.source is not None and step.source not in names:
            raise PipelineError(f"{where}: step '{step.name}': from: '{step.source}' is not a step of the "
                                f"pipeline (steps: {names})")
        if step.source == step.name:
            raise PipelineError(f"{where}: step '{step.name}' starts from itself (from: {step.name})")
    return topological_order(where, steps)


def _parse_step(where: str, name: str, entry: Any, kinds: Mapping[str, KindConfig]) -> StepSpec:
    here = f"{where}: step '{name}'"
    if not isinstance(entry, Mapping):
        raise PipelineError(f"{here}: expected a mapping with keys kind, from, ..., got {entry!r}")
    kind = entry.get("kind")
    if kind is None:
        raise PipelineError(f"{here}: missing key 'kind' (one of {sorted(kinds)})")
    if kind not in kinds:
        raise PipelineError(f"{here}: unknown kind '{kind}' (known kinds: {sorted(kinds)})")
    if kinds[kind].module is None:
        raise PipelineError(f"{here}: step kind '{kind}' is not yet available: it lands with the "
                            f"{kinds[kind].available_with} issue")
    own_keys = tuple(kinds[kind].step_keys)
    required = COMMON_STEP_KEYS + own_keys
    allowed = required + OPTIONAL_STEP_KEYS
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise PipelineError(f"{here}: unknown key(s) {unknown} for kind '{kind}' (allowed: {list(allowed)})")
    missing = [key for key in required if key not in entry]
    if missing:
        raise PipelineError(f"{here}: missing key(s) {missing} (write `from: null` for a step without input)")
    source = entry["from"]
    if source is not None and not isinstance(source, str):
        raise PipelineError(f"{here}: from: expected a step name or null, got {source!r}")
    options = {key: entry[key] for key in own_keys}
    for key, value in options.items():
        if not isinstance(value, str) or not value:
            raise PipelineError(f"{here}: {key}: expected a config name, got {value!r}")
    try:
        resources = validated(ResourcesConfig, entry.get("resources") or {}, f"{here}: resources")
    except ConfigError as exc:
        raise PipelineError(str(exc)) from exc
    return StepSpec(name=name, kind=kind, source=source, options=options, resources=resources)


def topological_order(where: str, steps: list[StepSpec]) -> list[StepSpec]:
    """Steps with each after the step it starts from; the file's order among independent steps.
    A cycle raises PipelineError naming it."""
    by_name = {s.name: s for s in steps}
    for step in steps:  # each step has one `from`, so following it finds any cycle
        seen = [step.name]
        current = step.source
        while current is not None:
            if current in seen:
                cycle = seen[seen.index(current):] + [current]
                raise PipelineError(f"{where}: cycle in from: {' -> '.join(reversed(cycle))}")
            seen.append(current)
            current = by_name[current].source
    ordered: list[StepSpec] = []
    placed: set[str] = set()
    while len(ordered) < len(steps):
        for step in steps:
            if step.name not in placed and (step.source is None or step.source in placed):
                ordered.append(step)
                placed.add(step.name)
    return ordered


def descendants(steps: list[StepSpec], name: str) -> list[str]:
    """The steps that start, directly or not, from `name` (in the given order)."""
    found = {name}
    for step in steps:  # topological order: a step's source comes first
        if step.source in found:
            found.add(step.name)
    return [s.name for s in steps if s.name in found and s.name != name]
