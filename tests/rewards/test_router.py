from __future__ import annotations

import subprocess
import sys

import pytest

from rewards.result import RewardItem
from rewards.router import RewardRouter, reason_counts
from tests.rewards.conftest import rewards_test_config
from tests.rewards.vectors import BAD_TARGETS, MATH_VECTORS, VECTORS


@pytest.fixture(scope="module")
def router(rewards_cfg):
    with RewardRouter.from_config(rewards_cfg) as r:
        yield r


def test_every_vector_through_the_router_in_order(router):
    vectors = VECTORS + MATH_VECTORS
    # interleave tasks so that grouping by task must restore the original order
    order = list(range(0, len(vectors), 2)) + list(range(1, len(vectors), 2))
    items = [RewardItem(f"id-{i}", vectors[i][0], vectors[i][1], vectors[i][2]) for i in order]
    results = router.score(items)
    assert [r.id for r in results] == [item.id for item in items]
    for i, result in zip(order, results):
        task, response, target, reward, reason = vectors[i]
        assert (result.reason, result.reward) == (reason, pytest.approx(reward, abs=1e-12)), (task, response[:40])
        assert result.latency_ms >= 0.0


def test_bad_items_score_zero_with_error_and_never_fail_the_batch(router):
    items = [RewardItem(i, task, response, target) for i, (task, response, target) in enumerate(BAD_TARGETS)]
    items += [
        RewardItem("unknown-task", "caption", "a cat", {}),
        RewardItem("response-not-str", "grounding", None, {"box": [0, 0, 1, 1]}),  # type: ignore[arg-type]
        RewardItem("math-no-answer", "math", "\\boxed{1}", {"solution": 1}),
        RewardItem("math-bool-answer", "math", "\\boxed{1}", {"answer": True}),
        RewardItem("math-unparseable-gold", "math", "\\boxed{1}", {"answer": "  "}),
        RewardItem("good", "counting", "4", {"count": 4}),
    ]
    results = router.score(items)
    assert len(results) == len(items)
    assert [r.reason for r in results[:-1]] == ["error"] * (len(items) - 1)
    assert all(r.reward == 0.0 for r in results[:-1])
    assert (results[-1].reward, results[-1].reason) == (1.0, "ok")


def test_weight_scales_the_reward():
    with RewardRouter.from_config(rewards_test_config("~routes.preference", "routes.grounding.weight=0.5",
                                                      "routes.math.weight=0.25")) as router:
        results = router.score([RewardItem(1, "grounding", "[0, 0, 10, 10]", {"box": [0, 0, 10, 10]}),
                                RewardItem(2, "math", "\\boxed{3}", {"answer": "3"})])
    assert [r.reward for r in results] == [0.5, 0.25]


def test_empty_batch(router):
    assert router.score([]) == []


def test_reason_counts(router):
    items = [RewardItem(1, "counting", "3", {"count": 3}), RewardItem(2, "counting", "", {"count": 3}),
             RewardItem(3, "ocr", "x", {"answer": ""})]
    assert reason_counts(items, router.score(items)) == {"counting": {"ok": 1, "unparseable": 1},
                                                         "ocr": {"error": 1}}


def test_rewards_modules_do_not_import_torch():
    code = ("import sys, rewards.router, rewards.service, rewards.client, rewards.math_worker; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
