"""The job launcher: commands for every runner, streaming, failures, timeouts, a real 2-rank DeepSpeed job."""
from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conf import REPO_ROOT, ConfigError
from tasks import launcher
from tasks.launcher import (JobCancelled, JobFailed, JobResult, JobTimeout, LaunchError, build_command,
                            load_launcher_config, run_job, start_job)

FAKE_JOB = "tests.tasks.fake_job"
PY = sys.executable
DS = [PY, "-u", "-m", "deepspeed.launcher.runner"]
JOB_ARGS = ["--config", "step.yaml", "--result", "out/result.json"]


def python_cfg(**overrides):
    """The local launcher running one plain Python process, with test-sized timeouts."""
    return load_launcher_config("local", {"runner": "python", "timeout_s": 60, "kill_grace_s": 0.5, **overrides})


def multinode_cfg(multinode: dict | None = None, **overrides):
    return load_launcher_config("multinode", {"master_addr": "10.0.0.1", **overrides,
                                              "multinode": {"hostfile": "/etc/hosts.ds", **(multinode or {})}})


def write_job_config(tmp_path: Path, **cfg) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def run_fake(tmp_path: Path, cfg=None, **job_cfg):
    return run_job(cfg or python_cfg(), FAKE_JOB, write_job_config(tmp_path, **job_cfg), tmp_path / "result.json",
                   cwd=REPO_ROOT)


def wait_until_gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent or a zombie nobody reaped yet)."""
    for _ in range(200):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", ["local", "multinode"])
def test_shipped_configs_validate(name):
    cfg = load_launcher_config(name)
    assert cfg.name == name
    assert cfg.runner == {"local": "auto", "multinode": "deepspeed"}[name]
    assert (cfg.multinode is None) == (name == "local")


@pytest.mark.parametrize("nproc, runner_module", [(1, None), (2, "deepspeed.launcher.runner"),
                                                  (-1, "deepspeed.launcher.runner")])
def test_auto_runs_one_process_without_a_runner_and_more_through_deepspeed(nproc, runner_module):
    cfg = load_launcher_config("local", {"runner": "auto", "nproc_per_node": nproc})
    command = build_command(cfg, "training.pretrain", "step.yaml", "result.json")
    if runner_module is None:
        assert command.argv[1:] == ["-u", "-m", "training.pretrain", "--config", "step.yaml", "--result", "result.json"]
        assert command.env["RANK"] == "0" and command.env["WORLD_SIZE"] == "1"
    else:
        assert command.argv[1:4] == ["-u", "-m", runner_module]
        assert command.argv[-6:] == ["--module", "training.pretrain", "--config", "step.yaml", "--result", "result.json"]
        assert "RANK" not in command.env


@pytest.mark.parametrize("name, overrides, key", [
    ("local", {"runner": "mpirun"}, "runner"),
    ("local", {"runner": "python", "nproc_per_node": 2}, "nproc_per_node"),
    ("local", {"runner": "torchrun", "nproc_per_node": 0}, "nproc_per_node"),
    ("local", {"master_port": 70000}, "master_port"),
    ("local", {"kill_grace_s": 0}, "kill_grace_s"),
    ("local", {"timeout_s": -1}, "timeout_s"),
    ("local", {"nproc": 2}, "nproc"),
    ("local", {"nproc_per_node": "two"}, "nproc_per_node"),
    ("multinode", {"multinode": {"launcher": "mpich"}}, "multinode.launcher"),
    ("multinode", {"master_port": 0}, "master_port"),
    ("multinode", {"multinode": {"launcher": "openmpi", "num_nodes": 2}}, "multinode.launcher"),
    ("multinode", {"multinode": {"include": "a", "exclude": "b"}}, "multinode.include"),
    ("multinode", {"nproc_per_node": 4, "multinode": {"include": "worker-0"}}, "multinode.include"),
    ("multinode", {"runner": "torchrun", "nproc_per_node": 4}, "runner"),
])
def test_bad_config_names_the_key(name, overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_launcher_config(name, overrides)


# -------------------------------------------------------------------------------------------- commands


def test_python_command_sets_the_rendezvous_env():
    cmd = build_command(python_cfg(), "training.pretrain", "step.yaml", "out/result.json")
    assert cmd.argv == [PY, "-u", "-m", "training.pretrain", *JOB_ARGS]
    port = int(cmd.env.pop("MASTER_PORT"))
    assert 0 < port < 65536
    assert cmd.env == {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "PYTHONUNBUFFERED": "1"}


def test_torchrun_command():
    cfg = load_launcher_config("local", {"runner": "torchrun", "nproc_per_node": 2, "master_port": 29611,
                                         "env": {"OMP_NUM_THREADS": "1"}})
    cmd = build_command(cfg, "training.pretrain", "step.yaml", "out/result.json")
    assert cmd.argv == [PY, "-u", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", "29611", "--module", "training.pretrain", *JOB_ARGS]
    assert cmd.env == {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_deepspeed_local_command():
    cfg = load_launcher_config("local", {"nproc_per_node": 2, "master_port": 29612,
                                         "runner_args": ["--log_level", "warning"]})
    cmd = build_command(cfg, "training.pretrain", "step.yaml", "out/result.json")
    assert cmd.argv == DS + ["--num_accelerators", "2", "--master_port", "29612", "--log_level", "warning",
                             "--module", "training.pretrain", *JOB_ARGS]
    assert cmd.files == {}


def test_deepspeed_local_free_port_and_all_accelerators():
    cfg = load_launcher_config("local", {"nproc_per_node": -1, "master_port": 0})
    argv = build_command(cfg, "m", "c.yaml", "r.json").argv
    assert argv[:5] == DS + ["--master_port"]
    assert 0 < int(argv[5]) < 65536
    assert "--num_accelerators" not in argv


def test_multinode_pdsh_command():
    cfg = multinode_cfg({"num_nodes": 2, "ssh_port": 2222, "launcher_args": "-R ssh"}, nproc_per_node=8)
    cmd = build_command(cfg, "training.pretrain", "step.yaml", "out/result.json")
    assert cmd.argv == DS + ["--hostfile", "/etc/hosts.ds", "--launcher", "pdsh", "--launcher_args", "-R ssh",
                             "--master_addr", "10.0.0.1", "--master_port", "29500", "--num_nodes", "2",
                             "--num_gpus", "8", "--ssh_port", "2222", "--module", "training.pretrain",
                             *JOB_ARGS]


def test_multinode_openmpi_command():
    cfg = multinode_cfg({"launcher": "openmpi", "launcher_args": "--mca btl_tcp_if_include ib0"})
    cmd = build_command(cfg, "training.pretrain", "step.yaml", "out/result.json")
    assert cmd.argv == DS + ["--hostfile", "/etc/hosts.ds", "--launcher", "openmpi", "--launcher_args",
                             "--mca btl_tcp_if_include ib0", "--master_addr", "10.0.0.1", "--master_port",
                             "29500", "--module", "training.pretrain", *JOB_ARGS]


def test_multinode_slurm_command_runs_the_module_through_the_launcher_script():
    cfg = multinode_cfg({"launcher": "slurm", "include": "gpu-[0-3]", "launcher_args": "--partition a100"})
    cmd = build_command(cfg, "training.pretrain", "step.yaml", "out/result.json")
    assert cmd.argv == DS + ["--hostfile", "/etc/hosts.ds", "--launcher", "slurm", "--launcher_args",
                             "--partition a100", "--master_addr", "10.0.0.1", "--master_port", "29500",
                             "--include", "gpu-[0-3]", str(Path(launcher.__file__).resolve()),
                             "training.pretrain", *JOB_ARGS]


def test_multinode_env_goes_through_the_deepspeed_env_file(tmp_path):
    cfg = multinode_cfg(env={"NCCL_SOCKET_IFNAME": "eth0", "HF_HOME": "/shared/hf"})
    cmd = build_command(cfg, "training.pretrain", "step.yaml", tmp_path / "result.json")
    env_file = tmp_path / "result.json.deepspeed_env"
    assert cmd.files == {env_file: "NCCL_SOCKET_IFNAME=eth0\nHF_HOME=/shared/hf\n"}
    assert cmd.env["DS_ENV_FILE"] == str(env_file)


def test_commands_parse_with_the_installed_deepspeed_runner():
    """Our argv means what we intend to the installed DeepSpeed runner (flags exist, module mode)."""
    from deepspeed.launcher.runner import parse_args

    local = build_command(load_launcher_config("local", {"nproc_per_node": 2}), "training.pretrain",
                          "step.yaml", "r.json")
    args = parse_args(local.argv[len(DS):])
    assert (args.num_gpus, args.module, args.user_script) == (2, True, "training.pretrain")
    assert args.user_args == ["--config", "step.yaml", "--result", "r.json"]

    pdsh = build_command(multinode_cfg({"num_nodes": 2, "ssh_port": 2222}, nproc_per_node=4), "training.pretrain",
                         "step.yaml", "r.json")
    args = parse_args(pdsh.argv[len(DS):])
    assert (args.hostfile, args.launcher, args.master_addr, args.master_port) == (
        "/etc/hosts.ds", "pdsh", "10.0.0.1", 29500)
    assert (args.num_nodes, args.num_gpus, args.ssh_port, args.module) == (2, 4, 2222, True)

    slurm = build_command(multinode_cfg({"launcher": "slurm", "exclude": "gpu-7"}), "training.pretrain",
                          "step.yaml", "r.json")
    args = parse_args(slurm.argv[len(DS):])
    assert (args.launcher, args.exclude, args.module) == ("slurm", "gpu-7", False)
    assert args.user_script == str(Path(launcher.__file__).resolve())
    assert args.user_args == ["training.pretrain", "--config", "step.yaml", "--result", "r.json"]


def test_launcher_script_runs_a_module_like_python_m(tmp_path):
    """What Slurm's srun executes on each node: `python -u tasks/launcher.py MODULE ARGS`."""
    import subprocess

    config = write_job_config(tmp_path, mode="ok", lines=2)
    result = tmp_path / "result.json"
    proc = subprocess.run([PY, "-u", str(Path(launcher.__file__).resolve()), FAKE_JOB, "--config", str(config),
                           "--result", str(result)], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["line 0000", "line 0001"]
    assert JobResult.read(result).status == "ok"


# --------------------------------------------------------------------------------------------- running


def test_run_streams_lines_in_order_and_returns_the_result(tmp_path, caplog):
    seen: list[str] = []
    log_path = tmp_path / "logs" / "job.log"
    with caplog.at_level(logging.INFO, logger="mimovl.job"):
        result = run_job(python_cfg(), FAKE_JOB, write_job_config(tmp_path, mode="ok", lines=30, stderr=True),
                         tmp_path / "result.json", log_path=log_path, on_line=seen.append, cwd=REPO_ROOT)
    expected = [f"line {i:04d}" for i in range(30)]  # odd lines went to stderr
    assert seen == expected
    assert [r.getMessage() for r in caplog.records if r.name == "mimovl.job"] == expected
    assert log_path.read_text().splitlines()[1:] == expected  # after the header with the command
    assert FAKE_JOB in log_path.read_text().splitlines()[0]
    assert result == JobResult(status="ok", output_uri="file:///tmp/fake-checkpoint",
                               output_digest="sha256:" + "0" * 64, tokens_seen=1234, wall_time_s=0.5,
                               metrics={"loss": 0.25, "lines": 30.0}, resumed=False, raw=result.raw)
    assert result.raw["job"] == "fake"


def test_output_is_streamed_while_the_job_runs(tmp_path):
    """The job only finishes after the test reacts to one of its lines: no streaming, no finish."""
    release = tmp_path / "release"
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "waiting":
            release.touch()

    config = write_job_config(tmp_path, mode="wait_for_file", release_file=str(release))
    result = run_job(python_cfg(), FAKE_JOB, config, tmp_path / "result.json", on_line=on_line, cwd=REPO_ROOT,
                     timeout_s=30)
    assert seen == ["waiting", "released"]
    assert result.status == "ok"


def test_failure_carries_the_last_50_lines(tmp_path):
    with pytest.raises(JobFailed) as info:
        run_fake(tmp_path, mode="fail", lines=120, exit_code=3)
    err = info.value
    assert type(err) is JobFailed
    assert err.returncode == 3
    assert err.tail == [f"line {i:04d}" for i in range(70, 120)]
    message = str(err)
    assert "line 0070" in message and "line 0119" in message
    assert "line 0069" not in message
    assert "exit code 3" in message
    assert FAKE_JOB in message and "--result" in message


@pytest.mark.parametrize("mode, reason", [
    ("no_result", "wrote no result file"),
    ("bad_json", "not valid JSON"),
    ("bad_status", "status is 'failed'"),
])
def test_exit_0_with_a_bad_result_fails(tmp_path, mode, reason):
    with pytest.raises(JobFailed, match=reason) as info:
        run_fake(tmp_path, mode=mode, lines=1)
    assert info.value.returncode == 0
    assert info.value.tail == ["line 0000"]


def test_a_stale_result_from_an_earlier_run_is_not_taken(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"status": "ok", "output_uri": None, "output_digest": None,
                                                      "tokens_seen": 0, "wall_time_s": 1.0, "metrics": {},
                                                      "resumed": False}))
    with pytest.raises(JobFailed, match="wrote no result file"):
        run_fake(tmp_path, mode="no_result")


@pytest.mark.parametrize("data, key", [
    ({"status": "ok"}, "missing keys"),
    ({"tokens_seen": -1}, "tokens_seen"),
    ({"tokens_seen": 1.5}, "tokens_seen"),
    ({"metrics": {"loss": "low"}}, "metrics.loss"),
    ({"output_uri": 3}, "output_uri"),
    ({"resumed": "no"}, "resumed"),
    ({"resumed": None}, "resumed"),
])
def test_result_schema_names_the_bad_key(data, key):
    valid = {"status": "ok", "output_uri": None, "output_digest": None, "tokens_seen": 0, "wall_time_s": 1.0,
             "metrics": {}, "resumed": False}
    with pytest.raises(ValueError, match=key):
        JobResult.from_dict(data if key == "missing keys" else {**valid, **data})


def test_result_write_read_round_trip(tmp_path):
    result = JobResult(status="ok", output_uri="s3://b/ckpt", output_digest="abc", tokens_seen=7,
                       wall_time_s=2.5, metrics={"loss": 1.0}, resumed=True, raw={"extra": [1, 2]})
    result.write(tmp_path / "r.json")
    assert JobResult.read(tmp_path / "r.json") == JobResult(**{**result.__dict__, "raw": result.to_dict()})


def test_timeout_kills_the_whole_process_tree(tmp_path):
    """Job and grandchildren ignore SIGTERM, one grandchild is in a session of its own: all get SIGKILL."""
    pid_file = tmp_path / "child.pid"
    seen: list[str] = []
    config = write_job_config(tmp_path, mode="hang", lines=3, child_pid_file=str(pid_file), ignore_sigterm=True)
    job = start_job(python_cfg(), FAKE_JOB, config, tmp_path / "result.json", timeout_s=5, on_line=seen.append,
                    cwd=REPO_ROOT)
    with pytest.raises(JobTimeout) as info:
        job.wait()
    grandchildren = [int(pid) for pid in pid_file.read_text().split()]
    assert len(grandchildren) == 2
    for pid in [job.pid, *grandchildren]:
        assert wait_until_gone(pid), pid
    assert seen == ["line 0000", "line 0001", "line 0002", "hanging"]
    assert info.value.tail == seen
    assert "timed out after 5 s" in str(info.value)
    assert info.value.returncode == -9  # SIGKILL: SIGTERM was ignored


def test_job_failed_pickles(tmp_path):
    with pytest.raises(JobFailed) as info:
        run_fake(tmp_path, mode="fail", lines=2, exit_code=5)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is JobFailed
    assert (str(copy), copy.returncode, copy.tail) == (str(info.value), 5, ["line 0000", "line 0001"])


def test_cancel_kills_the_job(tmp_path):
    release = tmp_path / "never-created"
    config = write_job_config(tmp_path, mode="wait_for_file", release_file=str(release))

    def on_line(line: str) -> None:
        if line == "waiting":  # cancel from another thread, as a flow's cancellation hook would
            threading.Thread(target=launcher.cancel_all, args=("flow run cancelled",)).start()

    job = start_job(python_cfg(), FAKE_JOB, config, tmp_path / "result.json", on_line=on_line, cwd=REPO_ROOT)
    with pytest.raises(JobCancelled, match="flow run cancelled") as info:
        job.wait()
    assert info.value.returncode == -15  # SIGTERM
    assert wait_until_gone(job.pid)
    assert launcher.cancel_all() == 0  # nothing left running


def test_an_error_in_on_line_kills_the_job_and_propagates(tmp_path):
    config = write_job_config(tmp_path, mode="wait_for_file", release_file=str(tmp_path / "never"))

    def on_line(line: str) -> None:
        raise RuntimeError(f"consumer broke on {line!r}")

    job = start_job(python_cfg(), FAKE_JOB, config, tmp_path / "result.json", on_line=on_line, cwd=REPO_ROOT)
    with pytest.raises(RuntimeError, match="consumer broke on 'waiting'"):
        job.wait()
    assert wait_until_gone(job.pid)


def test_missing_interpreter_is_a_launch_error(tmp_path):
    cfg = python_cfg(python=str(tmp_path / "no-such-python"))
    with pytest.raises(LaunchError, match="no-such-python") as info:
        run_fake(tmp_path, cfg, mode="ok")
    assert not isinstance(info.value, JobFailed)


def test_missing_job_config_is_a_launch_error(tmp_path):
    with pytest.raises(LaunchError, match="does not exist"):
        run_job(python_cfg(), FAKE_JOB, tmp_path / "nope.yaml", tmp_path / "result.json", cwd=REPO_ROOT)


def test_missing_module_is_a_job_failure(tmp_path):
    config = write_job_config(tmp_path, mode="ok")
    with pytest.raises(JobFailed, match="No module named") as info:
        run_job(python_cfg(), "tests.tasks.no_such_job", config, tmp_path / "result.json", cwd=REPO_ROOT)
    assert info.value.returncode == 1


@pytest.mark.slow
def test_two_ranks_through_the_deepspeed_runner(tmp_path, caplog):
    """`deepspeed --num_accelerators 2 --module ...` on CPU: gloo init and an all_reduce on both ranks."""
    cfg = load_launcher_config("local", {"runner": "deepspeed", "nproc_per_node": 2, "timeout_s": 120,
                                         "kill_grace_s": 5, "env": {"OMP_NUM_THREADS": "1"}})
    config = write_job_config(tmp_path, mode="distributed")
    with caplog.at_level(logging.INFO, logger="mimovl.job"):
        result = run_job(cfg, FAKE_JOB, config, tmp_path / "result.json", cwd=REPO_ROOT)
    world = 2
    assert result.metrics == {"allreduce_sum": float(sum(range(1, world + 1))), "world_size": float(world)}
    lines = [r.getMessage() for r in caplog.records if r.name == "mimovl.job"]
    # each rank's one line, exactly (the runner's own lines start otherwise)
    assert sorted(line for line in lines if line.startswith("rank ")) == [
        f"rank {rank}/{world} local_rank {rank} env LOCAL_RANK {rank} all_reduce 3.0" for rank in range(world)], lines


def test_a_command_without_result_json_is_streamed_and_its_failure_carries_its_last_lines():
    from tasks.launcher import JobCommand, RunningJob

    lines: list[str] = []
    ok = RunningJob(python_cfg(), JobCommand([PY, "-c", "print('generated')"], {}), None, log_path=None,
                    timeout_s=60, on_line=lines.append, cwd=None)
    assert ok.wait_exit() >= 0 and lines == ["generated"]
    failing = RunningJob(python_cfg(), JobCommand([PY, "-c", "print('half way'); raise SystemExit(3)"], {}), None,
                         log_path=None, timeout_s=60, on_line=None, cwd=None)
    with pytest.raises(JobFailed) as failed:
        failing.wait_exit()
    assert failed.value.returncode == 3 and failed.value.tail == ["half way"]


# --------------------------------------------------------------------------------------------- resources


def write_hostfile(tmp_path: Path) -> str:
    path = tmp_path / "hostfile"
    path.write_text("# nodes\nworker-0 slots=8\nworker-1 slots=8\nworker-2 slots=4\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("multinode, nproc, expected", [
    ({"num_nodes": 2}, 4, 8),                         # both given: no hostfile needed
    ({"num_nodes": -1}, -1, 20),                      # every node, every slot
    ({"num_nodes": 2}, -1, 16),                       # the first two nodes' slots
    ({"num_nodes": -1}, 2, 6),                        # two per node on the three nodes
    ({"include": "worker-0@worker-2:0,1"}, -1, 10),   # all of worker-0, two slots of worker-2
    ({"exclude": "worker-1@worker-0:0"}, -1, 11),     # worker-1 gone, one slot of worker-0 gone
])
def test_world_size_counts_the_ranks_the_runner_starts(tmp_path, multinode, nproc, expected):
    cfg = multinode_cfg({"hostfile": write_hostfile(tmp_path), **multinode}, nproc_per_node=nproc)
    assert launcher.world_size(cfg) == expected


def test_world_size_needs_a_readable_hostfile_only_when_it_counts(tmp_path):
    assert launcher.world_size(multinode_cfg({"num_nodes": 3}, nproc_per_node=8)) == 24  # /etc/hosts.ds unread
    with pytest.raises(ConfigError, match=r"launcher.multinode.hostfile: cannot read /etc/hosts.ds"):
        launcher.world_size(multinode_cfg())
    with pytest.raises(ConfigError, match=r"multinode.num_nodes: 5 nodes, but .* gives 3"):
        launcher.world_size(multinode_cfg({"hostfile": write_hostfile(tmp_path), "num_nodes": 5}, nproc_per_node=-1))
    assert launcher.world_size(python_cfg()) == 1


def test_step_resources_replace_the_launchers_own(tmp_path):
    base = python_cfg()
    two = launcher.with_resources(base, launcher=None, runner="torchrun", nproc_per_node=2, nodes=1, where="step")
    assert (two.name, two.resolved_runner, two.nproc_per_node, two.timeout_s) == ("local", "torchrun", 2, 60)
    multi = launcher.with_resources(base, launcher="multinode", runner=None, nproc_per_node=4, nodes=2, where="step")
    assert (multi.name, multi.multinode.num_nodes, launcher.world_size(multi)) == ("multinode", 2, 8)
    with pytest.raises(ConfigError, match=r"step.nodes: launcher 'local' runs on this node only"):
        launcher.with_resources(base, launcher=None, runner=None, nproc_per_node=None, nodes=2, where="step")
    with pytest.raises(ConfigError, match=r"step.nproc_per_node: runner 'python' starts exactly one process"):
        launcher.with_resources(base, launcher=None, runner="python", nproc_per_node=2, nodes=None, where="step")
    assert launcher.on_cpu(base).env == {"CUDA_VISIBLE_DEVICES": ""} and base.env == {}


def test_device_auto_is_what_the_job_will_see():
    assert launcher.resolve_device(multinode_cfg(), "auto", "step") == "cuda"  # DeepSpeed's GPU slots
    hidden = launcher.on_cpu(python_cfg())
    assert launcher.resolve_device(hidden, "auto", "step") == "cpu"
    with pytest.raises(ConfigError, match=r"step.device: cuda, but the job could see no CUDA device"):
        launcher.resolve_device(hidden, "cuda", "step")
