"""Durable local file operations: unique staging names, fsync of files and folders, atomic writes, locks.

A file is durable once its contents and the folder entry naming it are fsynced; an atomic write puts the
whole file under its final name at once (temp file + fsync + rename + fsync of the folder), so a reader
sees the old file or the new one, never a part.
"""
from __future__ import annotations

import fcntl
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def unique_sibling(path: Path, purpose: str) -> Path:
    """A hidden sibling name no other process or thread uses: `.<name>.<purpose>-<pid>-<uuid>`."""
    return path.parent / f".{path.name}.{purpose}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path, relpaths: list[str] | None = None) -> None:
    """fsync the given files under `folder` (default: every file) and every folder that holds them."""
    folder = Path(folder)
    if relpaths is None:
        relpaths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    folders = {folder}
    for rel in relpaths:
        path = folder / rel
        fsync_file(path)
        parent = path.parent
        while parent != folder and parent not in folders:
            folders.add(parent)
            parent = parent.parent
    for sub in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(sub)


def _write_then(path: Path, data: bytes, suffix: str, place) -> None:
    """Write `data` to a unique fsynced temp sibling of `path`, `place(temp, path)` it, fsync the folder."""
    path = Path(path)
    temp = unique_sibling(path, suffix)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        place(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` as `path` all at once: a unique temp file, fsynced, renamed over `path`, folder fsynced."""
    _write_then(path, data, "tmp", os.replace)


def create_exclusively(path: Path, data: bytes) -> None:
    """Write `data` as `path` only if `path` does not exist (FileExistsError otherwise), all at once: the
    fsynced temp file is hard-linked into place, so no reader ever sees a partly written file."""
    _write_then(path, data, "new", os.link)


@contextmanager
def locked_dir(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` itself (no lock file is left behind); released when the block ends
    or the process dies. Held only for short renames and small writes."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def locked_file(path: Path) -> Iterator[None]:
    """An exclusive flock on the lock file `path` (created if absent, kept afterwards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def host_and_pid() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid()}
