"""The local services the pipeline runs on: a Prefect server, an MLflow server and a Prefect worker.

    python -m flows.services start|stop|status [OVERRIDE ...]      (`make demo-services`, `make stop`)

All bind conf/orchestration `services.host` (127.0.0.1) and keep their state under runs_dir: Prefect's
SQLite database in <runs>/prefect, MLflow's (conf/tracking) in <runs>/mlflow, logs in <runs>/logs, and
each process's PID in <runs>/pids/<name>.pid. A service whose PID file names a live process that answers
its health check is left running; `stop` stops them by PID, the worker before the servers (a worker
does not exit on one SIGTERM: it gets SIGINT, then SIGKILL after the grace period). Telemetry is off.
The tests and the pipeline benchmark start their own set on free ports with runs_dir in a temp folder.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from conf import REPO_ROOT, compose, validated
from tasks.orchestration_config import ServicesConfig, TrackingConfig
from tasks.tracking import resolved_tracking

PREFECT_SERVER, MLFLOW_SERVER, WORKER = "prefect-server", "mlflow-server", "worker"
STOP_ORDER = (WORKER, MLFLOW_SERVER, PREFECT_SERVER)
TELEMETRY_OFF = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "MLFLOW_DISABLE_TELEMETRY": "true"}
# The MLflow server only serves the UI and the tracking API here: no background job runners (they start
# seven consumer processes).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class ServiceError(RuntimeError):
    """A service could not be started or a CLI command failed; the message has its last log lines."""


@dataclass(frozen=True)
class DeploymentRun:
    flow_run_id: str
    returncode: int
    output: str


@dataclass
class LocalServices:
    cfg: ServicesConfig
    tracking: TrackingConfig     # local paths absolute
    runs_dir: Path               # absolute
    summaries_dir: str           # orchestration.summaries_dir: where flow runs write their summaries

    @classmethod
    def from_config(cls, overrides: list[str] | None = None) -> LocalServices:
        cfg = OmegaConf.to_container(compose(list(overrides or [])), resolve=True)
        services = validated(ServicesConfig, cfg["orchestration"]["services"], "orchestration.services")
        tracking = resolved_tracking(validated(TrackingConfig, cfg["tracking"], "tracking"))
        runs_dir = Path(cfg["runs_dir"])
        return cls(services, tracking, (runs_dir if runs_dir.is_absolute() else REPO_ROOT / runs_dir).resolve(),
                   cfg["orchestration"]["summaries_dir"])

    @classmethod
    def on_free_ports(cls, runs_dir: Path, overrides: list[str] | None = None) -> LocalServices:
        """A set of its own (tests, benchmarks): state under `runs_dir`, servers on free ports."""
        from storage.net import free_port

        return cls.from_config([f"runs_dir={runs_dir}", f"orchestration.services.prefect_port={free_port()}",
                                f"orchestration.services.mlflow_port={free_port()}", *(overrides or [])])

    def summary_path(self, flow_run_id: str, runs_dir: Path | None = None) -> Path:
        """The summary a flow run of the pipeline writes (flows/pipeline.py), under the pipeline's
        runs_dir (default: this set's)."""
        return (runs_dir or self.runs_dir) / self.summaries_dir / f"{flow_run_id}.json"

    # ------------------------------------------------------------------------------------ addresses

    @property
    def prefect_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.mlflow_port}"

    def path(self, sub: str) -> Path:
        return self.runs_dir / sub

    def pid_file(self, name: str) -> Path:
        return self.path(self.cfg.pids_dir) / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.path(self.cfg.logs_dir) / f"{name}.log"

    def env(self) -> dict[str, str]:
        """The environment of every Prefect CLI call, server and worker (and so of the flow runs)."""
        env = {**os.environ, **TELEMETRY_OFF}
        env.update(PREFECT_HOME=str(self.path(self.cfg.prefect_home)), PREFECT_API_URL=self.api_url,
                   PREFECT_WORKER_QUERY_SECONDS=str(self.cfg.worker_query_s), PWD=str(REPO_ROOT))
        return env

    # ------------------------------------------------------------------------------------ processes

    def pid(self, name: str) -> int | None:
        """The PID of a running service `name` (its PID file names a live process), else None."""
        path = self.pid_file(name)
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _running(pid) else None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start `argv` in a session of its own (so `stop` reaches its children), output to its log."""
        log_path = self.log_file(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**self.env(), **(env or {})}, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_healthy(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                raise ServiceError(f"{name} exited while starting; {self._tail(name)}")
            if _healthy(url):
                return
            time.sleep(self.cfg.health_poll_s)
        raise ServiceError(f"{name} not healthy at {url} after {self.cfg.start_timeout_s} s; {self._tail(name)}")

    def _tail(self, name: str, lines: int = 20) -> str:
        try:
            text = self.log_file(name).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return "no log"
        return f"last lines of {self.log_file(name)}:\n" + "\n".join(text)

    # ------------------------------------------------------------------------------------ services

    def _already_running(self, name: str, health_url: str, port_key: str) -> bool:
        """True when our `name` (its PID file names a live process) answers `health_url`; a server there
        that is not ours is an error naming the port setting to change."""
        if not _healthy(health_url):
            return False
        if self.pid(name) is not None:
            return True
        raise ServiceError(f"another server already answers at {health_url} (not our {name}: no PID in "
                           f"{self.pid_file(name)}); stop it or set orchestration.services.{port_key}")

    def start_prefect_server(self) -> bool:
        """Start the Prefect server unless it runs; True when this call started it."""
        health = f"{self.api_url}/health"
        if self._already_running(PREFECT_SERVER, health, "prefect_port"):
            return False
        self.path(self.cfg.prefect_home).mkdir(parents=True, exist_ok=True)
        self._spawn(PREFECT_SERVER, [sys.executable, "-m", "prefect", "server", "start", "--host", self.cfg.host,
                                     "--port", str(self.cfg.prefect_port)])
        self._wait_healthy(PREFECT_SERVER, health)
        return True

    def start_mlflow_server(self) -> bool:
        """Start an MLflow server on the tracking config's database and artifacts, unless it runs."""
        health = f"{self.mlflow_url}/health"
        if self._already_running(MLFLOW_SERVER, health, "mlflow_port"):
            return False
        uri = self.tracking.tracking_uri
        if not uri.startswith("sqlite:///"):
            raise ServiceError(f"tracking.tracking_uri {uri} is not a local SQLite database: nothing to serve here")
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mlflow", "server", "--host", self.cfg.host, "--port", str(self.cfg.mlflow_port),
                "--workers", str(self.cfg.mlflow_workers), "--backend-store-uri", uri]
        if self.tracking.artifact_location:
            argv += ["--artifacts-destination", self.tracking.artifact_location]
        self._spawn(MLFLOW_SERVER, argv, MLFLOW_SERVER_ENV)
        self._wait_healthy(MLFLOW_SERVER, health)
        return True

    def prefect(self, *args: str, check: bool = True, timeout_s: float | None = None) -> subprocess.CompletedProcess:
        """Run the Prefect CLI against this server, in the repository root."""
        proc = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO_ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout_s)
        if check and proc.returncode != 0:
            raise ServiceError(f"prefect {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def create_work_pool(self) -> None:
        if self.prefect("work-pool", "inspect", self.cfg.work_pool, check=False).returncode == 0:
            return
        self.prefect("work-pool", "create", self.cfg.work_pool, "--type", "process")

    def deploy(self) -> None:
        """`prefect --no-prompt deploy --all` with prefect.yaml of the repository root."""
        self.prefect("--no-prompt", "deploy", "--all")

    def start_worker(self) -> bool:
        """Start a process worker on the work pool unless one of ours runs; True when started."""
        if self.pid(WORKER) is not None:
            return False
        self._spawn(WORKER, [sys.executable, "-m", "prefect", "worker", "start", "--pool", self.cfg.work_pool,
                             "--type", "process"])
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while time.monotonic() < deadline:  # ready once it has polled the server
            if self.pid(WORKER) is None:
                raise ServiceError(f"the worker exited while starting; {self._tail(WORKER)}")
            if "started" in self.log_file(WORKER).read_text(encoding="utf-8", errors="replace").split("===")[-1]:
                return True
            time.sleep(self.cfg.health_poll_s)
        raise ServiceError(f"the worker did not start in {self.cfg.start_timeout_s} s; {self._tail(WORKER)}")

    def run_deployment(self, parameters: dict | None = None, watch: bool = True, timeout_s: float | None = None,
                       deployment: str | None = None, on_line: Callable[[str], None] | None = None) -> DeploymentRun:
        """`prefect deployment run <deployment> [--params JSON] [--watch]`: the flow run's id and the CLI's
        exit code and output (with --watch, non-zero unless the run completed); lines go to `on_line` as
        they come."""
        args = ["deployment", "run", deployment or self.cfg.deployment]
        if parameters is not None:
            args += ["--params", json.dumps(parameters)]
        if watch:
            args.append("--watch")
        proc = subprocess.Popen([sys.executable, "-m", "prefect", *args], cwd=REPO_ROOT, env=self.env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer is not None:
            timer.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            returncode = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
        output = "".join(lines)
        match = re.search(r"flow-run/([0-9a-f-]{36})", output)
        if match is None:
            raise ServiceError(f"prefect {' '.join(args)} created no flow run ({returncode}):\n{output}")
        return DeploymentRun(match.group(1), returncode, output)

    def start_all(self, mlflow_ui: bool = True) -> dict[str, bool]:
        """Servers (the MLflow UI unless `mlflow_ui` is False), work pool, deployments, worker;
        {service: True when this call started it}."""
        started = {PREFECT_SERVER: self.start_prefect_server()}
        if mlflow_ui:
            started[MLFLOW_SERVER] = self.start_mlflow_server()
        self.create_work_pool()
        self.deploy()
        started[WORKER] = self.start_worker()
        return started

    def stop(self, name: str) -> bool:
        """Stop service `name` by its PID (its whole process group); True when one was running."""
        pid = self.pid(name)
        if pid is None:
            self.pid_file(name).unlink(missing_ok=True)  # a stale file
            return False
        # The worker ignores the first SIGTERM; SIGINT stops it (and its flow runs' processes) cleanly.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            _signal_group(pid, sig)
            if _wait_gone(pid, self.cfg.stop_grace_s / 2 if sig != signal.SIGKILL else self.cfg.stop_grace_s):
                break
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def stop_all(self) -> dict[str, bool]:
        return {name: self.stop(name) for name in STOP_ORDER}

    def status(self) -> dict[str, int | None]:
        return {name: self.pid(name) for name in STOP_ORDER}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the service leads its own session: its group id is its pid
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _running(pid: int) -> bool:
    """A live process has this pid; a zombie (exited, not yet reaped by its parent) is not running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("start", "stop", "status"):
        print("usage: python -m flows.services start|stop|status [OVERRIDE ...]", file=sys.stderr)
        return 2
    services = LocalServices.from_config(argv[1:])
    if argv[0] == "start":
        started = services.start_all()
        print(json.dumps({"started": started, "prefect_ui": services.prefect_url, "mlflow_ui": services.mlflow_url}))
    elif argv[0] == "stop":
        print(json.dumps({"stopped": services.stop_all()}))
    else:
        print(json.dumps(services.status()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
