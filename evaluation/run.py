"""The eval job: generate and score one checkpoint on its benchmark suite.

    python -m evaluation.run --config step.yaml --result result.json

In: one resolved step config (evaluation.config.StepConfig): the checkpoint to evaluate (a store URI), the
data set whose eval split the synthetic suite is written from, the `eval:` section (suite, public benchmark
folders, items per benchmark, generation, gates) and the `scoring:` rules.

1. The suite: `synthetic` becomes one public-layout folder per task of the data set's eval split
   (evaluation.synthetic_suite, read by the synthetic_<task> adapters); a public benchmark is read from its
   folder (an s3:// prefix is downloaded once per node). Each adapter loads its items; with
   `eval.max_samples` only the first items (for grouped items, e.g. MMBench's circular copies, the first
   groups, so a question is never cut from its copies).
2. Generation: evaluation.generate.Generator on the checkpoint (batched greedy, KV cache, the recipe's
   thinking on/off prompt form), one benchmark after the other (small ones joined into one call, so they
   share batches), a progress line for each with the rates of its call.
3. Scoring by the adapter's official rule; per benchmark the metric, score, n, 95% interval, `by` and the
   chance level when the adapter states one.
Out, in the work folder and published as the step's artifact set (manifest last): predictions.jsonl (id,
benchmark, prompt, response, parsed, score, new_tokens per item) and scores.json. Into the step's MLflow
run: each benchmark's score as a metric (`score/<benchmark>`, with `score/<benchmark>/ci95_lo|hi`), n and
chance as params, the predictions as an MLflow table (predictions_table.json) and both files as artifacts
(eval/), and the system metrics (telemetry). result.json: status, output_uri, output_digest, resumed
(false: an evaluation starts over), tokens_seen (generated tokens), wall_time_s, metrics (score per
benchmark).

Quality gate: when the step has minimum scores (`eval.gates.<step>`) and a benchmark falls short, the job
still publishes and records everything above, then exits 1 with result status `failed` and one message
listing each failing benchmark, its score and its minimum (also in the manifest's meta, `failure`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

PROCESS_STARTED = time.time()  # the job's wall time (result.json) counts from here: imports included

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from conf import ConfigError, validated  # noqa: E402
from evaluation.benchmarks import SYNTHETIC_PREFIX, benchmark  # noqa: E402
from evaluation.benchmarks.base import Benchmark, Item  # noqa: E402
from evaluation.config import SYNTHETIC_SUITE, StepConfig  # noqa: E402
from evaluation.gates import check_gate, gate_message  # noqa: E402
from evaluation.score import aggregate_report  # noqa: E402
from storage.durable import write_atomically  # noqa: E402
from telemetry.system_metrics import system_metrics  # noqa: E402

log = logging.getLogger("mimovl.eval")

PREDICTIONS_FILE = "predictions.jsonl"
SCORES_FILE = "scores.json"
TABLE_FILE = "predictions_table.json"   # the MLflow table of the predictions
ARTIFACTS_DIR = "eval"                  # the run's artifact folder holding both files
STATUS_OK, STATUS_FAILED = "ok", "failed"


def load_step_config(path: str | Path) -> StepConfig:
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"step config {path} does not exist")
    return validated(StepConfig, OmegaConf.load(path), where=str(path))


@dataclass
class SuiteBenchmark:
    """One benchmark of the suite: its adapter, its folder and the items this job scores."""

    name: str
    adapter: Benchmark
    root: Path
    items: list[Item]     # the items scored: the first eval.max_samples units
    loaded: list[Item]    # every item of the folder (the chance level is the benchmark's, not the sample's)


def first_items(items: list[Item], limit: int | None) -> list[Item]:
    """The first `limit` scored units: items, or whole groups where items share a group (e.g. MMBench's
    circular copies), in file order; None: all."""
    if limit is None:
        return list(items)
    kept: set[str] = set()
    chosen = []
    for item in items:
        unit = item.group if item.group is not None else f"item:{item.id}"
        if unit not in kept:
            if len(kept) == limit:
                continue
            kept.add(unit)
        chosen.append(item)
    return chosen


def benchmark_folders(cfg: StepConfig, suite_dir: Path) -> dict[str, Path]:
    """Suite name -> the local folder its adapter reads, in suite order (`synthetic` expanded by task)."""
    from storage.files import Storage
    from storage.store import open_store

    synthetic: dict[str, Path] = {}
    if any(n == SYNTHETIC_SUITE or n.startswith(SYNTHETIC_PREFIX) for n in cfg.eval.suite):
        from evaluation.synthetic_suite import write_suite

        synthetic = write_suite(cfg.data.uri, suite_dir, split=cfg.data.split, storage=Storage(cfg.storage, "storage"))
    folders: dict[str, Path] = {}
    for name in cfg.eval.suite:
        if name == SYNTHETIC_SUITE:
            folders.update(sorted(synthetic.items()))
        elif name.startswith(SYNTHETIC_PREFIX):
            if name not in synthetic:
                raise ConfigError(f"eval.suite: {name!r}: the eval split of {cfg.data.uri} has no such task "
                                  f"(it has {sorted(synthetic)})")
            folders[name] = synthetic[name]
        else:
            location = cfg.eval.public_folder(name)
            if "://" in location:
                cache = Path(cfg.runs_dir) / cfg.eval.download_dir
                folders[name] = open_store(cfg.storage).cached_folder(location, cache)
            else:
                folders[name] = Path(location)
    return folders


def build_suite(cfg: StepConfig, suite_dir: Path) -> list[SuiteBenchmark]:
    """Every benchmark of the suite with its items; a gate on a benchmark the suite lacks fails here,
    before any generation."""
    suite = []
    for name, root in benchmark_folders(cfg, suite_dir).items():
        adapter = benchmark(name, cfg.scoring)
        items = adapter.load(root)
        if not items:
            raise ConfigError(f"eval.suite: benchmark {name!r} has no item in {root}")
        suite.append(SuiteBenchmark(name, adapter, root, first_items(items, cfg.eval.max_samples), items))
    names = [b.name for b in suite]
    missing = [name for name in cfg.gate if name not in names]
    if missing:
        raise ConfigError(f"eval.gates.{cfg.step}: gate on benchmark(s) {missing} the suite does not hold "
                          f"(suite: {names})")
    return suite


def generation_calls(suite: list[SuiteBenchmark], batch_size: int) -> list[list[SuiteBenchmark]]:
    """The suite in consecutive runs of benchmarks, each run generated in one call: benchmarks are joined
    until the run holds at least `batch_size` items, so small benchmarks (a few items each) share batches
    instead of each decoding its own short one; a benchmark is never split, so its progress line comes
    when its answers are in."""
    calls: list[list[SuiteBenchmark]] = []
    held = 0
    for bench in suite:
        if not calls or held >= batch_size:
            calls.append([])
            held = 0
        calls[-1].append(bench)
        held += len(bench.items)
    return calls


def chance_level(adapter: Benchmark, items: list[Item]) -> float | None:
    """The score of guessing, when the adapter states it (the synthetic ones do): a `chance` attribute, or
    a method of the benchmark's items (every item of its folder: the answer spaces are the benchmark's)."""
    chance = getattr(adapter, "chance", None)
    if callable(chance):
        chance = chance(items)
    return None if chance is None else float(chance)


def load_model(cfg: StepConfig, input_dir: Path):
    """(model on its device, tokenizer, image processor) of the input checkpoint."""
    import torch

    from model.checkpoint import load_hf_checkpoint
    from storage.store import open_store

    folder = open_store(cfg.storage).materialize(cfg.input_checkpoint, input_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = cfg.eval.precision
    if precision == "auto":  # a config written by hand; the orchestrator writes the resolved one
        precision = "bf16" if device == "cuda" else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    model, tokenizer, image_processor = load_hf_checkpoint(folder, dtype=dtype,
                                                           attn_implementation=cfg.model.attn_implementation)
    return model.to(device).eval(), tokenizer, image_processor


def _jsonable(value: Any) -> Any:
    """A parsed answer as JSON (tuples become lists; anything else unknown becomes its repr)."""
    return json.loads(json.dumps(value, default=repr))


class EvalJob:
    def __init__(self, cfg: StepConfig):
        self.cfg = cfg
        self.work = Path(cfg.work_dir)
        self.out = self.work / "artifacts"
        self.client = None
        if cfg.tracking.run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)

    def run(self) -> dict[str, Any]:
        from evaluation.generate import Generator
        from storage.store import open_store

        cfg = self.cfg
        store = open_store(cfg.storage)
        source = store.read_manifest(cfg.input_checkpoint)
        if source is None:
            raise ConfigError(f"input_checkpoint: no checkpoint at {cfg.input_checkpoint} (no manifest.json there)")
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        suite = build_suite(cfg, self.work / "suite")
        print(f"[{cfg.step}] evaluating {cfg.input_checkpoint} on {len(suite)} benchmark(s): "
              + ", ".join(f"{b.name} ({len(b.items)}/{len(b.loaded)})" for b in suite), flush=True)
        model, tokenizer, image_processor = load_model(cfg, self.work / "input")
        generator = Generator(model, tokenizer, image_processor, cfg.eval.generation)

        rows: list[dict[str, Any]] = []
        scores: dict[str, dict[str, Any]] = {}
        tokens, done = 0, 0
        for calls in generation_calls(suite, cfg.eval.generation.batch_size):
            started = time.time()
            answers = generator.generate([item.prompt for bench in calls for item in bench.items])
            elapsed = max(time.time() - started, 1e-9)  # the rates of the call that generated these benchmarks
            rates = (f"{len(answers) / elapsed:.2f} samples/s "
                     f"{sum(g.new_tokens for g in answers) / elapsed:.1f} tokens/s")
            generations = iter(answers)
            for bench in calls:
                done += 1
                item_scores, new_tokens = [], 0
                for item in bench.items:
                    generation = next(generations)
                    scored = bench.adapter.score(item, generation.text)
                    item_scores.append(scored.score)
                    new_tokens += generation.new_tokens
                    rows.append({"id": item.id, "benchmark": bench.name, "prompt": generation.prompt,
                                 "response": generation.text, "parsed": _jsonable(scored.parsed),
                                 "score": scored.score, "new_tokens": generation.new_tokens})
                tokens += new_tokens
                result = aggregate_report(bench.adapter, bench.items, item_scores)
                scores[bench.name] = {"metric": result.metric, "score": result.score, "n": result.n,
                                      "ci95": list(result.ci95), "by": result.by,
                                      "chance": chance_level(bench.adapter, bench.loaded)}
                print(f"[{cfg.step}] benchmark {done}/{len(suite)} {bench.name}: {result.metric} {result.score:.4f} "
                      f"(n {result.n}, ci95 [{result.ci95[0]:.3f}, {result.ci95[1]:.3f}]) {rates}", flush=True)

        failures = check_gate({name: s["score"] for name, s in scores.items()}, cfg.gate)
        failure = gate_message(cfg.step, failures) if failures else None
        self.write(rows, scores, source.digest, failure)
        self.track(rows, scores)
        meta = {"step": cfg.step, "kind": "evaluate", "input_checkpoint": cfg.input_checkpoint,
                "input_digest": source.digest, "benchmarks": list(scores)}
        if failure is not None:
            meta["failure"] = failure
        manifest = store.publish(self.out, cfg.output_uri, run_id=cfg.tracking.run_id, step_key=cfg.step_key,
                                 meta=meta)
        return {"status": STATUS_FAILED if failure else STATUS_OK, "output_uri": cfg.output_uri,
                "output_digest": manifest.digest, "resumed": False, "tokens_seen": tokens,
                "metrics": {name: s["score"] for name, s in scores.items()}, "failure": failure}

    def write(self, rows: list[dict[str, Any]], scores: dict[str, dict[str, Any]], input_digest: str,
              failure: str | None) -> None:
        with (self.out / PREDICTIONS_FILE).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        summary = {"step": self.cfg.step, "input_checkpoint": self.cfg.input_checkpoint,
                   "input_digest": input_digest, "gate": self.cfg.gate, "failure": failure, "benchmarks": scores}
        (self.out / SCORES_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")

    def track(self, rows: list[dict[str, Any]], scores: dict[str, dict[str, Any]]) -> None:
        """Scores as metrics, n and chance as params, the predictions as a table, both files as artifacts."""
        if self.client is None:
            return
        from mlflow.entities import Metric, Param

        run_id, now = self.cfg.tracking.run_id, int(time.time() * 1000)
        metrics, params = [], []
        for name, s in scores.items():
            metrics += [Metric(f"score/{name}", s["score"], now, 0),
                        Metric(f"score/{name}/ci95_lo", s["ci95"][0], now, 0),
                        Metric(f"score/{name}/ci95_hi", s["ci95"][1], now, 0)]
            params.append(Param(f"eval.n.{name}", str(s["n"])))
            if s["chance"] is not None:
                params.append(Param(f"eval.chance.{name}", str(s["chance"])))
        self.client.log_batch(run_id, metrics=metrics, params=params)
        columns = ("id", "benchmark", "prompt", "response", "parsed", "score", "new_tokens")
        table = {column: [row[column] for row in rows] for column in columns}
        table["parsed"] = [json.dumps(value, ensure_ascii=False) for value in table["parsed"]]
        self.client.log_table(run_id, data=table, artifact_file=TABLE_FILE)
        for name in (PREDICTIONS_FILE, SCORES_FILE):
            self.client.log_artifact(run_id, str(self.out / name), ARTIFACTS_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="resolved step config (YAML)")
    parser.add_argument("--result", required=True, help="where to write result.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    cfg = load_step_config(args.config)
    with system_metrics(cfg.system_metrics, cfg.tracking.tracking_uri, cfg.tracking.run_id):
        result = EvalJob(cfg).run()
    result["wall_time_s"] = time.time() - PROCESS_STARTED
    write_atomically(Path(args.result), json.dumps(result, indent=2).encode())
    if result["status"] != STATUS_OK:
        print(result["failure"], flush=True)  # the job's last line: the launcher quotes it in JobFailed
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
