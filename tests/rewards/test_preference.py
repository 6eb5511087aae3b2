"""The Bradley-Terry reward model scorer on the tiny profile."""
from __future__ import annotations

import pytest
import torch

from rewards.preference import PreferenceScorer, bradley_terry_loss, load_reward_model, save_reward_model
from rewards.result import RewardItem
from rewards.router import RewardRouter
from tests.rewards.conftest import rewards_test_config
from tests.rewards.vectors import MEGABYTE_FILLER

PAIRS = [("What colour is the circle?", "Red."), ("Count the squares.", "There are 3 squares."),
         ("你好", "🐱 unicode réponse"), ("", "")]


def _scorer(loaded, **kwargs):
    return PreferenceScorer(loaded.model, loaded.tokenizer, **kwargs)


@pytest.fixture(scope="module")
def scorer(reward_model_dir):
    return _scorer(load_reward_model(reward_model_dir), max_length=64, batch_size=3, device="cpu")


def test_rewards_are_probabilities_and_batching_does_not_change_them(scorer):
    together = scorer.score(PAIRS)
    alone = [scorer.score([pair])[0] for pair in PAIRS]
    assert all(0.0 < r < 1.0 for r in together)
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(round(r, 6) for r in together)) > 1  # the score depends on the text


def test_save_and_load_round_trip(scorer, tmp_path):
    folder = save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "copy")
    again = _scorer(load_reward_model(folder), max_length=64, batch_size=3, device="cpu")
    assert again.score(PAIRS) == scorer.score(PAIRS)


def test_long_inputs_keep_their_end(scorer):
    tail = "the final words of a long answer " * 20  # far more than max_length tokens
    first, second = scorer.score([("prompt one", tail), ("a different, longer prompt two", tail)])
    assert first == pytest.approx(second, abs=1e-6)
    assert 0.0 < scorer.score([("prompt", MEGABYTE_FILLER)])[0] < 1.0


def test_not_a_reward_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward_model.json"):
        load_reward_model(tmp_path)


def test_bradley_terry_loss_matches_its_definition_and_trains_the_head(scorer):
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    expected = -(torch.log(torch.sigmoid(chosen - rejected))).mean()
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected.item(), rel=1e-6)

    model = scorer.model
    batch = scorer.tokenizer(scorer._texts([PAIRS[0], PAIRS[1]]), padding=True, return_tensors="pt")
    optimizer = torch.optim.SGD(model.score_head.parameters(), lr=1.0)
    original = {k: v.clone() for k, v in model.score_head.state_dict().items()}
    with torch.no_grad():
        before = model(batch["input_ids"], batch["attention_mask"])
    for _ in range(5):
        scores = model(batch["input_ids"], batch["attention_mask"])
        loss = bradley_terry_loss(scores[:1], scores[1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(batch["input_ids"], batch["attention_mask"])
    model.score_head.load_state_dict(original)
    assert (after[0] - after[1]) > (before[0] - before[1])


def test_router_scores_preference_items(reward_model_dir):
    cfg = rewards_test_config(f"preference.checkpoint={reward_model_dir}", "routes.preference.weight=0.5")
    with RewardRouter.from_config(cfg, tasks=["preference"]) as router:
        results = router.score([RewardItem(1, "preference", "Red.", {"prompt": "What colour?"}),
                                RewardItem(2, "preference", "Red.", {"question": "What colour?"}),
                                RewardItem(3, "counting", "2", {"count": 2})])
    assert 0.0 < results[0].reward < 0.5 and results[0].reason == "ok"
    assert (results[1].reward, results[1].reason) == (0.0, "error")
    assert results[2].reward == 1.0


def test_fresh_model_from_config(runs_dir, tokenizer):
    # checkpoint null: built from conf/model/tiny.yaml (the tokenizer comes from the shared runs/ cache)
    cfg = rewards_test_config(f"preference.runs_dir={runs_dir}", "preference.max_length=32")
    fresh = PreferenceScorer.from_config(cfg.preference)
    assert 0.0 < fresh.score([("q", "a")])[0] < 1.0


def test_the_margin_shifts_the_loss_by_its_definition():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    expected = -(torch.log(torch.sigmoid(chosen - rejected - 0.5))).mean()
    assert bradley_terry_loss(chosen, rejected, margin=0.5).item() == pytest.approx(expected.item(), rel=1e-6)
    assert bradley_terry_loss(chosen, rejected, margin=0.5) > bradley_terry_loss(chosen, rejected)


def test_a_multimodal_folder_keeps_its_image_processor_and_modality(scorer, tiny_cfg, tmp_path):
    from model.processor import build_image_processor

    with pytest.raises(ValueError, match="image_processor"):
        save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "none", modality="multimodal")
    with pytest.raises(ValueError, match="modality"):
        save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "bad", modality="audio")
    processor = build_image_processor(tiny_cfg.processor)
    folder = save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "mm", modality="multimodal",
                               image_processor=processor)
    loaded = load_reward_model(folder)
    assert loaded.modality == "multimodal"
    assert loaded.image_processor.to_dict() == processor.to_dict()
    text_only = load_reward_model(save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "text"))
    assert (text_only.modality, text_only.image_processor) == ("text", None)


def test_a_consolidated_state_dict_is_what_gets_saved(scorer, tmp_path):
    state = {k: v.clone() for k, v in scorer.model.state_dict().items()}
    state["score_head.bias"] = torch.full_like(state["score_head.bias"], 0.25)
    loaded = load_reward_model(save_reward_model(scorer.model, scorer.tokenizer, tmp_path / "sd", state_dict=state))
    assert loaded.model.score_head.bias.item() == 0.25
    assert torch.equal(loaded.model.vlm.lm_head.weight, scorer.model.vlm.lm_head.weight)


def test_a_folder_with_a_bad_meta_names_the_file(tmp_path):
    (tmp_path / "reward_model.json").write_text('{"kind": "bradley-terry", "modality": "audio"}')
    with pytest.raises(ValueError, match="reward_model.json: modality"):
        load_reward_model(tmp_path)
