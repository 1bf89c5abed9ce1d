"""Golden files: input rows with the outputs they must get, compared in addition to the reference."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from scoregate.errors import InvalidInputError

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class Golden:
    """A golden file read once: its digest (of the bytes parsed) and its (input, expected) pairs."""

    path: Path
    digest: str
    pairs: list[tuple[dict[str, Any], dict[str, Any]]]


def load_golden(path: Path, feature_names: list[str], output_names: list[str]) -> Golden:
    """Read, hash and parse a golden file; a file that is not one is refused with one line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"golden file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInputError(f"golden file {path} is a directory") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read golden file {path}: {exc.strerror}") from None
    pairs = parse_golden(data, path, feature_names, output_names)
    if not pairs:
        raise InvalidInputError(f"golden file {path} holds no cases")
    return Golden(path, hashlib.sha256(data).hexdigest(), pairs)


def read_golden(path: Path, feature_names: list[str], output_names: list[str]) -> list[tuple[dict, dict]]:
    """Golden cases: ``(input row, expected outputs)`` pairs (see :func:`parse_golden`)."""
    return load_golden(path, feature_names, output_names).pairs


def parse_golden(
    data: bytes, path: Path, feature_names: list[str], output_names: list[str]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Accepted: JSON (a list of ``{"input": {...}, "expected": {...}}``) or JSON lines of the
    same; or a table (.csv, .parquet) whose feature columns are the input and whose
    output-named columns are the expected outputs."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return _json_pairs(data, path, suffix)
    if suffix in (".csv", ".parquet"):
        return _table_pairs(data, path, suffix, feature_names, output_names)
    raise InvalidInputError(f"golden file {path}: use {', '.join(SUFFIXES)}")


def _json_pairs(data: bytes, path: Path, suffix: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    try:
        text = data.decode()
        items = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines() if line]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"golden file {path} is not valid JSON: {exc}") from None
    if isinstance(items, dict):
        items = items.get("cases", [])
    if not isinstance(items, list):
        raise InvalidInputError(f"golden file {path}: expected a list of {{input, expected}} objects")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("input"), dict):
            raise InvalidInputError(f"golden file {path}: item {i} needs an 'input' object and an 'expected' object")
        expected = item.get("expected", item.get("output"))
        if not isinstance(expected, dict) or not expected:
            raise InvalidInputError(f"golden file {path}: item {i} needs a non-empty 'expected' object")
        pairs.append((item["input"], expected))
    return pairs


def _table_pairs(
    data: bytes, path: Path, suffix: str, feature_names: list[str], output_names: list[str]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    import pandas as pd

    from scoregate.validation.cases import to_json_value

    try:
        frame = pd.read_csv(io.BytesIO(data)) if suffix == ".csv" else pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pandas and pyarrow raise many kinds for a file that is not a table
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"golden file {path} is not a readable {suffix[1:]} table: {first}") from None
    outs = [c for c in frame.columns if c in output_names]
    if not outs:
        raise InvalidInputError(f"golden file {path}: no expected-output column (looked for {', '.join(output_names)})")
    ins = [c for c in frame.columns if c in feature_names]
    return [
        ({c: to_json_value(record[c]) for c in ins}, {c: to_json_value(record[c]) for c in outs})
        for record in frame.to_dict(orient="records")
    ]


def write_golden(path: Path, rows: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
    """Write a golden file in the JSON form :func:`read_golden` reads."""
    items = [{"input": r, "expected": o} for r, o in zip(rows, outputs, strict=True)]
    Path(path).write_bytes(orjson.dumps(items, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


__all__ = ["Golden", "load_golden", "parse_golden", "read_golden", "write_golden"]
