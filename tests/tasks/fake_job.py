"""A job program for the launcher tests: `python -m tests.tasks.fake_job --config job.yaml --result result.json`.

The YAML config says what to do (`mode`) after printing `lines` numbered lines ("line 0000", ...), each
also to stderr when `stderr: true` (stdout and stderr alternate):
  ok             write a valid result.json and exit 0
  fail           exit with `exit_code`
  no_result      exit 0 without writing result.json
  bad_json       exit 0 with a result.json that is not JSON
  bad_status     exit 0 with a well-formed result.json whose status is "failed"
  hang           start two sleeping child processes (the launcher's grandchildren), the second in a
                 session of its own (as torchrun starts its workers), write their pids to
                 `child_pid_file`, print "hanging", then sleep; with `ignore_sigterm: true` all ignore SIGTERM
  wait_for_file  print "waiting", wait until `release_file` exists (the test creates it when it sees
                 "waiting": only works if output is streamed live), print "released", then as `ok`
  distributed    torch.distributed (gloo) init, all_reduce of rank + 1 over all ranks; rank 0 writes
                 result.json with metrics allreduce_sum and world_size
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def ok_result(metrics: dict[str, float]) -> dict:
    return {"status": "ok", "output_uri": "file:///tmp/fake-checkpoint", "output_digest": "sha256:" + "0" * 64,
            "tokens_seen": 1234, "wall_time_s": 0.5, "metrics": metrics, "resumed": False, "job": "fake"}


def write_json(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--local_rank", type=int, default=None)  # passed by the deepspeed runner
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    mode = cfg["mode"]

    for i in range(cfg.get("lines", 0)):
        stream = sys.stderr if cfg.get("stderr") and i % 2 else sys.stdout
        print(f"line {i:04d}", file=stream, flush=True)

    if mode == "ok":
        write_json(args.result, ok_result({"loss": 0.25, "lines": float(cfg.get("lines", 0))}))
        return 0
    if mode == "fail":
        return int(cfg["exit_code"])
    if mode == "no_result":
        return 0
    if mode == "bad_json":
        Path(args.result).write_text('{"status": "ok", ', encoding="utf-8")
        return 0
    if mode == "bad_status":
        write_json(args.result, {**ok_result({}), "status": "failed"})
        return 0
    if mode == "hang":
        if cfg.get("ignore_sigterm"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child (SIG_IGN survives exec)
        sleeper = [sys.executable, "-c", "import time; time.sleep(3600)"]
        children = [subprocess.Popen(sleeper), subprocess.Popen(sleeper, start_new_session=True)]
        Path(cfg["child_pid_file"]).write_text(" ".join(str(c.pid) for c in children), encoding="utf-8")
        print("hanging", flush=True)
        time.sleep(3600)
        return 0
    if mode == "wait_for_file":
        print("waiting", flush=True)
        release = Path(cfg["release_file"])
        while not release.exists():
            time.sleep(0.05)
        print("released", flush=True)
        write_json(args.result, ok_result({}))
        return 0
    if mode == "distributed":
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        value = torch.tensor([float(rank + 1)])
        dist.all_reduce(value)
        # One write per line: under `python -u` print() writes the text and its newline separately, and the
        # ranks share the runner's output pipe, so their lines could interleave mid-line.
        sys.stdout.write(f"rank {rank}/{world} local_rank {args.local_rank} env LOCAL_RANK "
                         f"{os.environ.get('LOCAL_RANK')} all_reduce {value.item()}\n")
        sys.stdout.flush()
        if rank == 0:
            write_json(args.result, ok_result({"allreduce_sum": value.item(), "world_size": float(world)}))
        dist.barrier()
        dist.destroy_process_group()
        return 0
    raise SystemExit(f"fake_job: unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())
