"""A rank that needs s3:// weights: `python -m tests.model.weights_worker STORAGE_JSON URI RUNS BARRIER NAME`.

Counts its own S3 GetObject requests (a hook on the project's one S3 client, which also makes each one
slow) and prints them with the local folder it got, after waiting with the other ranks at BARRIER so that all ask at the same moment.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from storage import s3 as s3_module

BARRIER_POLL_S = 0.005
SLOW_GET_S = 0.3  # each object takes this long, as a large one would: the ranks' requests surely overlap


def main() -> None:
    storage_json, uri, runs_dir, barrier, name, parties = sys.argv[1:7]
    gets: list[str] = []
    original_init = s3_module.S3Access.__init__

    def count_and_delay(params, **_):
        gets.append(params["Key"])
        time.sleep(SLOW_GET_S)

    def counting_init(self, settings):
        original_init(self, settings)
        self.client.meta.events.register("before-parameter-build.s3.GetObject", count_and_delay)

    s3_module.S3Access.__init__ = counting_init
    from model.weights import local_weights_dir

    Path(barrier).mkdir(parents=True, exist_ok=True)
    (Path(barrier) / name).touch()
    while len(list(Path(barrier).iterdir())) < int(parties):
        time.sleep(BARRIER_POLL_S)
    folder = local_weights_dir(uri, runs_dir, json.loads(storage_json))
    print(json.dumps({"pid": os.getpid(), "gets": gets, "dir": str(folder)}), flush=True)


if __name__ == "__main__":
    main()
