"""Claims on store URIs (file:// and s3://), raced and crashed by real processes."""
from __future__ import annotations

import json
import time

import pytest

from storage.claims import ClaimLost
from storage.store import StoreError
from tests.storage.conftest import barrier_dir, finish, kill, start_worker

# A lease long enough that nobody's expires during a race; the crash test's is short so that it expires.
RACE_LEASE_S = 600
CRASH_LEASE_S = 2.0
RACES = 5
WAIT_LIMIT_S = 60


def wait_until_expired(expires_at: float) -> None:
    while time.time() <= expires_at:
        time.sleep(0.05)


@pytest.mark.parametrize("held_before", ["nobody", "an expired owner"])
def test_two_processes_claim_the_same_uri_and_exactly_one_wins(any_store, tmp_path, held_before):
    uris = [any_store.uri("stage1", f"key{i}") for i in range(RACES)]
    if held_before == "an expired owner":  # both racers take over the same expired lease
        expired = [any_store.store.try_claim(uri, "gone", 0.05) for uri in uris]
        wait_until_expired(max(claim.expires_at for claim in expired))
    workers = [
        start_worker("claim", any_store, "--uris", *uris, "--owner", owner, "--lease-s", str(RACE_LEASE_S),
                     "--barrier", str(barrier_dir(tmp_path, "claim")), "--parties", "2")
        for owner in ("flow-a", "flow-b")
    ]
    results = {r["owner"]: r["won"] for r in (finish(w) for w in workers)}

    for index, uri in enumerate(uris):
        winners = [owner for owner, won in results.items() if won[index]]
        assert len(winners) == 1, f"{uri}: winners {winners}"
        info = any_store.store.claim_info(uri)
        assert info.owner == winners[0] and info.expires_at > time.time()


def test_a_killed_owner_loses_its_claim_when_the_lease_expires(any_store):
    uri = any_store.uri("stage2", "key")
    holder = start_worker("hold", any_store, "--uris", uri, "--owner", "crasher", "--lease-s", str(CRASH_LEASE_S))
    try:
        first = json.loads(holder.stdout.readline())
        assert first["claimed"]
        # While the holder lives it renews: its claim outlasts the first lease.
        wait_until_expired(first["expires_at"])
        assert any_store.store.try_claim(uri, "impatient", CRASH_LEASE_S) is None
        info = any_store.store.claim_info(uri)
        assert info.owner == "crasher" and info.expires_at > first["expires_at"]
    finally:
        kill(holder)

    last_renewal = any_store.store.claim_info(uri)
    assert last_renewal is None or last_renewal.owner == "crasher"
    deadline = time.time() + WAIT_LIMIT_S
    while (claim := any_store.store.try_claim(uri, "successor", CRASH_LEASE_S)) is None:
        assert time.time() < deadline, "the dead owner's claim was never taken over"
        time.sleep(0.1)
    assert claim.owner == "successor"
    assert any_store.store.claim_info(uri).owner == "successor"
    claim.release()
    assert any_store.store.claim_info(uri) is None


def test_renew_after_a_takeover_raises_claim_lost(any_store):
    uri = any_store.uri("stage3", "key")
    old = any_store.store.try_claim(uri, "old-owner", 0.5)
    assert old is not None and old.owner == "old-owner"
    assert any_store.store.try_claim(uri, "new-owner", 0.5) is None
    wait_until_expired(old.expires_at)

    new = any_store.store.try_claim(uri, "new-owner", 30)
    assert new is not None
    with pytest.raises(ClaimLost, match="old-owner.*new-owner holds it now"):
        old.renew()
    old.release()  # releasing a claim that was taken over leaves the new owner's claim alone
    assert any_store.store.claim_info(uri).owner == "new-owner"

    new.renew()
    new.release()
    new.release()  # idempotent
    assert any_store.store.claim_info(uri) is None
    assert any_store.store.try_claim(uri, "third", 30) is not None


def test_keep_alive_renews_releases_and_reports_a_lost_claim(any_store):
    uri = any_store.uri("stage4", "key")
    claim = any_store.store.try_claim(uri, "worker", 1.0)
    first_expiry = claim.expires_at
    with claim.keep_alive(0.2):
        wait_until_expired(first_expiry)
        assert any_store.store.claim_info(uri).owner == "worker"  # renewed past the first lease
    assert any_store.store.claim_info(uri) is None  # released on exit

    lost = any_store.store.try_claim(uri, "sleepy", 30)
    with pytest.raises(ClaimLost, match="lost while in use"):
        with lost.keep_alive(0.2):
            remove_claim_record(any_store, uri)  # e.g. an operator clearing it by hand
            assert any_store.store.try_claim(uri, "thief", 60) is not None
            deadline = time.time() + WAIT_LIMIT_S
            while lost.lost is None:  # the next renewal finds the thief's record
                assert time.time() < deadline, "keep_alive never noticed the lost claim"
                time.sleep(0.05)
    assert any_store.store.claim_info(uri).owner == "thief"


def remove_claim_record(any_store, uri: str) -> None:
    claims = any_store.store._claims(uri)
    if uri.startswith("s3://"):
        bucket, key = claims._key(uri)
        claims._client.delete_object(Bucket=bucket, Key=key)
    else:
        claims._path(uri).unlink()


def test_bad_lease_and_interval_are_errors(any_store):
    with pytest.raises(StoreError, match="lease_s must be > 0"):
        any_store.store.try_claim(any_store.uri("x"), "me", 0)
    claim = any_store.store.try_claim(any_store.uri("x"), "me", 5)
    with pytest.raises(StoreError, match="keep_alive interval"):
        with claim.keep_alive(5):
            pass
    claim.release()
