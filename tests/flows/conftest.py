"""A real Prefect server and process worker on 127.0.0.1 (free ports) for the whole session, with the
repository's prefect.yaml deployed; all state (Prefect's database, runs, MLflow, store) in a temp folder."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from flows.services import LocalServices


@pytest.fixture(scope="session")
def prefect_services(tmp_path_factory) -> Iterator[LocalServices]:
    root = tmp_path_factory.mktemp("services")
    services = LocalServices.on_free_ports(root, ["orchestration.services.worker_query_s=1"])
    try:
        services.start_all(mlflow_ui=False)
        yield services
    finally:
        services.stop_all()
