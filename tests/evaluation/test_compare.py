"""evaluation.compare: paired differences over shared items with a seeded paired bootstrap interval."""
from __future__ import annotations

import json
import random

import pytest

from evaluation.compare import PredictionsError, compare_predictions, main, read_rows

RESAMPLES = 500


def rows(benchmark: str, scores: dict[str, float]) -> list[dict]:
    return [{"id": item, "benchmark": benchmark, "response": "x", "score": score} for item, score in scores.items()]


def coin_flips(n: int, p: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {f"q{i}": float(rng.random() < p) for i in range(n)}


def write_jsonl(path, table: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in table), encoding="utf-8")


def test_identical_runs_differ_by_zero_with_an_interval_holding_zero():
    run = rows("synthetic_vqa", coin_flips(60, 0.5, seed=1))
    entry = compare_predictions(run, run, RESAMPLES, seed=0)["synthetic_vqa"]
    assert entry["diff"] == 0.0
    assert entry["ci95"][0] <= 0.0 <= entry["ci95"][1]
    assert entry["n_shared"] == 60 and entry["only_a"] == entry["only_b"] == 0


def test_a_clearly_better_run_has_an_interval_above_zero():
    a = rows("synthetic_counting", coin_flips(80, 0.2, seed=1))
    b = rows("synthetic_counting", coin_flips(80, 0.9, seed=2))
    entry = compare_predictions(a, b, RESAMPLES, seed=0)["synthetic_counting"]
    assert entry["diff"] == pytest.approx(entry["score_b"] - entry["score_a"])
    assert 0.0 < entry["ci95"][0] <= entry["diff"] <= entry["ci95"][1]
    worse = compare_predictions(b, a, RESAMPLES, seed=0)["synthetic_counting"]
    assert worse["ci95"][1] < 0.0


def test_only_shared_ids_are_scored_and_the_rest_counted():
    a = rows("mmmu", {"a": 1.0, "b": 0.0, "c": 1.0}) + rows("docvqa", {"d1": 0.5})
    b = rows("mmmu", {"b": 1.0, "c": 1.0, "z": 0.0}) + rows("chartqa", {"x": 1.0})
    result = compare_predictions(a, b, RESAMPLES, seed=0)
    assert list(result) == ["chartqa", "docvqa", "mmmu"]
    mmmu = result["mmmu"]
    assert (mmmu["n_shared"], mmmu["only_a"], mmmu["only_b"]) == (2, 1, 1)
    assert (mmmu["score_a"], mmmu["score_b"], mmmu["diff"]) == (0.5, 1.0, 0.5)
    assert result["docvqa"] == {"n_shared": 0, "only_a": 1, "only_b": 0, "score_a": None, "score_b": None,
                                "diff": None, "ci95": None}
    assert result["chartqa"]["only_b"] == 1


def test_the_same_id_in_two_benchmarks_is_two_items_and_the_first_row_of_an_id_wins():
    a = rows("mmmu", {"1": 0.0}) + rows("mmbench", {"1": 1.0}) + rows("mmmu", {"1": 1.0})
    b = rows("mmmu", {"1": 1.0}) + rows("mmbench", {"1": 1.0})
    result = compare_predictions(a, b, RESAMPLES, seed=0)
    assert result["mmmu"]["diff"] == 1.0 and result["mmmu"]["n_shared"] == 1
    assert result["mmbench"]["diff"] == 0.0


def test_seeded_reproducibility():
    a = rows("docvqa", {f"q{i}": random.Random(i).random() for i in range(50)})
    b = rows("docvqa", {f"q{i}": random.Random(i + 100).random() for i in range(50)})
    first = compare_predictions(a, b, RESAMPLES, seed=7)
    assert compare_predictions(a, b, RESAMPLES, seed=7) == first
    assert compare_predictions(a, b, RESAMPLES, seed=8)["docvqa"]["ci95"] != first["docvqa"]["ci95"]


def test_a_benchmarks_interval_does_not_depend_on_the_other_benchmarks():
    a = rows("refcoco", coin_flips(40, 0.5, seed=3))
    b = rows("refcoco", coin_flips(40, 0.6, seed=4))
    alone = compare_predictions(a, b, RESAMPLES, seed=0)["refcoco"]
    extra = rows("countbench", coin_flips(30, 0.5, seed=5))
    together = compare_predictions(a + extra, b + extra, RESAMPLES, seed=0)["refcoco"]
    assert together == alone


def test_the_cli_reads_folders_and_files_prints_json_and_writes_markdown(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "predictions.jsonl", rows("synthetic_ocr", coin_flips(30, 0.3, seed=1)))
    write_jsonl(tmp_path / "b.jsonl", rows("synthetic_ocr", coin_flips(30, 0.7, seed=2)))
    out = tmp_path / "cmp.md"
    assert main([str(tmp_path / "a"), str(tmp_path / "b.jsonl"), "--out", str(out),
                 "eval.compare.resamples=200"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["resamples"] == 200 and printed["seed"] == 0
    entry = printed["benchmarks"]["synthetic_ocr"]
    assert entry["n_shared"] == 30
    markdown = out.read_text(encoding="utf-8")
    assert f"| synthetic_ocr | 30 | {entry['score_a']:.4f} | {entry['score_b']:.4f} | {entry['diff']:+.4f}" in markdown


def test_bad_rows_fail_naming_the_line(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "1", "benchmark": "mmmu", "score": 1}\n{"id": "2", "benchmark": "mmmu"}\n')
    with pytest.raises(PredictionsError, match=r"p.jsonl:2: field 'score' missing"):
        read_rows(path)
    path.write_text('{"id": "1", "benchmark": "mmmu", "score": "1"}\n')
    with pytest.raises(PredictionsError, match=r"p.jsonl:1: field 'score': expected a number"):
        read_rows(path)
    assert main([str(path), str(path), "--out", str(tmp_path / "x.md")]) == 2
    assert "field 'score': expected a number" in capsys.readouterr().err


def test_an_mlflow_run_id_reads_the_runs_predictions_artifact(tmp_path, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("compare", artifact_location=str(tmp_path / "artifacts"))
    run_ids = []
    for p, seed in ((0.2, 1), (0.8, 2)):
        run_id = client.create_run(experiment).info.run_id
        local = tmp_path / f"local-{seed}"
        local.mkdir()
        write_jsonl(local / "predictions.jsonl", rows("synthetic_math", coin_flips(25, p, seed)))
        client.log_artifact(run_id, str(local / "predictions.jsonl"), "eval")
        run_ids.append(run_id)
    out = tmp_path / "cmp.md"
    assert main([*run_ids, "--out", str(out), "--tracking-uri", uri, "eval.compare.resamples=100"]) == 0
    entry = json.loads(capsys.readouterr().out)["benchmarks"]["synthetic_math"]
    assert entry["n_shared"] == 25 and entry["diff"] > 0
    assert main([run_ids[0], "0" * 32, "--out", str(out), "--tracking-uri", uri]) == 2
    assert "neither a file, a folder nor an MLflow run" in capsys.readouterr().err
