"""Reading the files public benchmarks ship: parquet tables with embedded images, JSON records, fields.

Every failure is a BenchmarkDataError naming the file (and the row and field where there is one), so a
folder in the wrong layout stops the scorer with a message saying what to fix.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import BenchmarkDataError


def find_files(root: Path, pattern: str, benchmark: str) -> list[Path]:
    """The files under `root` matching the glob `pattern` (recursively), sorted; an error when none."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkDataError(f"{root}: not a folder (the {benchmark} data folder)")
    files = sorted(p for p in root.rglob(pattern) if p.is_file())
    if not files:
        raise BenchmarkDataError(f"{root}: no {pattern} files (the {benchmark} layout; see its adapter's docstring)")
    return files


def read_parquet(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of one parquet file as dicts; an error naming the file and the first missing column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise BenchmarkDataError(f"{path}: not a readable parquet file: {exc}") from exc
    for column in required:
        if column not in table.column_names:
            raise BenchmarkDataError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)})")
    return table.to_pylist()


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkDataError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BenchmarkDataError(f"{path}: must hold a JSON list of objects")
    return records


def field(row: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """row[key], which must be present, not null, and of `kind`; `where` names the file and row."""
    if key not in row or row[key] is None:
        raise BenchmarkDataError(f"{where}: field {key!r} is missing or null")
    value = row[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BenchmarkDataError(f"{where}: field {key!r} must be {_kind_name(kind)}, got bool")
    if not isinstance(value, kind):
        raise BenchmarkDataError(f"{where}: field {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def embedded_image(row: dict[str, Any], key: str, where: str) -> bytes:
    """The encoded bytes of a Hugging Face `image` column (a struct {bytes, path})."""
    value = field(row, key, where, dict)
    data = value.get("bytes")
    if not isinstance(data, bytes) or not data:
        raise BenchmarkDataError(f"{where}: field {key!r} is an image struct without bytes")
    return data


def text_id(value: Any, where: str, key: str) -> str:
    """A benchmark's own id field as the prediction id string (ints print without a fraction)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BenchmarkDataError(f"{where}: field {key!r} must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise BenchmarkDataError(f"{where}: field {key!r} is empty")
    return text


def unique_ids(ids: Sequence[str], where: Path | str) -> None:
    """Prediction ids must name one item each."""
    seen: set[str] = set()
    for item_id in ids:
        if item_id in seen:
            raise BenchmarkDataError(f"{where}: id {item_id!r} appears twice")
        seen.add(item_id)
