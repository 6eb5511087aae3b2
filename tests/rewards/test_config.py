from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conf import ConfigError, load_group
from rewards.config import RewardsConfig, load_rewards_config, rewards_config
from rewards.router import RewardRouter

DATA_TASKS_WITH_REWARDS = ["vqa", "ocr", "grounding", "point", "counting", "math", "chart", "gui", "reasoning"]


def _section(**changes):
    cfg = load_group("rl", "morl").rewards
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def test_morl_loads_and_routes_every_verifiable_task():
    cfg = load_rewards_config("morl")
    assert isinstance(cfg, RewardsConfig)
    assert set(DATA_TASKS_WITH_REWARDS) | {"temporal", "choice", "preference"} <= set(cfg.routes)
    assert cfg.routes["reasoning"].fn == "math"
    assert cfg.service.host == "127.0.0.1" and cfg.service.port == 8300


def test_rewards_section_is_self_contained():
    assert set(load_group("rl", "morl").rewards) == {"routes", "math", "chart", "service", "client", "preference"}


def test_unknown_key_is_named():
    cfg = _section()
    cfg.math["wrokers"] = 3
    with pytest.raises(ConfigError, match="wrokers"):
        rewards_config(cfg)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="math.workers"):
        load_rewards_config("morl", ["math.workers=two"])


@pytest.mark.parametrize("override,key", [
    ("routes.math.fn=mathh", "routes.math.fn"),
    ("routes.ocr.weight=1.5", "routes.ocr.weight"),
    ("routes.ocr.weight=0", "routes.ocr.weight"),
    ("math.workers=0", "math.workers"),
    ("math.item_timeout_s=0", "math.item_timeout_s"),
    ("math.parsing_timeout_s=0", "math.parsing_timeout_s"),
    ("chart.relative_tolerance=-0.1", "chart.relative_tolerance"),
    ("service.port=70000", "service.port"),
    ("service.item_latency_buckets_s=[0.1,0.01]", "service.item_latency_buckets_s"),
    ("client.batch_items=5000", "client.batch_items"),
    ("client.backoff_s=10", "client.backoff_s"),
])
def test_out_of_range_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_rewards_config("morl", [override])


def test_missing_value_fails():
    cfg = _section()
    del cfg.chart["relative_tolerance"]
    with pytest.raises(ConfigError, match="relative_tolerance"):
        rewards_config(cfg)


def test_a_mixture_task_without_route_fails_at_load():
    with pytest.raises(ConfigError, match="caption"):
        RewardRouter.from_config(load_rewards_config("morl"), tasks=["math", "caption"])
    with pytest.raises(ConfigError, match="ocr"):
        RewardRouter.from_config(load_rewards_config("morl", ["~routes.ocr"]), tasks=DATA_TASKS_WITH_REWARDS)


def test_adding_a_route_is_a_config_change():
    cfg = load_rewards_config("morl", ["routes.caption.fn=preference", "routes.caption.weight=0.5"])
    router = RewardRouter.from_config(cfg, tasks=["caption", *DATA_TASKS_WITH_REWARDS])
    assert router.routes["caption"].fn == "preference" and router.routes["caption"].weight == 0.5
    router.close()


def test_from_config_accepts_a_plain_dict():
    plain = OmegaConf.to_container(load_group("rl", "morl").rewards, resolve=True)
    router = RewardRouter.from_config(plain, tasks=["math"])
    assert "math" in router.tasks
    router.close()


def test_deleting_an_unknown_key_fails():
    with pytest.raises(ConfigError, match="nope"):
        load_rewards_config("morl", ["~routes.nope"])
