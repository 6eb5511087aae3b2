"""Process-group set-up shared by the job programs: works under the deepspeed runner, torchrun, or alone."""
from __future__ import annotations

import os


def ensure_single_process_env() -> None:
    """A job started without a launcher is rank 0 of 1 (DeepSpeed otherwise looks for mpi4py)."""
    if "RANK" in os.environ:
        return
    from storage.net import free_port

    port = free_port()
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
