"""A real Prefect server and process worker on 127.0.0.1 (free ports) for the whole session, with the
repository's prefect.yaml deployed; all state (Prefect's database, runs, MLflow, store) in a temp folder."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from flows.services import LocalServices
from tasks.launcher import free_port



@pytest.fixture(scope="session")
def prefect_services(tmp_path_factory) -> Iterator[LocalServices]:
    root = tmp_path_factory.mktemp("services")
    services = LocalServices.from_config([
        f"runs_dir={root}",
        f"orchestration.services.prefect_port={free_port()}",
        f"orchestration.services.mlflow_port={free_port()}",
        "orchestration.services.worker_query_s=1",
    ])
    try:
        services.start_prefect_server()
        services.create_work_pool()
        services.deploy()
        services.start_worker()
        yield services
    finally:
        services.stop_all()
