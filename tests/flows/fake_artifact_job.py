"""A job of a kind that only the tests declare (tests/flows/conf/pipeline/kind_test.yaml): it "scores" the
checkpoint it starts from and publishes an artifact set, the way an evaluation step will.

    python -m tests.flows.fake_artifact_job --config step.yaml --result result.json

Reads the resolved step config (its `eval` section comes from the composed `eval` group, as the kind's
`config:` maps it), writes scores.json (the eval job's format) and predictions.jsonl (contents follow the input checkpoint's
digest and the settings), publishes them through storage.store with their manifest to output_uri, logs
the score into the MLflow run named in the config and writes result.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    started = time.time()
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    from storage.store import open_store

    store = open_store(cfg["storage"])
    source = store.read_manifest(cfg["input_checkpoint"])
    if source is None:
        print(f"no checkpoint at {cfg['input_checkpoint']}", flush=True)
        return 2
    seed = hashlib.sha256(f"{source.digest}:{json.dumps(cfg['eval'], sort_keys=True)}".encode()).digest()
    score = seed[0] / 255
    out = Path(cfg["work_dir"]) / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    rows = cfg["eval"]["generation"]["max_new_tokens"]
    benchmark = {"metric": "accuracy", "score": score, "n": rows, "ci95": None, "by": {}, "chance": 0.5}
    (out / "scores.json").write_text(json.dumps({"step": cfg["step"], "suite": cfg["eval"]["suite"],
                                                 "benchmarks": {"fake": benchmark}}), encoding="utf-8")
    (out / "predictions.jsonl").write_text("".join(
        json.dumps({"id": i, "prediction": seed[i % len(seed)] % 10}) + "\n" for i in range(rows)), encoding="utf-8")
    print(f"[{cfg['step']}] scored {cfg['input_checkpoint']} on {cfg['data']['split']}: accuracy {score:.4f}",
          flush=True)
    if cfg["tracking"]["run_id"]:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=cfg["tracking"]["tracking_uri"]).log_metric(cfg["tracking"]["run_id"], "accuracy",
                                                                               score)
    manifest = store.publish(out, cfg["output_uri"], run_id=cfg["tracking"]["run_id"], step_key=cfg["step_key"],
                             meta={"step": cfg["step"], "kind": "fake_scores"})
    result = {"status": "ok", "output_uri": cfg["output_uri"], "output_digest": manifest.digest, "tokens_seen": 0,
              "wall_time_s": time.time() - started, "metrics": {"accuracy": score}, "resumed": False}
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
