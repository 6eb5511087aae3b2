"""flows.report: the run's score table (rows, markdown), the plot, and where both are logged."""
from __future__ import annotations

import json
from unittest import mock

import pytest

from flows.report import (
    MARKDOWN_FILE, PLOT_FILE, ROWS_FILE, ReportError, build_report, load_report_config, log_to_mlflow,
    publish_table, read_scores, score_rows, to_markdown,
)


def entry(score: float, chance: float | None, metric: str = "accuracy", n: int = 30) -> dict:
    return {"metric": metric, "score": score, "n": n, "ci95": [max(0.0, score - 0.1), min(1.0, score + 0.1)],
            "by": {}, "chance": chance}


def scores_file(tmp_path, step: str, benchmarks: dict) -> str:
    """A scores.json as the eval job writes it."""
    path = tmp_path / f"{step}-scores.json"
    path.write_text(json.dumps({"step": step, "input_checkpoint": f"file:///store/{step}", "input_digest": "d",
                                "gate": {}, "failure": None, "benchmarks": benchmarks}))
    return str(path)


@pytest.fixture
def cfg():
    return load_report_config("default")


@pytest.fixture
def run_scores(tmp_path):
    steps = {
        "stage1": {"synthetic_counting": entry(0.1, 0.2), "synthetic_vqa": entry(0.0, 0.3)},
        "stage2": {"synthetic_counting": entry(0.3, 0.2), "synthetic_vqa": entry(0.2, 0.3)},
        "stage3": {"synthetic_counting": entry(0.5, 0.2), "synthetic_vqa": entry(0.4, 0.3),
                   "mmmu": entry(0.25, None)},
        "stage4": {"synthetic_counting": entry(0.6, 0.2), "synthetic_vqa": entry(0.66, 0.3),
                   "docvqa": entry(0.5, None, metric="anls")},
    }
    return {step: read_scores(scores_file(tmp_path, step, benchmarks)) for step, benchmarks in steps.items()}


def test_rows_hold_each_benchmarks_score_per_step_and_its_chance(run_scores):
    rows = score_rows(run_scores)
    assert [row["benchmark"] for row in rows] == ["synthetic_counting", "synthetic_vqa", "mmmu", "docvqa"]
    counting = rows[0]
    assert counting == {"benchmark": "synthetic_counting", "metric": "accuracy", "chance": 0.2, "stage1": 0.1,
                        "stage2": 0.3, "stage3": 0.5, "stage4": 0.6, "x_chance": pytest.approx(3.0)}
    mmmu = rows[2]
    assert (mmmu["stage1"], mmmu["stage3"], mmmu["stage4"], mmmu["chance"], mmmu["x_chance"]) == (None, 0.25, None, None, None)
    assert rows[3]["metric"] == "anls" and rows[3]["x_chance"] is None


def test_a_morl_step_is_a_column_after_the_stages(run_scores):
    run_scores["morl"] = {"synthetic_vqa": entry(0.9, 0.3)}
    row = score_rows(run_scores)[1]
    assert list(row)[3:] == ["stage1", "stage2", "stage3", "stage4", "morl", "x_chance"]
    assert row["x_chance"] == pytest.approx(3.0)


def test_markdown_table(run_scores, cfg):
    markdown = to_markdown(run_scores, cfg)
    assert "| benchmark | metric | chance | stage1 | stage2 | stage3 | stage4 | last / chance |" in markdown
    assert ("| synthetic_vqa | accuracy | 0.300 | 0.000 [0.000, 0.100] | 0.200 [0.100, 0.300] | "
            "0.400 [0.300, 0.500] | 0.660 [0.560, 0.760] | 2.20x |") in markdown
    assert "| mmmu | accuracy |  |  |  | 0.250 [0.150, 0.350] |  |  |" in markdown


def test_build_report_writes_the_table_rows_and_a_png(run_scores, cfg, tmp_path):
    report = build_report(run_scores, tmp_path / "report", cfg)
    assert (tmp_path / "report" / MARKDOWN_FILE).read_text() == report.markdown
    assert json.loads((tmp_path / "report" / ROWS_FILE).read_text()) == json.loads(json.dumps(report.rows))
    assert report.plot == tmp_path / "report" / PLOT_FILE
    from PIL import Image

    with Image.open(report.plot) as image:
        assert image.format == "PNG"
        rows = -(-len(report.rows) // cfg.plot_columns)
        assert image.size == (round(cfg.figure_width_in * cfg.dpi), round(cfg.row_height_in * rows * cfg.dpi))


def test_the_report_is_logged_into_the_parent_mlflow_run(run_scores, cfg, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("report", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    report = build_report(run_scores, tmp_path / "report", cfg)
    log_to_mlflow(client, run_id, report, cfg)
    logged = {info.path for info in client.list_artifacts(run_id, cfg.artifact_dir)}
    assert logged == {f"{cfg.artifact_dir}/{name}" for name in (MARKDOWN_FILE, PLOT_FILE, ROWS_FILE)}
    (tmp_path / "dl").mkdir()
    text = client.download_artifacts(run_id, f"{cfg.artifact_dir}/{MARKDOWN_FILE}", str(tmp_path / "dl"))
    assert open(text, encoding="utf-8").read() == report.markdown


def test_the_prefect_table_is_the_rows_rounded(run_scores, cfg):
    rows = score_rows(run_scores)
    with mock.patch("prefect.artifacts.create_table_artifact") as create:
        table = publish_table(rows, "mimovl-full-scores", "scores per step", cfg)
    create.assert_called_once_with(table=table, key="mimovl-full-scores", description="scores per step")
    assert [row["benchmark"] for row in table] == [row["benchmark"] for row in rows]
    assert table[0]["x_chance"] == 3.0 and table[2]["stage1"] == "" and table[1]["stage4"] == 0.66
    with pytest.raises(ReportError, match="artifact key"):
        publish_table(rows, "Bad_Key", "x", cfg)


def test_bad_scores_fail_naming_the_step_benchmark_and_field(tmp_path):
    with pytest.raises(ReportError, match="step stage2: benchmark 'mmmu': field 'score' must be a number"):
        score_rows({"stage1": {"mmmu": entry(0.1, None)}, "stage2": {"mmmu": {"metric": "accuracy", "score": None}}})
    with pytest.raises(ReportError, match="field 'ci95' must be"):
        score_rows({"stage1": {"mmmu": {"score": 0.1, "ci95": [0.1]}}})
    with pytest.raises(ReportError, match="no evaluated step"):
        score_rows({})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReportError, match="bad.json: not a readable scores.json"):
        read_scores(tmp_path / "bad.json")


def test_a_run_reports_its_scored_steps_under_the_step_each_scored(tmp_path):
    """step_scores_of: the kinds with a scores file only, completed steps only, labelled by `from:`; two
    steps scoring one checkpoint keep apart as <from>:<step>; one with no `from:` keeps its own name."""
    from types import SimpleNamespace

    from flows.report import step_scores_of

    def step(name, kind, source):
        return SimpleNamespace(name=name, kind=kind, source=source)

    kinds = {"pretrain": SimpleNamespace(scores=None), "evaluate": SimpleNamespace(scores="scores.json")}
    steps = [step("stage1", "pretrain", None), step("eval1", "evaluate", "stage1"), step("stage2", "pretrain", "stage1"),
             step("eval2", "evaluate", "stage2"), step("eval2b", "evaluate", "stage2"), step("eval3", "evaluate", "stage3"),
             step("baseline", "evaluate", None)]
    plan = SimpleNamespace(steps=steps, kind=lambda s: kinds[s.kind])
    for name, score in (("eval1", 0.1), ("eval2", 0.2), ("eval2b", 0.3), ("baseline", 0.05)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scores.json").write_text(json.dumps({"benchmarks": {"vqa": entry(score, 0.3)}}))
    outcomes = {name: SimpleNamespace(output_uri=f"file://{tmp_path / name}") for name in ("stage1", "eval1", "eval2", "eval2b", "baseline")}
    store = SimpleNamespace(materialize=lambda uri, cache: tmp_path / uri.rsplit("/", 1)[1])
    scores = step_scores_of(plan, outcomes, store, tmp_path / "cache")   # eval3 did not complete
    assert list(scores) == ["stage1", "stage2:eval2", "stage2:eval2b", "baseline"]   # no `from:`: its own name
    assert [s["vqa"]["score"] for s in scores.values()] == [0.1, 0.2, 0.3, 0.05]
