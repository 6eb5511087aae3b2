"""Typed schema of the `rewards:` section of conf/rl/*.yaml; the YAML holds every value.

`load_rewards_config("morl", ["math.item_timeout_s=0.5", "~routes.preference"])` reads the
`rewards:` section of conf/rl/morl.yaml, applies dot-list overrides (`~key` deletes a key) and
validates it: an unknown key, a wrong type, an out-of-range value or a route to an unknown function
fails here, naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from conf import ConfigError, load_group, validated

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _check_buckets(buckets: list[float], where: str) -> None:
    _require(len(buckets) > 0 and all(b > 0 for b in buckets), where, "buckets must be positive and non-empty")
    _require(all(a < b for a, b in zip(buckets, buckets[1:])), where, "buckets must increase strictly")


@dataclass
class RouteConfig:
    """A task's reward: the function's name (rewards.functions.FUNCTION_NAMES) and a weight in (0, 1]
    that scales its reward (rewards stay in [0, 1])."""

    fn: str = MISSING
    weight: float = MISSING

    def check(self, where: str) -> None:
        from rewards.functions import FUNCTION_NAMES

        _require(self.fn in FUNCTION_NAMES, f"{where}.fn", f"unknown reward function '{self.fn}'; "
                 f"choices: {sorted(FUNCTION_NAMES)}")
        _require(0.0 < self.weight <= 1.0, f"{where}.weight", f"must be in (0, 1], got {self.weight}")


@dataclass
class MathConfig:
    """Math-Verify worker processes. item_timeout_s is the hard limit (the worker is killed and
    replaced); parsing/verify_timeout_s are Math-Verify's own alarms inside a worker (whole seconds,
    null to disable)."""

    workers: int = MISSING
    chunk_items: int = MISSING
    item_timeout_s: float = MISSING
    startup_timeout_s: float = MISSING
    parsing_timeout_s: int | None = MISSING
    verify_timeout_s: int | None = MISSING
    gold_cache_size: int = MISSING

    def check(self, where: str) -> None:
        _require(self.workers >= 1, f"{where}.workers", f"must be >= 1, got {self.workers}")
        _require(self.chunk_items >= 1, f"{where}.chunk_items", f"must be >= 1, got {self.chunk_items}")
        _require(self.item_timeout_s > 0, f"{where}.item_timeout_s", "must be > 0")
        _require(self.startup_timeout_s > 0, f"{where}.startup_timeout_s", "must be > 0")
        for name in ("parsing_timeout_s", "verify_timeout_s"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"{where}.{name}", "must be null or >= 1 (whole seconds)")
        _require(self.gold_cache_size >= 0, f"{where}.gold_cache_size", "must be >= 0")


@dataclass
class ChartConfig:
    relative_tolerance: float = MISSING

    def check(self, where: str) -> None:
        _require(self.relative_tolerance >= 0, f"{where}.relative_tolerance", "must be >= 0")


@dataclass
class ServiceConfig:
    """The HTTP service. The bearer token is read from the environment variable auth_token_env;
    when that variable is unset or empty, no token is required. torch_threads applies to the service
    process (the preference model) and is set only when torch is loaded for it."""

    host: str = MISSING
    port: int = MISSING
    max_body_bytes: int = MISSING
    max_items: int = MISSING
    auth_token_env: str = MISSING
    access_log: bool = MISSING
    log_level: str = MISSING
    torch_threads: int = MISSING
    item_latency_buckets_s: list[float] = MISSING
    request_latency_buckets_s: list[float] = MISSING

    def check(self, where: str) -> None:
        _require(0 <= self.port <= 65535, f"{where}.port", f"must be in [0, 65535], got {self.port}")
        _require(self.max_body_bytes > 0, f"{where}.max_body_bytes", "must be > 0")
        _require(self.max_items > 0, f"{where}.max_items", "must be > 0")
        _require(bool(self.auth_token_env), f"{where}.auth_token_env", "must name an environment variable")
        _require(self.log_level in LOG_LEVELS, f"{where}.log_level", f"must be one of {LOG_LEVELS}")
        _require(self.torch_threads >= 1, f"{where}.torch_threads", "must be >= 1")
        _check_buckets(self.item_latency_buckets_s, f"{where}.item_latency_buckets_s")
        _check_buckets(self.request_latency_buckets_s, f"{where}.request_latency_buckets_s")


@dataclass
class ClientConfig:
    """rewards.client: each attempt waits up to request_timeout_s; failed attempts (connection errors,
    5xx, 429) are retried up to `retries` times after backoff_s * 2**k (capped at backoff_max_s); the
    whole call gives up after deadline_s. Batches are split into requests of at most batch_items."""

    request_timeout_s: float = MISSING
    retries: int = MISSING
    backoff_s: float = MISSING
    backoff_max_s: float = MISSING
    deadline_s: float = MISSING
    batch_items: int = MISSING
    max_connections: int = MISSING

    def check(self, where: str) -> None:
        _require(self.request_timeout_s > 0, f"{where}.request_timeout_s", "must be > 0")
        _require(self.retries >= 0, f"{where}.retries", "must be >= 0")
        _require(0 <= self.backoff_s <= self.backoff_max_s, f"{where}.backoff_s", "must be in [0, backoff_max_s]")
        _require(self.deadline_s > 0, f"{where}.deadline_s", "must be > 0")
        _require(self.batch_items >= 1, f"{where}.batch_items", "must be >= 1")
        _require(self.max_connections >= 1, f"{where}.max_connections", "must be >= 1")


@dataclass
class PreferenceConfig:
    """The Bradley-Terry reward model: a folder written by rewards.preference.save_reward_model, or
    (checkpoint: null) a fresh one built from conf/model/<model>.yaml, its head initialised with
    init_seed and its tokenizer cached under runs_dir."""

    checkpoint: str | None = MISSING
    model: str = MISSING
    init_seed: int = MISSING
    runs_dir: str = MISSING
    device: str = MISSING
    max_length: int = MISSING
    batch_size: int = MISSING

    def check(self, where: str) -> None:
        _require(self.max_length >= 2, f"{where}.max_length", "must be >= 2")
        _require(self.batch_size >= 1, f"{where}.batch_size", "must be >= 1")


@dataclass
class RewardsConfig:
    routes: dict[str, RouteConfig] = MISSING
    math: MathConfig = MISSING
    chart: ChartConfig = MISSING
    service: ServiceConfig = MISSING
    client: ClientConfig = MISSING
    preference: PreferenceConfig = MISSING

    def check(self, where: str) -> None:
        _require(len(self.routes) > 0, f"{where}.routes", "must map at least one task")
        for task, route in self.routes.items():
            route.check(f"{where}.routes.{task}")
        self.math.check(f"{where}.math")
        self.chart.check(f"{where}.chart")
        self.service.check(f"{where}.service")
        self.client.check(f"{where}.client")
        _require(self.client.batch_items <= self.service.max_items, f"{where}.client.batch_items",
                 f"must be <= service.max_items ({self.service.max_items})")
        self.preference.check(f"{where}.preference")


def rewards_config(cfg: Any, where: str = "rewards") -> RewardsConfig:
    """Validate a `rewards:` section (a DictConfig or plain dict), or pass a RewardsConfig through."""
    if isinstance(cfg, RewardsConfig):
        return cfg
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{where}: expected a mapping, got {type(cfg).__name__}")
    return validated(RewardsConfig, cfg, where)


def load_rewards_config(name: str = "morl", overrides: list[str] | None = None) -> RewardsConfig:
    """conf/rl/<name>.yaml's `rewards:` section with OmegaConf dot-list overrides applied."""
    cfg = load_group("rl", name)
    if "rewards" not in cfg:
        raise ConfigError(f"conf/rl/{name}.yaml has no 'rewards:' section")
    section = cfg.rewards
    for override in overrides or []:
        if override.startswith("~"):
            parent_path, _, leaf = override[1:].rpartition(".")
            parent = OmegaConf.select(section, parent_path) if parent_path else section
            if not isinstance(parent, DictConfig) or leaf not in parent:
                raise ConfigError(f"rewards: cannot delete '{override[1:]}': no such key")
            del parent[leaf]
            continue
        try:
            section = OmegaConf.merge(section, OmegaConf.from_dotlist([override]))
        except Exception as exc:  # OmegaConf raises several error types for a bad dot-list
            raise ConfigError(f"rewards: bad override '{override}': {exc}") from exc
    return rewards_config(section, where=f"conf/rl/{name}.yaml:rewards")
