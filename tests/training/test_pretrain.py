"""The pretrain job through the launcher: learning, frozen parts, exact resume, early config errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conf import ConfigError
from model.checkpoint import load_hf_checkpoint
from model.parts import part_of
from storage.net import free_port
from tasks.launcher import JobFailed, run_job
from training.config import check_inputs
from training.pretrain import load_step_config

STAGES = ["stage1_projector_warmup", "stage2_vl_alignment", "stage3_multimodal", "stage4_long_context"]
PARTS_OF = {
    "stage1_projector_warmup": {"projector"},
    "stage2_vl_alignment": {"vit", "projector"},
    "stage3_multimodal": {"vit", "projector", "llm"},
    "stage4_long_context": {"vit", "projector", "llm"},
}


def _weights(uri: str) -> dict[str, torch.Tensor]:
    model, _, _ = load_hf_checkpoint(uri.removeprefix("file://"))
    return {name: param.detach() for name, param in model.named_parameters()}


def _run(launcher, config, tmp_path, name):
    return run_job(launcher, "training.pretrain", config, tmp_path / f"{name}.json", log_path=tmp_path / f"{name}.log")


@pytest.mark.slow
def test_two_deepspeed_processes_zero2_lower_the_loss(make_step, launcher, tmp_path):
    config = make_step("stage3_multimodal", "ddp", overrides=[
        "stages.stage3_multimodal.optim.lr=1e-3", "stages.stage3_multimodal.budget.steps=8",
        "stages.stage3_multimodal.zero_stage=2", "stages.stage3_multimodal.seq_len=512",
        "stages.stage3_multimodal.grad_accum=2"])
    result = _run(launcher(runner="deepspeed", nproc_per_node=2), config, tmp_path, "ddp")
    assert result.status == "ok" and result.metrics["steps"] == 8 and result.resumed is False
    # Each rank reports its own counts: 8 steps x 2 micro-batches x 1 row, rows of up to 512 tokens.
    ranks = result.raw["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["rows_consumed"] == 8 * 2 and 0 < r["label_tokens"] <= r["tokens"] <= 16 * 512, r
    assert sum(r["tokens"] for r in ranks) == result.tokens_seen
    assert result.metrics["probe_loss_end"] < result.metrics["probe_loss_start"] - 0.5
    # The logged loss is the token mean of the last step over both ranks' micro-batches, not rank 0's own.
    global_mean = sum(r["last_step_loss_sum"] for r in ranks) / sum(r["last_step_label_tokens"] for r in ranks)
    rank0_mean = ranks[0]["last_step_loss_sum"] / ranks[0]["last_step_label_tokens"]
    assert result.metrics["final_loss"] == pytest.approx(global_mean, rel=1e-9)
    assert abs(rank0_mean - global_mean) > 1e-4
    assert f"[ddp] step 8/8 loss {global_mean:.4f} " in (tmp_path / "ddp.log").read_text()


@pytest.mark.slow
def test_stage_chain_keeps_frozen_parts_bit_identical(make_step, launcher, tmp_path, tiny_cfg, tokenizer):
    from model.build import build_model

    start = build_model(tiny_cfg, tokenizer)  # what stage 1 builds from scratch
    previous_uri, previous = None, {name: param.detach() for name, param in start.named_parameters()}
    # Each stage under another ZeRO stage, so that every export path (incl. ZeRO-3 consolidation) is covered.
    zero = dict(zip(STAGES, [2, 3, 0, 1]))
    for stage in STAGES:
        config = make_step(stage, stage, input_checkpoint=previous_uri,
                           overrides=[f"stages.{stage}.zero_stage={zero[stage]}"])
        result = _run(launcher(), config, tmp_path, stage)
        weights = _weights(result.output_uri)
        assert set(weights) == set(previous), stage
        for name, value in weights.items():
            if part_of(name) in PARTS_OF[stage]:
                continue
            assert torch.equal(value, previous[name]), f"{stage}: frozen {name} changed"
        changed = {part_of(n) for n, v in weights.items() if not torch.equal(v, previous[n])}
        assert changed == PARTS_OF[stage], stage
        previous_uri, previous = result.output_uri, weights


def _wait_for_checkpoint(work, tag, proc, timeout=120):
    latest = work / "deepspeed" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest.exists() and latest.read_text().strip() == tag:
            return
        assert proc.poll() is None, "the job ended before it was killed"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {tag} within {timeout}s")


@pytest.mark.slow
def test_killed_job_resumes_to_the_same_state(make_step, launcher, tmp_path):
    overrides = ["stages.stage3_multimodal.budget.steps=6", "stages.stage3_multimodal.checkpoint_every=2",
                 "stages.stage3_multimodal.optim.lr=1e-3", "stages.stage3_multimodal.seq_len=512"]
    straight = _run(launcher(), make_step("stage3_multimodal", "straight", overrides=overrides), tmp_path, "straight")

    work = tmp_path / "work" / "killed"
    config = make_step("stage3_multimodal", "killed", overrides=overrides, work=work)
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    proc = subprocess.Popen([sys.executable, "-m", "training.pretrain", "--config", str(config), "--result",
                             str(tmp_path / "killed-1.json")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_checkpoint(work, "step4", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "killed-1.json").exists()

    resumed = _run(launcher(), config, tmp_path, "killed")
    assert "resumed from" in (tmp_path / "killed.log").read_text()
    assert resumed.resumed is True and straight.resumed is False
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 6
    assert resumed.tokens_seen == straight.tokens_seen
    assert resumed.raw["ranks"] == straight.raw["ranks"]   # the data stream continued where it stopped
    # The probe runs on the start weights before the resume: the same start loss as the uninterrupted run.
    assert resumed.metrics["probe_loss_start"] == straight.metrics["probe_loss_start"]
    assert resumed.metrics["final_loss"] == pytest.approx(straight.metrics["final_loss"], abs=1e-6)
    assert resumed.output_digest == straight.output_digest
    assert sorted(p.name for p in (work / "deepspeed").glob("step*")) == ["step2", "step4"]   # checkpoint_keep 2
    a, b = _weights(straight.output_uri), _weights(resumed.output_uri)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize(("override", "key"), [
    ("stages.stage1_projector_warmup.trainable=[projector,vision]", "trainable"),
    ("stages.stage1_projector_warmup.optim.lr=-1e-3", "optim.lr"),
    ("stages.stage1_projector_warmup.budget.steps=0", "budget"),
])
def test_bad_stage_config_fails_before_training_naming_the_key(make_step, override, key):
    config = make_step("stage1_projector_warmup", "bad", overrides=[override])
    with pytest.raises(ConfigError, match=rf"stage: {key}"):
        load_step_config(config)


def test_missing_input_checkpoint_fails_before_training(make_step, tmp_path, launcher):
    config = make_step("stage2_vl_alignment", "orphan", input_checkpoint=f"file://{tmp_path}/nowhere")
    with pytest.raises(ConfigError, match="input_checkpoint: no checkpoint at"):
        check_inputs(load_step_config(config))
    with pytest.raises(JobFailed, match="input_checkpoint: no checkpoint at") as failure:
        _run(launcher(), config, tmp_path, "orphan")
    assert "DeepSpeed" not in failure.value.tail or "deepspeed.initialize" not in failure.value.tail


def test_unknown_mixture_source_fails_naming_it(make_step, launcher, tmp_path):
    config = make_step("stage1_projector_warmup", "nosource",
                       overrides=["+stages.stage1_projector_warmup.mixture.video=1.0"])
    with pytest.raises(JobFailed, match=r"mixture names source\(s\) \['video'\]"):
        _run(launcher(), config, tmp_path, "nosource")


def test_a_probe_split_without_every_source_fails_naming_them(make_step, launcher, tmp_path):
    # The synthetic eval split holds prompts of the verifiable tasks only: no caption, no interleaved.
    config = make_step("stage3_multimodal", "noprobe", overrides=[
        "stages.stage3_multimodal.probe_split=eval", "stages.stage3_multimodal.mixture.caption=0.1",
        "stages.stage3_multimodal.mixture.interleaved=0.1"])
    with pytest.raises(JobFailed, match=r"stage.probe_split: split 'eval' .* source\(s\) \['caption', 'interleaved'\]"):
        _run(launcher(), config, tmp_path, "noprobe")
