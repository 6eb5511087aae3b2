"""Orchestration overhead of the pipeline: `python -m bench.pipeline_overhead [OVERRIDE ...]`.

Starts a Prefect server and a process worker on free 127.0.0.1 ports with all state in a temp folder
(not timed), deploys prefect.yaml, then times one `prefect deployment run mimovl/full-pipeline --watch`
with conf/bench/pipeline_overhead.yaml's pipeline (smoke) from scratch (every step runs). Prints JSON:
  total_wall_s          the deployment run, from the CLI call to its return (worker pick-up, flow process,
                        composition, data preparation, MLflow, the jobs, the artifact)
  jobs_wall_s           the sum of the jobs' own wall times: each step job's result.json `wall_time_s` (its
                        process from start to result, imports included) and the data generator's run
  jobs_process_s        the same with each step job timed from launch to exit by the launcher (+ the
                        runner's processes when there is one, and teardown)
  overhead_fraction     1 - jobs_wall_s / total_wall_s (target <= 0.15)
  process_overhead_fraction  1 - jobs_process_s / total_wall_s: what the orchestration itself adds
  cached_rerun_wall_s   the same deployment run again: every step cached, no job launched
  cached_rerun_ratio    cached_rerun_wall_s / total_wall_s (target < 0.20)
Extra arguments are config overrides for the pipeline (e.g. launcher.runner=deepspeed: every job through the runner).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from conf import load_group
from flows.services import LocalServices


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    cfg = load_group("bench", "pipeline_overhead")
    with tempfile.TemporaryDirectory(prefix="mimovl-bench-") as tmp:
        root = Path(tmp)
        services = LocalServices.on_free_ports(root, [f"orchestration.services.worker_query_s={cfg.worker_query_s}"])
        try:
            services.start_all(mlflow_ui=False)
            runs = root / "runs"
            overrides = [f"runs_dir={runs}", f"storage.root=file://{runs}/store",
                         f"+launcher.env.OMP_NUM_THREADS={cfg.job_torch_threads}", *extra]
            parameters = {"pipeline": cfg.pipeline, "overrides": overrides}
            started = time.perf_counter()
            run = services.run_deployment(parameters)
            total = time.perf_counter() - started
            started = time.perf_counter()
            rerun = services.run_deployment(parameters)
            rerun_s = time.perf_counter() - started
        finally:
            services.stop_all()
        summary_path = services.summary_path(run.flow_run_id, runs)
        rerun_path = services.summary_path(rerun.flow_run_id, runs)
        for done, path in ((run, summary_path), (rerun, rerun_path)):
            if done.returncode != 0 or not path.is_file():
                print(done.output, file=sys.stderr)
                return 1
        summary = json.loads(summary_path.read_text())
        rerun_statuses = [s["status"] for s in json.loads(rerun_path.read_text())["steps"]]
    jobs, processes = summary["jobs_wall_time_s"], summary["jobs_process_s"]
    print(json.dumps({
        "pipeline": cfg.pipeline,
        "overrides": extra,
        "job_torch_threads": cfg.job_torch_threads,
        "data_prep_s": round(summary["data"]["wall_time_s"], 2),
        "steps": {s["step"]: {"status": s["status"], "job_wall_s": round(s["job_wall_time_s"], 2),
                              "job_process_s": round(s["job_process_s"], 2), "step_s": round(s["step_s"], 2)}
                  for s in summary["steps"]},
        "total_wall_s": round(total, 2),
        "flow_wall_s": round(summary["flow_wall_time_s"], 2),
        "jobs_wall_s": round(jobs, 2),
        "jobs_process_s": round(processes, 2),
        "jobs_to_total_ratio": round(jobs / total, 3),
        "overhead_fraction": round(1 - jobs / total, 3),
        "process_overhead_fraction": round(1 - processes / total, 3),
        "target_overhead_fraction": 0.15,
        "cached_rerun_wall_s": round(rerun_s, 2),
        "cached_rerun_statuses": rerun_statuses,
        "cached_rerun_ratio": round(rerun_s / total, 3),
        "target_cached_rerun_ratio": 0.20,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
