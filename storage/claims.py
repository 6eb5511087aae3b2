"""Claims on a store URI: one owner at a time works on it, under a lease that a crashed owner loses.

A claim is a small JSON record beside the checkpoint location ({owner, token, expires_at, lease_s,
host, pid}): `.<name>.claim` in the parent folder (file://) or under the parent prefix (s3://).
- file://: every read-check-write of the record runs under an flock of the parent folder (released by
  the kernel when a process dies), a fresh record is created with an exclusive link (O_EXCL semantics:
  a fully written file appears or nothing), a takeover replaces the expired record atomically.
- s3://: conditional writes. A fresh record is put with If-None-Match: *, a takeover or renewal with
  If-Match on the ETag read before it, a release deletes with If-Match: of two writers racing on one
  record, S3 accepts exactly one.
An expired lease is taken over by the next claimant; its old owner's renew() then raises ClaimLost.
Lease lengths come from the caller.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from storage.durable import create_exclusively, fsync_dir, host_and_pid, locked_dir, write_atomically
from storage.uri import StoreError, resolve_local, split_s3_prefix

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"


class ClaimLost(StoreError):
    """Another owner took the claim over (our lease had expired) or it is gone."""


@dataclass(frozen=True)
class ClaimInfo:
    owner: str
    expires_at: float  # unix seconds


@dataclass(frozen=True)
class _Record:
    owner: str
    token: str
    expires_at: float
    body: dict[str, Any]

    @classmethod
    def new(cls, owner: str, lease_s: float) -> _Record:
        token = uuid.uuid4().hex
        expires_at = time.time() + lease_s
        body = {"owner": owner, "token": token, "expires_at": expires_at, "lease_s": lease_s, **host_and_pid()}
        return cls(owner, token, expires_at, body)

    def renewed(self, lease_s: float) -> _Record:
        expires_at = time.time() + lease_s
        return _Record(self.owner, self.token, expires_at, {**self.body, "expires_at": expires_at})

    def to_bytes(self) -> bytes:
        return (json.dumps(self.body) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, where: str) -> _Record | None:
        """None when the record cannot be read: it is then treated as expired (and logged)."""
        try:
            body = json.loads(data)
            return cls(str(body["owner"]), str(body["token"]), float(body["expires_at"]), body)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("claim record %s is unreadable (%s); treating it as expired", where, exc)
            return None

    def live(self) -> bool:
        return self.expires_at > time.time()


class _Backend(Protocol):
    def acquire(self, uri: str, owner: str, lease_s: float) -> tuple[_Record, Any] | None: ...
    def renew(self, uri: str, record: _Record, handle: Any, lease_s: float) -> tuple[_Record, Any]: ...
    def release(self, uri: str, record: _Record, handle: Any) -> None: ...
    def info(self, uri: str) -> ClaimInfo | None: ...


class Claim:
    """Held by one owner until released or until its lease expires without renewal."""

    def __init__(self, backend: _Backend, uri: str, record: _Record, handle: Any, lease_s: float):
        self._backend = backend
        self.uri = uri
        self.lease_s = lease_s
        self._record = record
        self._handle = handle  # backend state: the S3 ETag of our record
        self._released = False
        self._lock = threading.Lock()
        self.lost: ClaimLost | None = None

    @property
    def owner(self) -> str:
        return self._record.owner

    @property
    def expires_at(self) -> float:
        return self._record.expires_at

    def renew(self) -> None:
        """Extend the lease by lease_s from now; ClaimLost when another owner took the claim."""
        with self._lock:
            if self._released:
                raise ClaimLost(f"claim on {self.uri} by {self.owner} was released")
            self._record, self._handle = self._backend.renew(self.uri, self._record, self._handle, self.lease_s)

    def release(self) -> None:
        """Give the claim up (idempotent); a claim another owner took over is left to them."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._backend.release(self.uri, self._record, self._handle)

    @contextmanager
    def keep_alive(self, interval_s: float) -> Iterator[Claim]:
        """Renew every `interval_s` on a daemon thread; release on exit. A claim lost meanwhile raises
        ClaimLost at the end of the block (when the block itself did not fail)."""
        if not 0 < interval_s < self.lease_s:
            raise StoreError(f"keep_alive interval {interval_s} s must be > 0 and below the lease ({self.lease_s} s)")
        stop = threading.Event()

        def renew_until_stopped() -> None:
            while not stop.wait(interval_s):
                try:
                    self.renew()
                except ClaimLost as exc:
                    self.lost = exc
                    log.error("lost the claim on %s: %s", self.uri, exc)
                    return
                except Exception as exc:  # a store outage: the lease still runs, try again next interval
                    log.warning("could not renew the claim on %s (retrying in %.0f s): %s", self.uri, interval_s, exc)

        thread = threading.Thread(target=renew_until_stopped, name=f"claim-renew:{self.uri}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.release()
        if self.lost is not None:
            raise ClaimLost(f"the claim on {self.uri} was lost while in use: {self.lost}")


def try_claim(backend: _Backend, uri: str, owner: str, lease_s: float) -> Claim | None:
    if not lease_s > 0:
        raise StoreError(f"claim on {uri}: lease_s must be > 0, got {lease_s}")
    got = backend.acquire(uri, owner, lease_s)
    if got is None:
        return None
    record, handle = got
    return Claim(backend, uri, record, handle, lease_s)


# ----------------------------------------------------------------------------------------- file://


class FileClaims:
    """Claim records in the parent folder of the checkpoint location, changed under its flock."""

    def __init__(self, suffix: str = CLAIM_SUFFIX):
        self._suffix = suffix

    def _path(self, uri: str) -> Path:
        dest = resolve_local(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.parent / f".{dest.name}{self._suffix}"

    @staticmethod
    def _read(path: Path) -> _Record | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return _Record.parse(data, str(path))

    def acquire(self, uri: str, owner: str, lease_s: float) -> tuple[_Record, None] | None:
        path = self._path(uri)
        with locked_dir(path.parent):
            current = self._read(path)
            if current is not None and current.live():
                return None
            record = _Record.new(owner, lease_s)
            if path.exists():  # expired (or unreadable): replaced atomically
                write_atomically(path, record.to_bytes())
                log.info("took over the expired claim on %s (was %s)", uri, current.owner if current else "unreadable")
            else:
                create_exclusively(path, record.to_bytes())
        return record, None

    def renew(self, uri: str, record: _Record, handle: None, lease_s: float) -> tuple[_Record, None]:
        path = self._path(uri)
        with locked_dir(path.parent):
            current = self._read(path)
            if current is None or current.token != record.token:
                raise ClaimLost(_lost_message(uri, record, current))
            renewed = record.renewed(lease_s)
            write_atomically(path, renewed.to_bytes())
        return renewed, None

    def release(self, uri: str, record: _Record, handle: None) -> None:
        path = self._path(uri)
        with locked_dir(path.parent):
            current = self._read(path)
            if current is not None and current.token == record.token:
                path.unlink()
                fsync_dir(path.parent)

    def info(self, uri: str) -> ClaimInfo | None:
        current = self._read(self._path(uri))
        if current is None or not current.live():
            return None
        return ClaimInfo(current.owner, current.expires_at)


# ----------------------------------------------------------------------------------------- s3://


class S3Claims:
    """Claim records as S3 objects, changed only by conditional writes."""

    def __init__(self, client: Any, errors: Any, suffix: str = CLAIM_SUFFIX):
        self._client = client
        self._errors = errors  # context manager turning botocore errors into StoreError naming the URI
        self._suffix = suffix

    def _key(self, uri: str) -> tuple[str, str]:
        bucket, prefix = split_s3_prefix(uri)
        parent, _, name = prefix.rpartition("/")
        return bucket, (f"{parent}/" if parent else "") + f".{name}{self._suffix}"

    def _read(self, uri: str) -> tuple[_Record | None, str | None]:
        """(record, ETag); (None, None) when there is no record, (None, etag) when it is unreadable."""
        from storage.s3 import NOT_FOUND_CODES, error_code

        bucket, key = self._key(uri)
        with self._errors(uri):
            try:
                reply = self._client.get_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if error_code(exc) in NOT_FOUND_CODES:
                    return None, None
                raise
            return _Record.parse(reply["Body"].read(), f"s3://{bucket}/{key}"), reply["ETag"]

    def _put(self, uri: str, record: _Record, **condition: str) -> str | None:
        """The new ETag, or None when the condition failed (another writer changed the record first)."""
        from storage.s3 import CONFLICT_CODES, NOT_FOUND_CODES, error_code

        bucket, key = self._key(uri)
        with self._errors(uri):
            try:
                reply = self._client.put_object(
                    Bucket=bucket, Key=key, Body=record.to_bytes(), ContentType="application/json", **condition
                )
            except Exception as exc:
                if error_code(exc) in CONFLICT_CODES | NOT_FOUND_CODES:
                    return None
                raise
        return reply["ETag"]

    def acquire(self, uri: str, owner: str, lease_s: float) -> tuple[_Record, str] | None:
        current, etag = self._read(uri)
        if current is not None and current.live():
            return None
        record = _Record.new(owner, lease_s)
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        new_etag = self._put(uri, record, **condition)
        if new_etag is None:
            return None
        if etag is not None:
            log.info("took over the expired claim on %s (was %s)", uri, current.owner if current else "unreadable")
        return record, new_etag

    def renew(self, uri: str, record: _Record, handle: str, lease_s: float) -> tuple[_Record, str]:
        current, etag = self._read(uri)
        if current is None or current.token != record.token:
            raise ClaimLost(_lost_message(uri, record, current))
        renewed = record.renewed(lease_s)
        new_etag = self._put(uri, renewed, IfMatch=etag)
        if new_etag is None:
            current, _ = self._read(uri)
            raise ClaimLost(_lost_message(uri, record, current))
        return renewed, new_etag

    def release(self, uri: str, record: _Record, handle: str) -> None:
        from storage.s3 import CONFLICT_CODES, NOT_FOUND_CODES, error_code

        current, etag = self._read(uri)
        if current is None or current.token != record.token:
            return
        bucket, key = self._key(uri)
        with self._errors(uri):
            try:
                self._client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
            except Exception as exc:
                if error_code(exc) not in CONFLICT_CODES | NOT_FOUND_CODES:
                    raise

    def info(self, uri: str) -> ClaimInfo | None:
        current, _ = self._read(uri)
        if current is None or not current.live():
            return None
        return ClaimInfo(current.owner, current.expires_at)


def _lost_message(uri: str, mine: _Record, current: _Record | None) -> str:
    now = "nobody holds it now" if current is None else f"{current.owner} holds it now"
    return f"claim on {uri} by {mine.owner} was taken over or removed ({now})"
