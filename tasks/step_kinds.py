"""Step kinds as a registry: what conf/orchestration `kinds:` declares, applied to one step.

Each kind names its job module, how its step config is built from the composed config (`config:`
sections, e.g. `stage: stages.{stage}` for pretrain), the schema that validates it, what it outputs (a
checkpoint or a manifested artifact set, both keyed and cached alike), the data split it reads, where its
precision setting is and its default resources. The flow and the tasks only call the functions here, so
a new kind is a config entry plus its job module: no per-kind code.

No Prefect, MLflow or torch import at module level.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from conf import ConfigError, validated
from tasks.launcher import LauncherConfig, on_cpu, resolve_device, with_resources, world_size
from tasks.orchestration_config import KindConfig, ResourcesConfig

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class StepResources:
    """A step's resources as resolved at planning: its launcher and what of them changes its output."""

    launcher: LauncherConfig
    world_size: int
    device: str                   # cpu | cuda
    precision: str | None         # the kind's precision setting with `auto` resolved; None: it has none

    def key_material(self) -> dict[str, Any]:
        """What enters the step key (the precision enters through the step config, where it is written)."""
        return {"world_size": self.world_size, "device": self.device}


def section_path(kind: KindConfig, section: str, options: Mapping[str, Any], where: str) -> str:
    """The composed config's dotted path that step config `section` comes from, e.g. stages.stage1_..."""
    template = kind.config[section]
    missing = sorted(set(_PLACEHOLDER.findall(template)) - set(options))
    if missing:
        raise ConfigError(f"{where}: config.{section}: '{template}' names step key(s) {missing} the kind's "
                          f"step_keys do not have")
    return _PLACEHOLDER.sub(lambda m: str(options[m.group(1)]), template)


def check_sections(kind: KindConfig, composed: Mapping[str, Any], options: Mapping[str, Any], where: str) -> None:
    """Every section the step's config is built from exists: a step entry naming a stage (or any config)
    the composed config does not have fails here, naming the key."""
    for section, template in kind.config.items():
        section_path(kind, section, options, where)
        node: Any = composed
        done: list[str] = []
        for segment in template.split("."):
            placeholder = _PLACEHOLDER.fullmatch(segment)
            name = str(options[placeholder.group(1)]) if placeholder else _PLACEHOLDER.sub(
                lambda m: str(options[m.group(1)]), segment)
            if not isinstance(node, Mapping) or name not in node:
                defined = sorted(node) if isinstance(node, Mapping) else []
                inside = ".".join(done) or "the composed config"
                if placeholder:
                    raise ConfigError(f"{where}: {placeholder.group(1)} '{name}' is not in `{inside}` "
                                      f"(defined: {defined})")
                raise ConfigError(f"{where}: the kind's config.{section} reads `{template}`, but `{inside}` "
                                  f"has no '{name}' (defined: {defined})")
            node = node[name]
            done.append(name)


def build_step_config(kind: KindConfig, composed: Mapping[str, Any], options: Mapping[str, Any],
                      run_fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The step's resolved config: `run_fields` (step, paths, tracking, ...), the kind's data split and
    its `config:` sections from `composed`, validated and normalised by the kind's schema."""
    raw: dict[str, Any] = dict(run_fields)
    for section in kind.config:
        raw[section] = _lookup(composed, section_path(kind, section, options, where))
    if kind.split is not None:
        raw["data"] = {"uri": raw.pop("data_uri"), "split": kind.split}
    else:
        raw.pop("data_uri", None)
    if kind.schema is None:
        return raw
    typed = validated(schema_class(kind.schema), raw, where)
    return OmegaConf.to_container(OmegaConf.structured(typed))  # type: ignore[return-value]


def schema_class(spec: str) -> type:
    """"module:Class" -> the class (a typed config dataclass)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"schema '{spec}': cannot import it: {exc}") from exc


def resolve_resources(kind: KindConfig, step_resources: ResourcesConfig, base: LauncherConfig,
                      where: str) -> tuple[LauncherConfig, int, str]:
    """(the step's launcher, its world size, its device): the kind's default resources with the step
    entry's on top, over the composed launcher; `where` names the step entry's resources."""
    wanted = kind.resources.merged(step_resources)
    assert wanted.device is not None  # KindConfig.check requires a default device
    launcher = with_resources(base, launcher=wanted.launcher, runner=wanted.runner,
                              nproc_per_node=wanted.nproc_per_node, nodes=wanted.nodes, where=where)
    device = resolve_device(launcher, wanted.device, where)
    if device == "cpu":
        launcher = on_cpu(launcher)
    return launcher, world_size(launcher, where), device


def resolved_precision(kind: KindConfig, step_config: Mapping[str, Any], device: str) -> str | None:
    """The kind's precision setting in `step_config` with `auto` replaced by the device's precision."""
    if kind.precision is None:
        return None
    value = _lookup(step_config, kind.precision.path)
    return kind.precision.auto[device] if value == "auto" else value


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node
