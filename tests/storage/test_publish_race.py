"""Two real processes publish to the same URI at once: the digest is checked at the moment of the swap."""
from __future__ import annotations

import pytest

from storage.store import MANIFEST_NAME, build_manifest
from tests.storage.conftest import barrier_dir, finish, start_worker
from tests.storage.test_store import read_tree, write_checkpoint


def race(any_store, tmp_path, uri, sources):
    workers = [
        start_worker("publish", any_store, "--uris", uri, "--owner", f"run-{i}", "--source", str(source),
                     "--barrier", str(barrier_dir(tmp_path, "publish")), "--parties", str(len(sources)))
        for i, source in enumerate(sources)
    ]
    return {r["owner"]: r for r in (finish(w) for w in workers)}


def test_of_two_concurrent_publishers_of_different_contents_the_second_fails(any_store, tmp_path):
    sources = [tmp_path / "a", tmp_path / "b"]
    contents = [write_checkpoint(source, seed=i) for i, source in enumerate(sources)]
    digests = [build_manifest(source).digest for source in sources]
    uri = any_store.uri("stage1", "key")

    results = race(any_store, tmp_path, uri, sources)

    outcomes = sorted(r["result"] for r in results.values())
    assert outcomes == ["exists", "published"], results
    winner = next(owner for owner, r in results.items() if r["result"] == "published")
    loser = next(owner for owner, r in results.items() if r["result"] == "exists")
    assert "overwrite=True" in results[loser]["error"]
    index = int(winner.split("-")[1])
    stored = any_store.store.read_manifest(uri)
    assert (stored.digest, stored.run_id) == (digests[index], winner)
    # The winner's checkpoint is whole: every file verifies, none of the loser's files got in.
    any_store.store.fetch(uri, tmp_path / "fetched")
    tree = read_tree(tmp_path / "fetched")
    tree.pop(MANIFEST_NAME)
    assert tree == contents[index]


def test_two_concurrent_publishers_of_equal_contents_both_succeed(any_store, tmp_path):
    sources = [tmp_path / "a", tmp_path / "b"]
    for source in sources:
        write_checkpoint(source, seed=3)
    uri = any_store.uri("stage1", "same")

    results = race(any_store, tmp_path, uri, sources)

    assert [r["result"] for r in results.values()] == ["published", "published"]
    digest = build_manifest(sources[0]).digest
    assert {r["digest"] for r in results.values()} == {digest}
    stored = any_store.store.read_manifest(uri)
    assert stored.digest == digest
    # Both report the one manifest that is stored (the first publisher's run id).
    assert {r["run_id"] for r in results.values()} == {stored.run_id}
    any_store.store.fetch(uri, tmp_path / "fetched")


@pytest.mark.parametrize("overwrite", [False, True])
def test_in_place_publish_checks_the_digest_at_the_swap(tmp_path, overwrite):
    from conf import load_group
    from storage.store import CheckpointExistsError, open_store

    cfg = load_group("storage", "local")
    cfg.root = f"file://{tmp_path / 'store'}"
    store = open_store(cfg)
    uri = store.uri("stage1", "key")
    folder = tmp_path / "store" / "stage1" / "key"
    write_checkpoint(folder, seed=1)
    first = store.publish(folder, uri)
    write_checkpoint(folder, seed=2)  # a second job exported into the same folder
    if overwrite:
        assert store.publish(folder, uri, overwrite=True).digest != first.digest
    else:
        with pytest.raises(CheckpointExistsError):
            store.publish(folder, uri)
        assert store.read_manifest(uri).digest == first.digest
