"""The synthetic data set's own answers earn full reward: data targets and reward parsers agree."""
from __future__ import annotations

from collections import Counter

import pytest

from rewards.result import RewardItem
from rewards.router import RewardRouter


@pytest.fixture(scope="module")
def answered_samples(tmp_path_factory):
    from data.config import load_data_config, load_resize_spec
    from data.reader import SampleReader
    from data.synth import generate

    out = tmp_path_factory.mktemp("synthetic") / "data"
    cfg = load_data_config("synthetic")
    generate(out, 400, 3, cfg, load_resize_spec(cfg.model))
    return [r.sample for r in SampleReader(str(out), split="pretrain", load_images=False)]


def test_every_routed_task_scores_its_reference_answer_1(answered_samples, rewards_cfg):
    with RewardRouter.from_config(rewards_cfg) as router:
        items = [RewardItem(id=s.id, task=s.task, response=s.response_text(), target=s.target)
                 for s in answered_samples if s.task in rewards_cfg.routes and s.target is not None]
        results = router.score(items)
    tasks = Counter(item.task for item in items)
    assert {"math", "reasoning", "grounding", "point", "counting", "ocr", "chart", "gui", "vqa"} <= set(tasks)
    wrong = [(i.task, i.response[-80:], i.target, r.reason) for i, r in zip(items, results) if r.reward != 1.0]
    assert not wrong, wrong[:5]
