"""Independent reference scores: the artifact loaded in a separate process, or a golden file.

The subprocess opens the registry with the same settings, loads the version
(digest-checked) with its flavor and scores the rows; nothing of the target's
process (patched scorers, servers, caches) is shared. Run as
``python -m scoregate.validation.reference`` with a JSON request on stdin.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from scoregate.errors import InvalidInputError, ScoregateError

#: Default tolerance: |a - b| <= atol + rtol * |b|.
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-6


def subprocess_reference(
    settings: Any, ref: str, rows: list[dict[str, Any]], *, token: str | None = None, timeout: float = 300.0
) -> list[dict[str, Any]]:
    """Score ``rows`` with ``ref`` loaded from the registry in a fresh Python process.

    The request (settings, API token, rows) goes over stdin, never the command line.
    """
    request = {"settings": settings.model_dump(mode="json"), "ref": ref, "rows": rows, "token": token}
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "scoregate.validation.reference"],
        input=orjson.dumps(request),
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise ScoregateError(f"the reference scorer process failed (exit {proc.returncode}): {' | '.join(tail)}")
    answer = orjson.loads(proc.stdout)
    outputs = answer["outputs"]
    if len(outputs) != len(rows):
        raise ScoregateError(f"the reference scorer returned {len(outputs)} rows for {len(rows)}")
    return outputs


def _main() -> None:  # pragma: no cover - exercised through subprocess_reference
    from scoregate.config import Settings
    from scoregate.registry import Registry
    from scoregate.validation.targets import _records

    request = json.loads(sys.stdin.buffer.read())
    settings = Settings(**request["settings"])
    token = request.get("token")
    try:
        registry = Registry(settings, token=token) if token else Registry.open(settings)
    except TypeError:  # a registry without token support
        registry = Registry.open(settings)
    try:
        loaded = registry.load(request["ref"])
        rows = request["rows"]
        frame = loaded.predict(rows) if rows else None
        outputs = _records(frame) if frame is not None else []
    finally:
        registry.close()
    sys.stdout.buffer.write(
        orjson.dumps({"ref": loaded.version.ref, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    )


def read_golden(path: Path, feature_names: list[str], output_names: list[str]) -> list[tuple[dict, dict]]:
    """Golden cases: ``(input row, expected outputs)`` pairs.

    Accepted: JSON (a list of ``{"input": {...}, "expected": {...}}``) or JSON lines of
    the same; or a table (.csv, .parquet) whose feature columns are the input and
    whose output-named columns are the expected outputs.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"golden file {path} does not exist")
    suffix = path.suffix.lower()
    pairs: list[tuple[dict, dict]] = []
    if suffix in (".json", ".jsonl"):
        text = path.read_text()
        try:
            items = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines() if line]
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"golden file {path} is not valid JSON: {exc}") from None
        if isinstance(items, dict):
            items = items.get("cases", [])
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("input"), dict):
                raise InvalidInputError(
                    f"golden file {path}: item {i} needs an 'input' object and an 'expected' object"
                )
            expected = item.get("expected", item.get("output"))
            if not isinstance(expected, dict) or not expected:
                raise InvalidInputError(f"golden file {path}: item {i} needs a non-empty 'expected' object")
            pairs.append((item["input"], expected))
        return pairs
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        from scoregate.validation.cases import to_json_value

        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        outs = [c for c in frame.columns if c in output_names]
        if not outs:
            raise InvalidInputError(
                f"golden file {path}: no expected-output column (looked for {', '.join(output_names)})"
            )
        ins = [c for c in frame.columns if c in feature_names]
        for record in frame.to_dict(orient="records"):
            pairs.append(({c: to_json_value(record[c]) for c in ins}, {c: to_json_value(record[c]) for c in outs}))
        return pairs
    raise InvalidInputError(f"golden file {path}: use .json, .jsonl, .csv or .parquet")


def write_golden(path: Path, rows: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
    """Write a golden file in the JSON form :func:`read_golden` reads."""
    items = [{"input": r, "expected": o} for r, o in zip(rows, outputs, strict=True)]
    Path(path).write_bytes(orjson.dumps(items, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def compare(target: Any, reference: Any, atol: float, rtol: float) -> float | None:
    """The size of the difference (0 when equal), ``None`` when within tolerance; inf when incomparable."""
    if isinstance(reference, bool) or isinstance(target, bool) or isinstance(reference, str) or isinstance(target, str):
        return None if _same_label(target, reference) else math.inf
    if reference is None or target is None:
        both_missing = _missing(reference) and _missing(target)
        return None if both_missing else math.inf
    try:
        a, b = float(target), float(reference)
    except (TypeError, ValueError):
        return None if target == reference else math.inf
    if math.isnan(a) or math.isnan(b):
        return None if math.isnan(a) and math.isnan(b) else math.inf
    diff = abs(a - b)
    return None if diff <= atol + rtol * abs(b) else diff


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same_label(a: Any, b: Any) -> bool:
    if a == b:
        return True
    return str(a) == str(b)


if __name__ == "__main__":  # pragma: no cover
    _main()
