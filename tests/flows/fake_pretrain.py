"""A stand-in for training.pretrain with the same contract and no torch, for the flow's fast tests.

    python -m tests.flows.fake_pretrain --config step.yaml --result result.json

Reads the resolved step config, "trains" stage.budget.steps steps (FAKE_STEP_SECONDS each, default 0),
printing the pretrain job's progress lines and logging a metric per step into the MLflow run named in
the config; saves a resume point in <work_dir>/deepspeed/latest every stage.checkpoint_every steps and
resumes from it ("resumed from ...", and `resumed: true` in result.json) when started again; publishes a
checkpoint (one file whose content depends on the config and the input checkpoint) to output_uri and
writes result.json. Started as several ranks (RANK/WORLD_SIZE set by a runner), every rank "trains" and
rank 0 alone publishes and writes the result; the checkpoint records the world size. With
FAKE_FAIL_STEP set to a step name, that step fails with a traceback-like last line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import yaml


def say(line: str) -> None:
    """One write per line: under `python -u` print() writes the text and its newline separately, and ranks
    share the runner's output pipe, so their lines could interleave mid-line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--local_rank", type=int, default=None)
    args = parser.parse_args()
    started = time.time()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    if os.environ.get("FAKE_FAIL_STEP") == cfg["step"]:
        say("Traceback (most recent call last):")
        say("ValueError: fake failure of step " + cfg["step"])
        return 3
    total = int(cfg["stage"]["budget"]["steps"])
    every = int(cfg["stage"]["checkpoint_every"])
    step_seconds = float(os.environ.get("FAKE_STEP_SECONDS", "0"))
    ckpt = Path(cfg["work_dir"]) / "deepspeed"
    ckpt.mkdir(parents=True, exist_ok=True)
    start = 0
    resumed = (ckpt / "latest").exists()
    if resumed:
        start = int((ckpt / "latest").read_text())
        say(f"resumed from {ckpt}/step{start} at step {start}/{total}")
    client = None
    if cfg["tracking"]["run_id"] and rank == 0:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=cfg["tracking"]["tracking_uri"])
    for step in range(start, total):
        time.sleep(step_seconds)
        loss = 1.0 / (step + 1)
        say(f"[{cfg['step']}] step {step + 1}/{total} loss {loss:.4f} tokens/s 1000 ETA {0:.0f}s")
        if client is not None:
            client.log_metric(cfg["tracking"]["run_id"], "loss", loss, step=step + 1)
        if rank == 0 and (step + 1) % every == 0 and step + 1 < total:
            (ckpt / "latest").write_text(str(step + 1))
    if rank != 0:
        return 0

    from storage.store import open_store

    export = Path(cfg["work_dir"]) / "export"
    export.mkdir(parents=True, exist_ok=True)
    material = json.dumps({"stage": cfg["stage"], "input": cfg["input_checkpoint"], "data": cfg["data"]["split"],
                           "world_size": world}, sort_keys=True)
    (export / "weights.txt").write_text(hashlib.sha256(material.encode()).hexdigest())
    manifest = open_store(cfg["storage"]).publish(export, cfg["output_uri"], run_id=cfg["tracking"]["run_id"],
                                                  step_key=cfg["step_key"], meta={"step": cfg["step"]})
    result = {"status": "ok", "output_uri": cfg["output_uri"], "output_digest": manifest.digest,
              "tokens_seen": 1000 * (total - start), "wall_time_s": time.time() - started,
              "metrics": {"final_loss": 1.0 / total, "steps": float(total), "world_size": float(world)},
              "resumed": resumed}
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
