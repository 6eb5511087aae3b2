"""The training engine in this process (DeepSpeed on gloo, rank 0 of 1): the global token mean makes
unequal micro-batches under accumulation equal one batch; checkpoints keep the last K, restore the RNG,
and refuse a module with a missing or an unexpected tensor."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conf import compose, validated
from data.collator import collate_packed
from storage.net import free_port
from training.config import StageConfig
from training.engine import CheckpointMismatch, TrainingEngine, checkpoint_tags, latest_tag
from training.losses import label_tokens

STAGE = "stage3_multimodal"


@pytest.fixture(scope="module", autouse=True)
def single_process_group():
    with pytest.MonkeyPatch.context() as env:
        for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                               MASTER_PORT=str(free_port())).items():
            env.setenv(key, value)
        yield


def stage_config(**values) -> StageConfig:
    overrides = [f"{'+' if key.startswith('+') else ''}stages.{STAGE}.{key.lstrip('+')}={value}"
                 for key, value in values.items()]
    return validated(StageConfig, compose(["pipeline=smoke", "stages.stage3_multimodal.precision=fp32",
                                           *overrides]).stages[STAGE], where="test")


def text_sample(encoder, name: str, answer_words: int):
    messages = [{"role": "user", "content": [{"type": "text", "text": f"Say {answer_words} words."}]},
                {"role": "assistant", "content": [{"type": "text", "text": " ".join(["word"] * answer_words)}]}]
    return encoder.encode(name, messages, [])


def engine_for(tiny_cfg, tokenizer, tmp_path, seed=0, **values) -> TrainingEngine:
    from model.build import build_model

    torch.manual_seed(seed)
    cfg = stage_config(**values)
    return TrainingEngine(build_model(tiny_cfg, tokenizer), cfg, total_steps=10, ckpt_dir=tmp_path / "ckpt",
                          name="test")


def grads_at_first_step(engine: TrainingEngine) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []

    def capture(optimizer, *_):
        if not seen:
            seen.extend(p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]
                        if p.grad is not None)

    engine.base_optimizer.register_step_pre_hook(capture)
    return seen


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_unequal_micro_batches_under_accumulation_give_the_gradient_of_one_batch(
        zero_stage, tiny_cfg, tokenizer, encoder, tmp_path):
    long, short = text_sample(encoder, "long", 60), text_sample(encoder, "short", 3)
    seq_len = len(long)
    one, two = [[long]], [[short]]
    micro = [collate_packed(rows, seq_len, tokenizer.pad_token_id) for rows in (one, two)]
    whole = collate_packed(one + two, seq_len, tokenizer.pad_token_id)
    assert label_tokens(micro[0]["labels"]) > 10 * label_tokens(micro[1]["labels"])   # really unequal

    accumulated = engine_for(tiny_cfg, tokenizer, tmp_path / "a", grad_accum=2, rows_per_step=1,
                             zero_stage=zero_stage)
    grads_a = grads_at_first_step(accumulated)
    stats_a = accumulated.train_step(micro, tokens=0, samples=0)
    single = engine_for(tiny_cfg, tokenizer, tmp_path / "b", grad_accum=1, rows_per_step=2, zero_stage=zero_stage)
    grads_b = grads_at_first_step(single)
    stats_b = single.train_step([whole], tokens=0, samples=0)

    assert stats_a.label_tokens == stats_b.label_tokens
    assert stats_a.loss == pytest.approx(stats_b.loss, abs=1e-6)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_checkpoints_keep_the_last_k_and_resume_restores_rng_and_counters(tiny_cfg, tokenizer, encoder, tmp_path):
    sample = text_sample(encoder, "s", 20)
    batch = collate_packed([[sample]], len(sample), tokenizer.pad_token_id)
    engine = engine_for(tiny_cfg, tokenizer, tmp_path, checkpoint_keep=2, grad_accum=1, zero_stage=2)
    for step in range(1, 5):
        engine.train_step([batch], tokens=len(sample), samples=1)
        engine.save_checkpoint({"seen": step * 10}, {"mine": step})
        expected = [f"step{s}" for s in range(max(1, step - 1), step + 1)]
        assert checkpoint_tags(tmp_path / "ckpt") == expected, step
    assert latest_tag(tmp_path / "ckpt") == "step4"
    after_save = draws()
    weights = {n: p.detach().clone() for n, p in engine.module.named_parameters()}

    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    fresh = engine_for(tiny_cfg, tokenizer, tmp_path, seed=7, checkpoint_keep=2, grad_accum=1, zero_stage=2)
    shared, own = fresh.resume()
    assert fresh.step == 4 and shared["seen"] == 40 and own == {"mine": 4}
    assert draws() == after_save
    for name, param in fresh.module.named_parameters():
        torch.testing.assert_close(param.detach(), weights[name], atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("tamper", ["missing", "unexpected"])
def test_resume_refuses_a_module_with_a_missing_or_unexpected_tensor(tamper, tiny_cfg, tokenizer, encoder, tmp_path):
    sample = text_sample(encoder, "s", 20)
    batch = collate_packed([[sample]], len(sample), tokenizer.pad_token_id)
    engine = engine_for(tiny_cfg, tokenizer, tmp_path, grad_accum=1, zero_stage=2)
    engine.train_step([batch], tokens=len(sample), samples=1)
    folder = engine.save_checkpoint({}, {})
    (states,) = folder.glob("mp_rank_*_model_states.pt")
    checkpoint = torch.load(states, weights_only=False)
    name = sorted(checkpoint["module"])[0]
    if tamper == "missing":
        del checkpoint["module"][name]
        expected = name
    else:
        checkpoint["module"]["model.extra_probe.weight"] = torch.zeros(2)
        expected = "model.extra_probe.weight"
    torch.save(checkpoint, states)

    fresh = engine_for(tiny_cfg, tokenizer, tmp_path, grad_accum=1, zero_stage=2)
    with pytest.raises(CheckpointMismatch, match=rf"(?s)does not match the model.*{expected}"):
        fresh.resume()


def test_lr_scale_gives_each_named_part_its_own_learning_rate(tiny_cfg, tokenizer, encoder, tmp_path):
    """optim.lr_scale: the vision tower and projector train at a tenth of lr, the LLM at lr, through
    DeepSpeed's ZeRO-2 optimizer and the schedule; the logged lr is the base lr."""
    engine = engine_for(tiny_cfg, tokenizer, tmp_path, **{"optim.lr": 1e-3, "zero_stage": 2,
                                                           "optim.lr_scale.vit": 0.1,
                                                           "optim.lr_scale.projector": 0.1})
    batch = collate_packed([[text_sample(encoder, "a", 3)]], 64, tokenizer.pad_token_id)
    engine.train_step([engine.to_device(batch)], tokens=64, samples=1)
    groups = {g["part"]: g["lr"] for g in engine.base_optimizer.param_groups}
    factor = engine.lr() / 1e-3   # the schedule's factor at this step
    assert groups == pytest.approx({"vit": 1e-4 * factor, "projector": 1e-4 * factor, "llm": 1e-3 * factor})
    assert len(engine.base_optimizer.param_groups) == 3   # (ZeRO-2 flattens each group's parameters)


def test_an_unknown_part_in_lr_scale_fails_naming_the_key():
    from conf import ConfigError

    with pytest.raises(ConfigError, match=r"optim.lr_scale.vision: not a model part"):
        stage_config(**{"+optim.lr_scale.vision": 0.1})
