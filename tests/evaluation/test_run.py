"""The eval job end to end on the tiny model, as a real subprocess: a tiny checkpoint published to a file://
store, a tiny synthetic data set and a public benchmark folder (MMBench with its circular copies), the step
config the orchestration writes, an MLflow run on SQLite. Then the quality gate: minimums that cannot all be
met fail the job with one message listing each failing benchmark, and the scores are still published."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conf import REPO_ROOT
from evaluation.benchmarks.base import Item
from evaluation.run import SuiteBenchmark, first_items, generation_calls
from tests.evaluation.fixtures import mmbench_rows, write_mmbench_tsv

DATA_SAMPLES = 300      # 30 in the eval split: 3 per synthetic task
MAX_SAMPLES = 2         # items (MMBench: questions) per benchmark
MMBENCH_QUESTIONS = 3   # each with its 4 circular copies
STEP = "eval1"
ROW_FIELDS = {"id", "benchmark", "prompt", "response", "parsed", "score", "new_tokens"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from data.config import load_data_config, load_resize_spec
    from data.synth import generate

    out = tmp_path_factory.mktemp("data") / "synthetic"
    cfg = load_data_config("synthetic")
    generate(out, DATA_SAMPLES, 0, cfg, load_resize_spec(cfg.model))
    return out


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def checkpoint(store_root, tiny_cfg, tokenizer, image_processor, tmp_path_factory) -> str:
    """A tiny checkpoint (built from config, untrained) published as stage1's output."""
    import torch

    from model.build import build_model
    from model.checkpoint import save_hf_checkpoint
    from storage.store import open_store

    torch.manual_seed(0)
    folder = save_hf_checkpoint(build_model(tiny_cfg, tokenizer), tokenizer, image_processor,
                                tmp_path_factory.mktemp("export") / "stage1")
    uri = f"file://{store_root}/stage1/test-key"
    open_store(storage(store_root)).publish(folder, uri, step_key="test-key", meta={"step": "stage1"})
    return uri


@pytest.fixture(scope="module")
def mmbench(tmp_path_factory) -> Path:
    return write_mmbench_tsv(tmp_path_factory.mktemp("mmbench"), mmbench_rows(MMBENCH_QUESTIONS, seed=0))


def storage(store_root: Path) -> dict:
    from conf import load_group
    from omegaconf import OmegaConf

    return {**OmegaConf.to_container(load_group("storage", "local")), "root": f"file://{store_root}"}


def mlflow_run(root: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("eval") or client.get_experiment(client.create_experiment("eval"))
    return client, uri, client.create_run(experiment.experiment_id).info.run_id


def write_step(tmp: Path, store_root: Path, dataset: Path, checkpoint: str, mmbench: Path, name: str,
               gates: dict | None = None) -> tuple[Path, dict]:
    """The step config the orchestration writes for eval1 (flows.plan), for this test's store and run."""
    from flows.plan import build_plan

    client, uri, run_id = mlflow_run(tmp)
    plan = build_plan("smoke", [f"runs_dir={tmp / 'runs'}", f"storage.root=file://{store_root}",
                                f"eval.max_samples={MAX_SAMPLES}", "eval.generation.max_new_tokens=8",
                                "eval.suite=[synthetic,mmbench]", f"+eval.benchmarks.mmbench={mmbench}"])
    config = plan.step_config(plan.by_name[STEP], data_uri=str(dataset), input_checkpoint=checkpoint,
                              step_key=f"key-{name}", output_uri=f"file://{store_root}/{STEP}/key-{name}",
                              work_dir=str(tmp / "work" / name), run_id=run_id)
    config["tracking"]["tracking_uri"] = uri
    if gates is not None:
        config["eval"]["gates"] = {STEP: gates}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path, {"client": client, "run_id": run_id, "config": config}


def run_job(config: Path) -> tuple[subprocess.CompletedProcess, Path]:
    result = config.with_suffix(".result.json")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "evaluation.run", "--config", str(config), "--result", str(result)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, result


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, store_root, dataset, checkpoint, mmbench):
    tmp = tmp_path_factory.mktemp("job")
    config, run = write_step(tmp, store_root, dataset, checkpoint, mmbench, "plain")
    done, result = run_job(config)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done, json.loads(result.read_text()), run


@pytest.mark.slow
def test_the_job_writes_scores_and_predictions_and_publishes_them(evaluated, store_root, dataset):
    from data.manifest import load_manifest
    from storage.store import open_store

    done, result, run = evaluated
    config = run["config"]
    tasks = sorted(t for t, n in load_manifest(str(dataset))["splits"]["eval"]["tasks"].items() if n)
    synthetic = [f"synthetic_{task}" for task in tasks]
    assert (result["status"], result["output_uri"], result["resumed"]) == ("ok", config["output_uri"], False)
    assert result["wall_time_s"] > 0 and result.get("failure") is None

    manifest = open_store(storage(store_root)).read_manifest(config["output_uri"])
    assert manifest is not None and manifest.digest == result["output_digest"]
    assert sorted(manifest.files) == ["predictions.jsonl", "scores.json"]
    assert (manifest.step_key, manifest.run_id, manifest.meta["kind"]) == ("key-plain", run["run_id"], "evaluate")
    published = Path(config["output_uri"].removeprefix("file://"))

    scores = json.loads((published / "scores.json").read_text())
    benchmarks = scores["benchmarks"]
    assert sorted(benchmarks) == sorted(synthetic + ["mmbench"])
    for name, entry in benchmarks.items():
        assert entry["n"] == MAX_SAMPLES, name  # capped: 3 items per task, 3 MMBench questions
        assert 0 <= entry["ci95"][0] <= entry["score"] <= entry["ci95"][1] <= 1
        assert entry["metric"] and isinstance(entry["by"], dict)
        assert (entry["chance"] is None) == (name == "mmbench"), name  # the synthetic adapters state theirs
    assert benchmarks["mmbench"]["metric"] == "circular_accuracy"
    assert result["metrics"] == {name: entry["score"] for name, entry in benchmarks.items()}

    rows = [json.loads(line) for line in (published / "predictions.jsonl").read_text().splitlines()]
    assert all(set(row) == ROW_FIELDS for row in rows)
    per_benchmark = {name: [r for r in rows if r["benchmark"] == name] for name in benchmarks}
    assert {name: len(r) for name, r in per_benchmark.items()} == {
        **{name: MAX_SAMPLES for name in synthetic}, "mmbench": MAX_SAMPLES * 4}  # each question with its copies
    assert all(r["prompt"].startswith("<|im_start|>") and 0 < r["new_tokens"] <= 8 for r in rows)
    assert result["tokens_seen"] == sum(r["new_tokens"] for r in rows)
    for name in benchmarks:  # progress: one line per benchmark, i/n and samples/s
        assert any(f"/{len(benchmarks)} {name}:" in line and "samples/s" in line for line in done.stdout.splitlines())


@pytest.mark.slow
def test_the_job_logs_scores_table_and_system_metrics_to_its_run(evaluated):
    _, result, run = evaluated
    client, run_id = run["client"], run["run_id"]
    logged = client.get_run(run_id).data
    for name, score in result["metrics"].items():
        assert logged.metrics[f"score/{name}"] == pytest.approx(score)
        assert logged.params[f"eval.n.{name}"] == str(MAX_SAMPLES)
    assert "system/cpu_utilization_percentage" in logged.metrics  # telemetry of the job's machine
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"predictions_table.json", "eval/predictions.jsonl", "eval/scores.json"} <= artifacts
    table = json.loads(Path(client.download_artifacts(run_id, "predictions_table.json")).read_text())
    rows = Path(client.download_artifacts(run_id, "eval/predictions.jsonl")).read_text().splitlines()
    assert set(table["columns"]) == ROW_FIELDS and len(table["data"]) == len(rows)


@pytest.mark.slow
def test_a_gate_that_is_not_met_fails_after_publishing_with_every_shortfall(evaluated, tmp_path, store_root,
                                                                           dataset, checkpoint, mmbench):
    from storage.store import open_store

    _, plain, _ = evaluated
    minimums = {name: 1.0 for name in plain["metrics"]}  # a perfect score everywhere: not met by this model
    short = {name: score for name, score in plain["metrics"].items() if score < 1.0}
    assert short, "the untrained tiny model scored 1.0 on every benchmark"
    config, run = write_step(tmp_path, store_root, dataset, checkpoint, mmbench, "gated", gates=minimums)
    done, result_path = run_job(config)
    assert done.returncode == 1
    result = json.loads(result_path.read_text())
    assert result["status"] == "failed" and result["metrics"] == plain["metrics"]  # same model, same scores
    message = done.stdout.strip().splitlines()[-1]  # the last line: what the launcher quotes
    assert message == result["failure"]
    assert f"quality gate of step {STEP} failed on {len(short)} benchmark(s)" in message
    for name, score in short.items():
        assert f"{name} {score:.4f} < minimum 1.0000" in message
    for name in set(plain["metrics"]) - set(short):
        assert name not in message

    manifest = open_store(storage(store_root)).read_manifest(run["config"]["output_uri"])  # published anyway
    assert manifest is not None and manifest.digest == result["output_digest"]
    assert manifest.meta["failure"] == message
    scores = json.loads((Path(run["config"]["output_uri"].removeprefix("file://")) / "scores.json").read_text())
    assert scores["gate"] == minimums and scores["failure"] == message
    assert run["client"].get_run(run["run_id"]).data.metrics.keys() >= {f"score/{n}" for n in plain["metrics"]}


def item(item_id: str, group: str | None = None) -> Item:
    return Item(id=item_id, prompt=[], gold=None, group=group)


def test_the_sample_cap_keeps_the_first_units_whole_groups_included():
    items = [item("a"), item("b"), item("c")]
    assert [i.id for i in first_items(items, 2)] == ["a", "b"]
    assert first_items(items, None) == items
    grouped = [item("1", "1"), item("2", "2"), item("1001", "1"), item("3", "3"), item("2001", "2")]
    assert [i.id for i in first_items(grouped, 2)] == ["1", "2", "1001", "2001"]


def test_small_benchmarks_share_generation_calls_and_none_is_split():
    def bench(name: str, n: int) -> SuiteBenchmark:
        items = [item(f"{name}{i}") for i in range(n)]
        return SuiteBenchmark(name, None, Path("."), items, items)  # type: ignore[arg-type]

    suite = [bench("a", 3), bench("b", 3), bench("c", 10), bench("d", 1), bench("e", 2)]
    calls = generation_calls(suite, batch_size=4)
    assert [[b.name for b in call] for call in calls] == [["a", "b"], ["c"], ["d", "e"]]
    assert [[b.name for b in call] for call in generation_calls(suite, batch_size=1)] == [[b.name] for b in suite]
