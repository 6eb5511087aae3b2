"""Child processes for the store's concurrency tests: `python -m tests.storage.workers <command> ...`.

Each command reads the store config as JSON, waits on a barrier of files where two processes must act
at the same moment, and prints one JSON line with what happened.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from storage.store import CheckpointExistsError, open_store

BARRIER_POLL_S = 0.005


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(BARRIER_POLL_S)


def arrive_and_wait(barrier: Path, name: str, parties: int) -> None:
    """Mark `name` as arrived at `barrier` (a folder) and wait until `parties` have arrived."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / name).touch()
    while len(list(barrier.iterdir())) < parties:
        time.sleep(BARRIER_POLL_S)


def claim(args: argparse.Namespace) -> None:
    """Try to claim each URI once, all processes at the same moment per URI."""
    store = open_store(json.loads(args.store))
    won = []
    for index, uri in enumerate(args.uris):
        arrive_and_wait(Path(args.barrier) / str(index), args.owner, args.parties)
        won.append(store.try_claim(uri, args.owner, args.lease_s) is not None)
    print(json.dumps({"owner": args.owner, "won": won}), flush=True)


def hold(args: argparse.Namespace) -> None:
    """Claim a URI, say so, and keep renewing it until killed."""
    store = open_store(json.loads(args.store))
    got = store.try_claim(args.uris[0], args.owner, args.lease_s)
    print(json.dumps({"owner": args.owner, "claimed": got is not None, "expires_at": got and got.expires_at}),
          flush=True)
    if got is None:
        sys.exit(1)
    with got.keep_alive(args.lease_s / 4):
        while True:
            time.sleep(1)


def publish(args: argparse.Namespace) -> None:
    """Publish `source` to the URI; both publishers pass the up-front digest check before either places
    its checkpoint, so only the check at the moment of the swap can tell them apart."""
    from storage import store as store_module

    store = open_store(json.loads(args.store))
    backend_cls = store_module._S3Backend if args.uris[0].startswith("s3://") else store_module._LocalBackend
    original = backend_cls.publish

    def publish_after_barrier(self, *a, **kw):
        arrive_and_wait(Path(args.barrier), args.owner, args.parties)
        return original(self, *a, **kw)

    backend_cls.publish = publish_after_barrier
    try:
        manifest = store.publish(args.source, args.uris[0], run_id=args.owner)
        print(json.dumps({"owner": args.owner, "result": "published", "digest": manifest.digest,
                          "run_id": manifest.run_id}), flush=True)
    except CheckpointExistsError as exc:
        print(json.dumps({"owner": args.owner, "result": "exists", "error": str(exc)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["claim", "hold", "publish"])
    parser.add_argument("--store", required=True, help="the storage config as JSON")
    parser.add_argument("--uris", nargs="+", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--lease-s", type=float, default=None)
    parser.add_argument("--barrier", default=None)
    parser.add_argument("--parties", type=int, default=None)
    parser.add_argument("--source", default=None)
    args = parser.parse_args()
    {"claim": claim, "hold": hold, "publish": publish}[args.command](args)


if __name__ == "__main__":
    main()
