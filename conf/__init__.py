"""Hydra configuration: the YAML groups beside this file hold every number of the project.

`compose()` builds the whole config with Hydra's compose API (no working-directory change, no global
state left behind). `load_group()` reads a single group file (for a job or a service that needs just
its own section). `validated()` checks a section against its typed dataclass, so a typo or a wrong
type fails with the key's name before any job starts.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONF_DIR.parent

T = TypeVar("T")

_HYDRA_LOCK = threading.Lock()


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key or file to fix."""


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides, e.g. ["model=tiny", "seed=3"]."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    # Hydra keeps global state; it is not thread-safe, so composition is serialised.
    with _HYDRA_LOCK:
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
        except HydraException as exc:
            raise ConfigError(f"cannot compose config with overrides {overrides}: {exc}") from exc
    return cfg


def load_group(group: str, name: str) -> DictConfig:
    """Read conf/<group>/<name>.yaml on its own (without the defaults list of the root config)."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ConfigError(f"no config {group}={name} ({path}); choices: {choices}")
    cfg = OmegaConf.load(path)
    if "defaults" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "defaults"])
    return cfg


def validated(schema: type[T], cfg: Any, where: str = "config") -> T:
    """Merge `cfg` onto the dataclass `schema` and return the typed object.

    Unknown keys, wrong types and missing required values raise ConfigError naming the full key.
    """
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(f"{where}: invalid key '{key}': {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    check = getattr(obj, "check", None)
    if callable(check):
        check(where)
    return obj  # type: ignore[return-value]
