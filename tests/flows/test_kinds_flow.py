"""A step kind that only a test config declares (tests/flows/conf/pipeline/kind_test.yaml, job
tests/flows/fake_artifact_job.py) runs through the real flow on a real Prefect server: planned, keyed,
run, published as an artifact set, cached on the rerun and recorded in MLflow."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conf import REPO_ROOT

pytestmark = pytest.mark.slow

TEST_CONF = REPO_ROOT / "tests" / "flows" / "conf"


def overrides(runs: Path) -> list[str]:
    return [f"hydra.searchpath=[file://{TEST_CONF}]", f"runs_dir={runs}", f"storage.root=file://{runs}/store",
            "launcher.runner=python", "orchestration.kinds.pretrain.module=tests.flows.fake_pretrain",
            "orchestration.kinds.pretrain.code=[tests/flows/fake_pretrain.py]"]


def run_flow(services, runs: Path) -> dict:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import mimovl

    with temporary_settings({PREFECT_API_URL: services.api_url}):
        return mimovl(pipeline="kind_test", overrides=overrides(runs))


def test_a_new_kind_is_planned_keyed_run_cached_and_recorded(prefect_services, tmp_path):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from storage.store import open_store

    first = run_flow(prefect_services, tmp_path)
    assert first["status"] == "completed", first["failures"]
    stage1, scores = first["steps"]
    assert (scores["step"], scores["kind"], scores["status"], scores["output_type"]) == (
        "scores", "fake_scores", "ran", "artifacts")
    assert re.fullmatch(r"[0-9a-f]{64}", scores["step_key"])
    assert scores["output_uri"] == f"file://{tmp_path}/store/scores/{scores['step_key']}"
    manifest = open_store(storage_of(tmp_path)).read_manifest(scores["output_uri"])
    assert manifest is not None and sorted(manifest.files) == ["predictions.jsonl", "scores.json"]
    assert manifest.digest == scores["output_digest"] and manifest.run_id == scores["run_id"]
    with temporary_settings({PREFECT_API_URL: prefect_services.api_url}), get_client(sync_client=True) as client:
        assert client.read_flow_run(first["flow_run_id"]).state.is_completed()  # a run of the server

    client = MlflowClient(tracking_uri=first["mlflow"]["tracking_uri"])
    run = client.get_run(scores["run_id"])
    assert run.data.tags["mimovl.kind"] == "fake_scores" and run.data.tags["mimovl.output_type"] == "artifacts"
    assert run.data.tags["mlflow.parentRunId"] == first["mlflow"]["parent_run_id"]
    assert run.data.metrics["accuracy"] == scores["metrics"]["accuracy"]  # logged by the job itself
    assert run.data.params["eval.generation.max_new_tokens"] == "64" and run.data.params["data.split"] == "eval"
    output = client.get_logged_model(scores["model_id"])
    assert output.model_type == "artifacts" and output.tags["mimovl.checkpoint_digest"] == scores["output_digest"]
    assert [m.model_id for m in run.inputs.model_inputs] == [stage1["model_id"]]  # lineage from stage1

    # the run's score report: the scores step's benchmarks under the step it scored, in the parent run
    assert first["scores"]["rows"] == [{"benchmark": "fake", "metric": "accuracy", "chance": 0.5,
                                        "stage1": scores["metrics"]["accuracy"],
                                        "x_chance": pytest.approx(scores["metrics"]["accuracy"] / 0.5)}]
    assert "| fake | accuracy | 0.500 |" in first["scores"]["markdown"]
    logged = {f.path for f in client.list_artifacts(first["mlflow"]["parent_run_id"], "report")}
    assert logged == {"report/scores.md", "report/scores.json", "report/scores.png"}
    with temporary_settings({PREFECT_API_URL: prefect_services.api_url}), get_client(sync_client=True) as prefect:
        table = prefect.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=["mimovl-kind-test-scores"])))
        assert [a.type for a in table] == ["table"]

    again = run_flow(prefect_services, tmp_path)
    assert [s["status"] for s in again["steps"]] == ["cached", "cached"]
    cached = again["steps"][1]
    assert (cached["step_key"], cached["output_uri"], cached["source_run_id"]) == (
        scores["step_key"], scores["output_uri"], scores["run_id"])
    assert client.get_run(cached["run_id"]).data.tags["mimovl.status"] == "cached"


def storage_of(runs: Path) -> dict:
    """The composed storage section of these runs (the store the steps published to)."""
    from flows.plan import build_plan

    return build_plan("kind_test", overrides(runs)).storage
