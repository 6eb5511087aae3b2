"""Reward test fixtures: the morl rewards config with a short hard math timeout, so the brace bomb
times out in seconds."""
from __future__ import annotations

import pytest

from rewards.config import RewardsConfig, load_rewards_config

# 3 s is far above a normal item (milliseconds) and above the slowest vector (MEGABYTE_FILLER: ~0.9 s
# on a loaded 2-core machine, so 1 s made its expected "unparseable" a "timeout" at times), and far below
# the brace bomb (~25 s).
TEST_OVERRIDES = ["math.item_timeout_s=3.0", "math.workers=2"]


def rewards_test_config(*extra: str) -> RewardsConfig:
    return load_rewards_config("morl", [*TEST_OVERRIDES, *extra])


@pytest.fixture(scope="module")
def rewards_cfg() -> RewardsConfig:
    return rewards_test_config("~routes.preference")


@pytest.fixture(scope="session")
def reward_model_dir(tiny_cfg, tokenizer, tmp_path_factory):
    """A tiny, untrained Bradley-Terry reward model saved as a folder (what preference.checkpoint names)."""
    from model.build import build_model
    from rewards.preference import BradleyTerryRewardModel, save_reward_model

    model = BradleyTerryRewardModel(build_model(tiny_cfg, tokenizer), head_seed=0)
    return save_reward_model(model, tokenizer, tmp_path_factory.mktemp("reward-model"))
