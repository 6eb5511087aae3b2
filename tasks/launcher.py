"""Launch one job program and collect its result.

A job is a command line (DESIGN.md, "The two halves and their contract"):

    deepspeed [launcher args] --module training.pretrain --config step.yaml --result result.json

The launcher builds that command from conf/launcher (`local`: N processes on this node through the
DeepSpeed runner, torchrun or a single plain Python process; `multinode`: DeepSpeed's multi-node runner
with a hostfile and pdsh, OpenMPI or Slurm), runs it in its own process group, streams its output lines
into the logger `mimovl.job` (and optionally a log file and a callback) as they come, enforces a
timeout, and returns the job's parsed `result.json`.

Failures come in two kinds, so an orchestrator can retry the right one:
- `LaunchError`: the command could not be started at all (interpreter missing, not executable, ...).
- `JobFailed`: the job ran and failed — non-zero exit, timeout (`JobTimeout`), cancellation
  (`JobCancelled`), or exit 0 with a missing or malformed result.json. The message carries the
  command, the exit code and the job's last lines.

result.json is a JSON object with at least these keys (extra keys are kept in `JobResult.raw`):
    status         "ok" (anything else after exit 0 is a failure)
    output_uri     store URI of the produced checkpoint, or null for jobs that produce none
    output_digest  digest of that checkpoint's manifest, or null
    tokens_seen    int >= 0
    wall_time_s    float >= 0
    metrics        {name: number} summary metrics
    resumed        true when the job restarted from its own earlier checkpoint (in its work_dir)

This module is plain Python (no Prefect, no torch) so it serves a shell, a test and a Prefect task alike.
Run as a script (`python tasks/launcher.py MODULE ARGS...`) it runs MODULE like `python -m`: DeepSpeed's
Slurm backend (0.19.8) drops `--module` and starts `python -u SCRIPT`, so the Slurm command names this
file as the script.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and (
        os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__))):
    # Run as a script (under Slurm): this file's folder must not shadow top-level modules.
    sys.path.pop(0)

import json
import logging
import math
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import MISSING

JOB_LOGGER = logging.getLogger("mimovl.job")
log = logging.getLogger("mimovl.launcher")

RUNNERS = ("auto", "python", "torchrun", "deepspeed")
MULTINODE_LAUNCHERS = ("pdsh", "openmpi", "slurm")
RESULT_STATUS_OK = "ok"
RESULT_KEYS = ("status", "output_uri", "output_digest", "tokens_seen", "wall_time_s", "metrics", "resumed")

_LINE, _EOF, _EXIT, _CANCEL = "line", "eof", "exit", "cancel"


# ---------------------------------------------------------------------------------------------------------
# Config


def _config_error(where: str, key: str, message: str) -> Exception:
    from conf import ConfigError

    return ConfigError(f"{where}.{key}: {message}")


@dataclass
class MultinodeConfig:
    """DeepSpeed multi-node runner settings (flags of deepspeed/launcher/runner.py)."""

    hostfile: str = MISSING  # MPI-style hostfile: "worker-0 slots=8" per line
    launcher: str = MISSING  # pdsh | openmpi | slurm
    launcher_args: str = MISSING  # extra backend arguments, one string (e.g. "--partition gpu")
    num_nodes: int = MISSING  # the first N hosts of the hostfile; -1: all of them
    include: str = MISSING  # NODE_SPEC[@NODE_SPEC ...], e.g. "worker-0@worker-1:0,2"; "" for none
    exclude: str = MISSING  # same syntax; "" for none
    ssh_port: Optional[int] = MISSING  # ssh port of the workers (pdsh and the ssh check); null: ssh's default


@dataclass
class LauncherConfig:
    """conf/launcher/<name>.yaml."""

    name: str = MISSING
    runner: str = MISSING  # auto | python (one process, no launcher) | torchrun | deepspeed
    python: Optional[str] = MISSING  # interpreter for the runner and the job; null: the current one
    nproc_per_node: int = MISSING  # processes (accelerators) per node; -1: all (deepspeed only)
    master_addr: Optional[str] = MISSING  # rendezvous host; null (multinode): found by ssh on the first host
    master_port: int = MISSING  # rendezvous port; 0: a free port on this machine (single node only)
    runner_args: list[str] = MISSING  # extra arguments to the runner, before the module
    env: dict[str, str] = MISSING  # extra environment for the job (exported to every node)
    timeout_s: Optional[float] = MISSING  # wall-clock limit of a job; null: none
    kill_grace_s: float = MISSING  # SIGTERM to the job's process group, then SIGKILL after this long
    tail_lines: int = MISSING  # how many of the job's last lines a failure message carries
    multinode: Optional[MultinodeConfig] = MISSING  # null: this node only

    @property
    def resolved_runner(self) -> str:
        """The runner `auto` stands for: one process on this node runs without a runner (python: the
        DeepSpeed runner would only add two processes that import DeepSpeed); several processes, every
        accelerator (-1) or several nodes go through the DeepSpeed runner."""
        if self.runner != "auto":
            return self.runner
        return "python" if self.nproc_per_node == 1 and self.multinode is None else "deepspeed"

    def check(self, where: str = "launcher") -> None:
        if self.runner not in RUNNERS:
            raise _config_error(where, "runner", f"'{self.runner}' is not one of {list(RUNNERS)}")
        runner = self.resolved_runner
        if runner == "python" and self.nproc_per_node != 1:
            raise _config_error(where, "nproc_per_node", "runner 'python' starts exactly one process (1)")
        if runner == "torchrun" and self.nproc_per_node < 1:
            raise _config_error(where, "nproc_per_node", f"must be >= 1 for torchrun, got {self.nproc_per_node}")
        if runner == "deepspeed" and not (self.nproc_per_node >= 1 or self.nproc_per_node == -1):
            raise _config_error(where, "nproc_per_node", f"must be >= 1 or -1 (all), got {self.nproc_per_node}")
        if not 0 <= self.master_port <= 65535:
            raise _config_error(where, "master_port", f"must be in [0, 65535], got {self.master_port}")
        if runner != "deepspeed" and not self.master_addr:
            raise _config_error(where, "master_addr", f"runner '{runner}' needs a rendezvous address")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise _config_error(where, "timeout_s", f"must be > 0 or null, got {self.timeout_s}")
        if not self.kill_grace_s > 0:
            raise _config_error(where, "kill_grace_s", f"must be > 0, got {self.kill_grace_s}")
        if self.tail_lines < 1:
            raise _config_error(where, "tail_lines", f"must be >= 1, got {self.tail_lines}")
        if self.multinode is not None:
            self._check_multinode(where)

    def _check_multinode(self, where: str) -> None:
        mn = self.multinode
        assert mn is not None
        if self.resolved_runner != "deepspeed":
            raise _config_error(where, "runner", "multinode jobs run through the deepspeed runner")
        if self.master_port == 0:
            raise _config_error(where, "master_port", "a free local port means nothing to other nodes; set one")
        if mn.launcher not in MULTINODE_LAUNCHERS:
            raise _config_error(where, "multinode.launcher",
                                f"'{mn.launcher}' is not one of {list(MULTINODE_LAUNCHERS)}")
        if not mn.hostfile:
            raise _config_error(where, "multinode.hostfile", "a multinode job needs a hostfile")
        if not (mn.num_nodes >= 1 or mn.num_nodes == -1):
            raise _config_error(where, "multinode.num_nodes", f"must be >= 1 or -1 (all), got {mn.num_nodes}")
        if mn.include and mn.exclude:
            raise _config_error(where, "multinode.include", "include and exclude are mutually exclusive")
        # The runner refuses --num_nodes/--num_gpus together with --include/--exclude.
        if (mn.include or mn.exclude) and (mn.num_nodes != -1 or self.nproc_per_node != -1):
            raise _config_error(where, "multinode.include",
                                "include/exclude need num_nodes: -1 and nproc_per_node: -1")
        # DeepSpeed's OpenMPI backend takes the whole hostfile: no filters, no limits.
        if mn.launcher == "openmpi" and (mn.include or mn.exclude or mn.num_nodes != -1
                                         or self.nproc_per_node != -1):
            raise _config_error(where, "multinode.launcher",
                                "openmpi uses the whole hostfile: set num_nodes: -1, nproc_per_node: -1 "
                                "and no include/exclude")
        if mn.ssh_port is not None and not 1 <= mn.ssh_port <= 65535:
            raise _config_error(where, "multinode.ssh_port", f"must be in [1, 65535], got {mn.ssh_port}")


def launcher_config(section: Any, where: str = "launcher") -> LauncherConfig:
    """Validate the `launcher` section of a composed config (a DictConfig or a plain dict)."""
    from conf import validated

    return validated(LauncherConfig, section, where)


def load_launcher_config(name: str, overrides: dict[str, Any] | None = None) -> LauncherConfig:
    """Read conf/launcher/<name>.yaml, merge `overrides` (nested dict) onto it and validate."""
    from omegaconf import OmegaConf

    from conf import load_group

    cfg = load_group("launcher", name)
    if overrides:
        cfg = OmegaConf.merge(cfg, overrides)
    return launcher_config(cfg, f"launcher={name}")


# ---------------------------------------------------------------------------------------------------------
# Per-step resources: a step's launcher, its world size and its device


def with_resources(base: LauncherConfig, *, launcher: str | None, runner: str | None, nproc_per_node: int | None,
                   nodes: int | None, where: str) -> LauncherConfig:
    """`base` (or conf/launcher/<launcher>.yaml) with the step's runner, processes and nodes in place of
    its own (null: keep), checked."""
    import dataclasses

    cfg = base if launcher is None else load_launcher_config(launcher)
    changes: dict[str, Any] = {}
    if runner is not None:
        changes["runner"] = runner
    if nproc_per_node is not None:
        changes["nproc_per_node"] = nproc_per_node
    if nodes is not None:
        if cfg.multinode is None and nodes != 1:
            raise _config_error(where, "nodes", f"launcher '{cfg.name}' runs on this node only (nodes: 1); "
                                                "name a multi-node launcher (resources.launcher: multinode)")
        if cfg.multinode is not None:
            changes["multinode"] = dataclasses.replace(cfg.multinode, num_nodes=nodes)
    cfg = dataclasses.replace(cfg, **changes)
    cfg.check(where)
    return cfg


def on_cpu(cfg: LauncherConfig) -> LauncherConfig:
    """The launcher with CUDA_VISIBLE_DEVICES="" in the job's environment: a step keyed for the CPU runs
    on the CPU even on a GPU node."""
    import dataclasses

    return dataclasses.replace(cfg, env={**cfg.env, "CUDA_VISIBLE_DEVICES": ""})


def resolve_device(cfg: LauncherConfig, device: str, where: str) -> str:
    """`auto` -> the device the job will use: cuda on a multi-node launcher (DeepSpeed's runner places
    ranks on GPU slots), else cuda when this node has one the job can see. `cuda` on a local launcher
    without one is an error naming `where`.device."""
    if device == "auto":
        return "cuda" if cfg.multinode is not None else _local_device(cfg)
    if device == "cuda" and cfg.multinode is None and _local_device(cfg) != "cuda":
        raise _config_error(where, "device", "cuda, but the job could see no CUDA device on this node")
    return device


def _local_device(cfg: LauncherConfig) -> str:
    visible = cfg.env.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible in ("", "-1"):  # the job's environment hides every GPU
        return "cpu"
    if not list(Path("/dev").glob("nvidia[0-9]*")):  # no NVIDIA device: no need to import torch to know
        return "cpu"
    import torch  # the job's own test (training/pretrain.py: torch.cuda.is_available())

    return "cuda" if torch.cuda.is_available() else "cpu"


def world_size(cfg: LauncherConfig, where: str = "launcher") -> int:
    """How many processes the job runs as: nproc_per_node on this node (-1: its CUDA devices), or over
    the multi-node hostfile's nodes and slots as DeepSpeed's runner counts them (num_nodes, include,
    exclude). The hostfile is read only when a count is left to it (-1 or a filter)."""
    if cfg.multinode is None:
        if cfg.nproc_per_node != -1:
            return cfg.nproc_per_node
        if _local_device(cfg) != "cuda":
            raise _config_error(where, "nproc_per_node", "-1 (every accelerator), but this node has no CUDA device")
        import torch

        return torch.cuda.device_count()
    mn = cfg.multinode
    if mn.num_nodes != -1 and cfg.nproc_per_node != -1 and not (mn.include or mn.exclude):
        return mn.num_nodes * cfg.nproc_per_node
    slots = {host: list(range(n)) for host, n in _hostfile_slots(mn.hostfile, where).items()}
    if mn.include:
        picked = _node_spec(mn.include)
        slots = {h: (s if picked[h] is None else [i for i in s if i in picked[h]])
                 for h, s in slots.items() if h in picked}
    if mn.exclude:
        dropped = _node_spec(mn.exclude)
        slots = {h: ([] if dropped[h] is None else [i for i in s if i not in dropped[h]]) if h in dropped else s
                 for h, s in slots.items()}
    counts = [len(s) for s in slots.values() if s]
    if mn.num_nodes != -1:
        if mn.num_nodes > len(counts):
            raise _config_error(where, "multinode.num_nodes", f"{mn.num_nodes} nodes, but {mn.hostfile} "
                                                              f"gives {len(counts)}")
        counts = counts[:mn.num_nodes]
    return sum(counts) if cfg.nproc_per_node == -1 else len(counts) * cfg.nproc_per_node


def _hostfile_slots(hostfile: str, where: str) -> dict[str, int]:
    """host -> slots of an MPI-style hostfile ("worker-0 slots=8"), in file order."""
    try:
        text = Path(hostfile).read_text(encoding="utf-8")
    except OSError as exc:
        raise _config_error(where, "multinode.hostfile", f"cannot read {hostfile} to count the job's processes "
                                                         f"(the step key holds its world size): {exc}") from None
    hosts: dict[str, int] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, rest = line.partition(" ")
        if not rest.strip().startswith("slots="):
            raise _config_error(where, "multinode.hostfile", f"{hostfile}: expected 'HOST slots=N', got {line!r}")
        hosts[host] = int(rest.strip()[len("slots="):])
    return hosts


def _node_spec(spec: str) -> dict[str, list[int] | None]:
    """DeepSpeed's NODE_SPEC[@NODE_SPEC ...] ("worker-0@worker-1:0,2") -> host -> slots (None: all)."""
    nodes: dict[str, list[int] | None] = {}
    for part in spec.split("@"):
        host, _, slots = part.partition(":")
        nodes[host] = [int(s) for s in slots.split(",")] if slots else None
    return nodes


# ---------------------------------------------------------------------------------------------------------
# Command


@dataclass(frozen=True)
class JobCommand:
    """What to start: argv, environment variables to set on top of the caller's, files to write first."""

    argv: list[str]
    env: dict[str, str]
    files: dict[Path, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return shlex.join(self.argv)


def build_command(cfg: LauncherConfig, module: str, config_path: str | Path,
                  result_path: str | Path) -> JobCommand:
    """The command line that runs `python -m <module> --config <config_path> --result <result_path>`
    under the configured runner."""
    python = cfg.python or sys.executable
    job_args = ["--config", str(config_path), "--result", str(result_path)]
    from storage.net import free_port  # lazily: this file also runs as a script (see _run_module_main)

    port = cfg.master_port or free_port(cfg.master_addr or "127.0.0.1")
    env = dict(cfg.env)
    env["PYTHONUNBUFFERED"] = "1"

    runner = cfg.resolved_runner
    if runner == "python":
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                   MASTER_ADDR=str(cfg.master_addr), MASTER_PORT=str(port))
        return JobCommand([python, "-u", "-m", module, *job_args], env)

    if runner == "torchrun":
        argv = [python, "-u", "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.nproc_per_node),
                "--master_addr", str(cfg.master_addr), "--master_port", str(port), *cfg.runner_args,
                "--module", module, *job_args]
        return JobCommand(argv, env)

    argv = [python, "-u", "-m", "deepspeed.launcher.runner"]
    if cfg.multinode is None:
        # --num_accelerators is the runner's alias of --num_gpus; on this node the runner always
        # rendezvouses on 127.0.0.1, so no --master_addr.
        if cfg.nproc_per_node != -1:
            argv += ["--num_accelerators", str(cfg.nproc_per_node)]
        argv += ["--master_port", str(port), *cfg.runner_args, "--module", module, *job_args]
        return JobCommand(argv, env)

    mn = cfg.multinode
    files: dict[Path, str] = {}
    if cfg.env:
        # The runner forwards to the other nodes only variables named MLFLOW*, PYTHON*, NCCL*, ...
        # plus those in its env file (DS_ENV_FILE): put the configured ones there.
        env_file = Path(result_path).resolve().with_name(Path(result_path).name + ".deepspeed_env")
        files[env_file] = "".join(f"{k}={v}\n" for k, v in cfg.env.items())
        env["DS_ENV_FILE"] = str(env_file)
    argv += ["--hostfile", mn.hostfile, "--launcher", mn.launcher]
    if mn.launcher_args:
        argv += ["--launcher_args", mn.launcher_args]
    if cfg.master_addr:
        argv += ["--master_addr", cfg.master_addr]
    argv += ["--master_port", str(port)]
    if mn.num_nodes != -1:
        argv += ["--num_nodes", str(mn.num_nodes)]
    if cfg.nproc_per_node != -1:
        argv += ["--num_gpus", str(cfg.nproc_per_node)]
    if mn.include:
        argv += ["--include", mn.include]
    if mn.exclude:
        argv += ["--exclude", mn.exclude]
    if mn.ssh_port is not None:
        argv += ["--ssh_port", str(mn.ssh_port)]
    argv += cfg.runner_args
    if mn.launcher == "slurm":
        argv += [str(Path(__file__).resolve()), module, *job_args]
    else:
        argv += ["--module", module, *job_args]
    return JobCommand(argv, env, files)


# ---------------------------------------------------------------------------------------------------------
# Result and errors


class LaunchError(RuntimeError):
    """The job could not be started (an infrastructure failure; retrying may help)."""


class JobFailed(RuntimeError):
    """The job ran and failed. `tail` holds its last output lines."""

    def __init__(self, reason: str, command: JobCommand, returncode: int | None, tail: list[str],
                 log_path: Path | None = None):
        self.reason = reason
        self.command = command
        self.returncode = returncode
        self.tail = tail
        self.log_path = log_path
        where = f"\nfull log: {log_path}" if log_path else ""
        super().__init__(f"{reason} (exit code {returncode})\ncommand: {command}{where}\n"
                         f"--- last {len(tail)} lines of the job ---\n" + "\n".join(tail))

    def __reduce__(self):  # picklable (Prefect stores a failed task's exception)
        return type(self), (self.reason, self.command, self.returncode, self.tail, self.log_path)


class JobTimeout(JobFailed):
    """The job ran past its timeout and was killed."""


class JobCancelled(JobFailed):
    """The job was cancelled and killed."""


@dataclass(frozen=True)
class JobResult:
    """A job's result.json (see the module docstring for its keys)."""

    status: str
    output_uri: str | None
    output_digest: str | None
    tokens_seen: int
    wall_time_s: float
    metrics: dict[str, float]
    resumed: bool
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Any) -> "JobResult":
        """Parse and check a result object; ValueError names the offending key."""
        if not isinstance(data, dict):
            raise ValueError(f"result must be a JSON object, got {type(data).__name__}")
        missing = [k for k in RESULT_KEYS if k not in data]
        if missing:
            raise ValueError(f"result is missing keys {missing}")
        if not isinstance(data["status"], str):
            raise ValueError(f"result key 'status' must be a string, got {data['status']!r}")
        for key in ("output_uri", "output_digest"):
            if data[key] is not None and not isinstance(data[key], str):
                raise ValueError(f"result key '{key}' must be a string or null, got {data[key]!r}")
        tokens = data["tokens_seen"]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"result key 'tokens_seen' must be an int >= 0, got {tokens!r}")
        wall = data["wall_time_s"]
        if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not wall >= 0:
            raise ValueError(f"result key 'wall_time_s' must be a number >= 0, got {wall!r}")
        metrics = data["metrics"]
        if not isinstance(metrics, dict):
            raise ValueError(f"result key 'metrics' must be an object, got {metrics!r}")
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"result key 'metrics.{name}' must be a number, got {value!r}")
        if not isinstance(data["resumed"], bool):
            raise ValueError(f"result key 'resumed' must be true or false, got {data['resumed']!r}")
        return cls(status=data["status"], output_uri=data["output_uri"], output_digest=data["output_digest"],
                   tokens_seen=tokens, wall_time_s=float(wall),
                   metrics={str(k): float(v) for k, v in metrics.items()}, resumed=data["resumed"], raw=dict(data))

    @classmethod
    def read(cls, path: str | Path) -> "JobResult":
        """Read result.json; ValueError (with the path) if it is missing or malformed."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"the job wrote no result file {path}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"result file {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"result file {path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {**self.raw, "status": self.status, "output_uri": self.output_uri,
                "output_digest": self.output_digest, "tokens_seen": self.tokens_seen,
                "wall_time_s": self.wall_time_s, "metrics": dict(self.metrics), "resumed": self.resumed}

    def write(self, path: str | Path) -> None:
        """Write atomically (a reader never sees half a file); for job programs."""
        write_result(path, self.to_dict())


def write_result(path: str | Path, data: dict[str, Any]) -> None:
    """Check `data` against the result schema and write it atomically to `path`."""
    JobResult.from_dict(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# Running


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live descendant of `root` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[tuple[int, str]]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return {}
    for name in entries:
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append((int(name), fields[19]))
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for pid, start_time in children.get(stack.pop(), []):
            if pid not in found:
                found[pid] = start_time
                stack.append(pid)
    return found


_RUNNING: set["RunningJob"] = set()
_RUNNING_LOCK = threading.Lock()


def cancel_all(reason: str = "cancelled") -> int:
    """Cancel every job this process is running (e.g. from a flow's cancellation hook); returns how many."""
    with _RUNNING_LOCK:
        jobs = list(_RUNNING)
    for job in jobs:
        job.cancel(reason)
    return len(jobs)


class RunningJob:
    """A started job. `wait()` streams its output and returns its result; `cancel()` is thread-safe.

    The job runs in a new session (its own process group), so stopping it reaches every process it
    started: SIGTERM to the group, SIGKILL after the grace period. Processes still holding the output
    pipe after the job's main process exits are killed too.
    """

    def __init__(self, cfg: LauncherConfig, command: JobCommand, result_path: Path | None, *,
                 log_path: Path | None, timeout_s: float | None, on_line: Callable[[str], None] | None,
                 cwd: Path | None):
        self.cfg = cfg
        self.command = command
        self.result_path = result_path
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.on_line = on_line
        self._tail: deque[str] = deque(maxlen=cfg.tail_lines)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._log_file = None
        self._finished = False
        self._seen: dict[int, str] = {}  # descendants of the job: pid -> start time

        env = {**os.environ, **command.env}
        for path, text in command.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(log_path, "a", encoding="utf-8")
            self._log_file.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {command}\n")
            self._log_file.flush()
        log.info("starting job: %s", command)
        try:
            self._proc = subprocess.Popen(
                command.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", bufsize=1,
                start_new_session=True)
        except OSError as exc:
            self._close_log()
            raise LaunchError(f"cannot start job: {exc}\ncommand: {command}") from exc
        self.pid = self._proc.pid
        self._started = time.monotonic()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        threading.Thread(target=self._read_lines, name=f"job-{self.pid}-out", daemon=True).start()
        threading.Thread(target=self._await_exit, name=f"job-{self.pid}-exit", daemon=True).start()

    # The reader and waiter threads only put events on the queue; lines are handled (logged, written,
    # passed to on_line) in the thread that calls wait(), so a caller's logging context applies.
    def _read_lines(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._events.put((_LINE, line.rstrip("\r\n")))
        self._events.put((_EOF, None))

    def _await_exit(self) -> None:
        # WNOWAIT leaves the process a zombie: its pid, which is also the process group id, cannot be
        # reused before wait() reaps it, so signalling the group stays safe until then.
        try:
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # already reaped (wait() after the caller's thread was interrupted)
            pass
        self._events.put((_EXIT, None))

    def cancel(self, reason: str = "cancelled") -> None:
        self._events.put((_CANCEL, reason))

    def _signal_tree(self, sig: signal.Signals) -> None:
        """Signal the job's process group and every descendant seen so far.

        Descendants are tracked too because some start their own session (torchrun starts each
        worker with start_new_session), which a signal to the group does not reach; remembered ones
        still get the SIGKILL after their parent has died and they were re-parented.
        """
        self._seen.update(_descendants(self.pid))
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        for pid, start_time in list(self._seen.items()):
            if _start_time(pid) != start_time:  # gone (or the pid now belongs to another process)
                del self._seen[pid]
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                del self._seen[pid]

    def _handle_line(self, line: str) -> None:
        self._tail.append(line)
        JOB_LOGGER.info(line)
        if self._log_file is not None:
            self._log_file.write(line + "\n")
            self._log_file.flush()
        if self.on_line is not None:
            self.on_line(line)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _pump(self) -> str | None:
        """Handle events until the job's main process has exited and its output is drained.
        Returns why the job was stopped ("timeout" or a cancel reason), or None if it ended by itself."""
        stopped: str | None = None
        exited = eof = False
        deadline = None if self.timeout_s is None else self._started + self.timeout_s
        while not exited:
            wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = self._events.get(timeout=wait_s)
            except queue.Empty:
                if stopped is None:  # the timeout
                    stopped = "timeout"
                    log.warning("job %s ran past its timeout of %s s; terminating it", self.pid, self.timeout_s)
                    self._signal_tree(signal.SIGTERM)
                    deadline = time.monotonic() + self.cfg.kill_grace_s
                else:  # the grace period
                    self._signal_tree(signal.SIGKILL)
                    deadline = None
                continue
            if kind == _LINE:
                self._handle_line(value)
            elif kind == _EOF:
                eof = True
            elif kind == _EXIT:
                exited = True
            elif kind == _CANCEL and stopped is None:
                stopped = value
                log.warning("cancelling job %s: %s", self.pid, value)
                self._signal_tree(signal.SIGTERM)
                deadline = time.monotonic() + self.cfg.kill_grace_s
        # The main process is gone; what is left of its group gets the grace period to close the pipe.
        deadline = time.monotonic() + self.cfg.kill_grace_s
        while not eof:
            try:
                kind, value = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if kind == _LINE:
                self._handle_line(value)
            elif kind == _EOF:
                eof = True
        self._signal_tree(signal.SIGKILL)
        if not eof:
            log.warning("job %s left processes holding its output after it exited; killed them", self.pid)
            while True:  # what the reader got before the kill
                try:
                    kind, value = self._events.get(timeout=self.cfg.kill_grace_s)
                except queue.Empty:
                    break
                if kind == _LINE:
                    self._handle_line(value)
                elif kind == _EOF:
                    break
        return stopped

    def wait(self) -> JobResult:
        """Stream the job's output until it ends; return its result or raise JobFailed."""
        assert self.result_path is not None, "a job started without a result path: use wait_exit()"
        elapsed = self.wait_exit()
        tail = list(self._tail)
        try:
            result = JobResult.read(self.result_path)
        except ValueError as exc:
            raise JobFailed(f"job exited 0 but {exc}", self.command, 0, tail, self.log_path) from None
        if result.status != RESULT_STATUS_OK:
            raise JobFailed(f"job exited 0 but its result status is '{result.status}', not "
                            f"'{RESULT_STATUS_OK}' ({self.result_path})", self.command, 0, tail,
                            self.log_path)
        log.info("job %s finished in %.1f s: %s", self.pid, elapsed, self.result_path)
        return result

    def wait_exit(self) -> float:
        """Stream the output until the job ends; its wall time if it exited 0, else raise JobFailed
        (JobTimeout, JobCancelled). For commands that write no result.json."""
        if self._finished:
            raise RuntimeError("wait() or wait_exit() was already called for this job")
        self._finished = True
        try:
            stopped = self._pump()
            returncode = self._proc.wait()
        finally:
            # Reached with the job still running only when the caller's thread was interrupted
            # (an exception from on_line, KeyboardInterrupt): do not leave the job behind.
            if self._proc.returncode is None:
                self._signal_tree(signal.SIGKILL)
                self._proc.wait()
            self._close_log()
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
        elapsed = time.monotonic() - self._started
        tail = list(self._tail)
        if stopped == "timeout":
            raise JobTimeout(f"job timed out after {self.timeout_s} s and was killed", self.command,
                             returncode, tail, self.log_path)
        if stopped is not None:
            raise JobCancelled(f"job cancelled ({stopped}) and killed", self.command, returncode, tail,
                               self.log_path)
        if returncode != 0:
            raise JobFailed(f"job failed after {elapsed:.1f} s", self.command, returncode, tail, self.log_path)
        return elapsed


def start_job(cfg: LauncherConfig, module: str, config_path: str | Path, result_path: str | Path, *,
              log_path: str | Path | None = None, timeout_s: float | None = None,
              on_line: Callable[[str], None] | None = None, cwd: str | Path | None = None) -> RunningJob:
    """Start `module` as a job under the configured runner; see `run_job`."""
    # Absolute, so they mean the same in the job's working directory.
    config_path, result_path = Path(config_path).resolve(), Path(result_path).resolve()
    if not config_path.is_file():
        raise LaunchError(f"job config {config_path} does not exist")
    result_path.parent.mkdir(parents=True, exist_ok=True)
    # A result left by an earlier run must not pass for this run's.
    result_path.unlink(missing_ok=True)
    timeout = cfg.timeout_s if timeout_s is None else timeout_s
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout_s must be a finite number > 0, got {timeout}")
    command = build_command(cfg, module, config_path, result_path)
    return RunningJob(cfg, command, result_path, log_path=None if log_path is None else Path(log_path),
                      timeout_s=timeout, on_line=on_line, cwd=None if cwd is None else Path(cwd))


def run_job(cfg: LauncherConfig, module: str, config_path: str | Path, result_path: str | Path, *,
            log_path: str | Path | None = None, timeout_s: float | None = None,
            on_line: Callable[[str], None] | None = None, cwd: str | Path | None = None) -> JobResult:
    """Run `python -m <module> --config <config_path> --result <result_path>` under the configured
    runner and return its result.

    Output lines go, as they come, to the logger `mimovl.job`, to `log_path` (appended) and to
    `on_line` (called in this thread; an exception from it kills the job and propagates).
    `timeout_s` overrides the config's. Raises LaunchError if the job cannot start, JobFailed
    (JobTimeout, JobCancelled) if it fails.
    """
    job = start_job(cfg, module, config_path, result_path, log_path=log_path, timeout_s=timeout_s,
                    on_line=on_line, cwd=cwd)
    return job.wait()


def _run_module_main(argv: list[str]) -> None:
    """`python launcher.py MODULE ARGS...` == `python -m MODULE ARGS...` (with the cwd on sys.path)."""
    import runpy

    if not argv:
        raise SystemExit("usage: python launcher.py MODULE [ARGS...]")
    sys.path.insert(0, os.getcwd())
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _run_module_main(sys.argv[1:])
