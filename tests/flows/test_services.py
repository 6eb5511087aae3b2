"""The local services of `make demo` refuse a port held by someone else and clean up stale PID files."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows.services import MLFLOW_SERVER, PREFECT_SERVER, WORKER, LocalServices, ServiceError
from storage.net import free_port


class AlwaysHealthy(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def foreign_server():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), AlwaysHealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def services(tmp_path, prefect_port: int, mlflow_port: int) -> LocalServices:
    return LocalServices.from_config([f"runs_dir={tmp_path}", f"orchestration.services.prefect_port={prefect_port}",
                                      f"orchestration.services.mlflow_port={mlflow_port}"])


def test_a_server_that_is_not_ours_is_refused_naming_the_port_setting(tmp_path, foreign_server):
    local = services(tmp_path, foreign_server, foreign_server)
    with pytest.raises(ServiceError, match="orchestration.services.prefect_port"):
        local.start_prefect_server()
    with pytest.raises(ServiceError, match="orchestration.services.mlflow_port"):
        local.start_mlflow_server()
    assert local.status() == {WORKER: None, MLFLOW_SERVER: None, PREFECT_SERVER: None}


def test_stop_removes_stale_pid_files_and_reports_nothing_stopped(tmp_path):
    local = services(tmp_path, free_port(), free_port())
    for name in (WORKER, MLFLOW_SERVER, PREFECT_SERVER):
        local.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        local.pid_file(name).write_text("999999999\n")  # no such process
    assert local.stop_all() == {WORKER: False, MLFLOW_SERVER: False, PREFECT_SERVER: False}
    assert not any(local.pid_file(name).exists() for name in (WORKER, MLFLOW_SERVER, PREFECT_SERVER))


def test_services_use_the_configured_host_and_state_folder_with_telemetry_off(tmp_path):
    local = services(tmp_path, 4200, 5000)
    assert local.prefect_url == "http://127.0.0.1:4200" and local.mlflow_url == "http://127.0.0.1:5000"
    env = local.env()
    assert env["DO_NOT_TRACK"] == "true" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
