"""`make demo`: the project's main job on the tiny profile, through a real server, worker and deployment.

1. Start a Prefect server (SQLite under runs/prefect) and an MLflow server (the SQLite database and
   artifacts of conf/tracking, under runs/mlflow) on 127.0.0.1, unless they already run.
2. Create the process work pool, `prefect --no-prompt deploy --all` (prefect.yaml), start a worker.
3. `prefect deployment run mimovl/full-pipeline --watch`, then print the UI addresses and what each step
   did. A second `make demo` reuses every checkpoint (nothing is trained again).
`make stop` stops the services (flows/services.py). Overrides on the command line go to the config
(e.g. `python -m flows.demo orchestration.services.prefect_port=4300`).
"""
from __future__ import annotations

import json
import sys
import time

from flows.services import LocalServices


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    services = LocalServices.from_config(overrides)
    started = time.monotonic()
    print(f"starting the services (logs and PIDs under {services.runs_dir}) ...", flush=True)
    for name, new in services.start_all().items():
        print(f"  {name}: {'started' if new else 'already running'}", flush=True)
    print(f"Prefect UI: {services.prefect_url}\nMLflow UI:  {services.mlflow_url}", flush=True)
    print(f"running {services.cfg.deployment} ...", flush=True)
    run = services.run_deployment(on_line=lambda line: print(line, flush=True))
    summary_path = services.summary_path(run.flow_run_id)
    print()
    if summary_path.is_file():
        print(render_summary(json.loads(summary_path.read_text())))
    print(f"flow run:  {services.prefect_url}/runs/flow-run/{run.flow_run_id}")
    print(f"Prefect UI: {services.prefect_url}   MLflow UI: {services.mlflow_url}")
    print(f"CLI: export PREFECT_API_URL={services.api_url}; "
          f"prefect deployment run {services.cfg.deployment} --param pipeline=smoke --watch")
    print(f"demo took {time.monotonic() - started:.0f} s; `make stop` stops the services.")
    return run.returncode


def render_summary(summary: dict) -> str:
    lines = [f"pipeline {summary['pipeline']}: {summary['status']} in {summary['flow_wall_time_s']:.0f} s "
             f"(jobs {summary['jobs_wall_time_s']:.0f} s)",
             f"{'step':<8} {'status':<8} {'key':<12} {'job s':>6}  checkpoint"]
    for step in summary["steps"]:
        if step["status"] == "failed":
            lines.append(f"{step['step']:<8} failed   {step.get('error', '').splitlines()[0][:100]}")
            continue
        lines.append(f"{step['step']:<8} {step['status']:<8} {step['step_key'][:12]:<12} "
                     f"{step['job_wall_time_s']:>6.1f}  {step['output_uri']}")
    mlflow = summary["mlflow"]
    lines.append(f"MLflow parent run: {mlflow['parent_run_url'] or mlflow['parent_run_id']}")
    for name, why in summary["failures"].items():
        lines.append(f"failed: {name}: {why}")
    if summary.get("scores"):
        lines += ["", summary["scores"]["markdown"].rstrip(), f"plot: {summary['scores']['plot']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
