"""Shared by the validation tests: the credit schema, python-flavor models registered on the credit data."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.schema import ModelSchema, infer_schema


def credit_schema(credit_files: dict[str, Path], **changes: dict[str, Any]) -> ModelSchema:
    """The inferred schema of the credit data, with per-feature changes (e.g. nullable, bounds)."""
    schema = infer_schema(pd.read_parquet(credit_files["train"]), target="default")
    features = [f.model_copy(update=changes.get(f.name, {})) for f in schema.features]
    return schema.model_copy(update={"features": features})


def python_model(
    registry: Any,
    folder: Path,
    name: str,
    code: str,
    credit_files: dict[str, Path],
    schema: ModelSchema | None = None,
    copy_model: bool = False,
    **register: Any,
) -> Any:
    """Register a python-flavor scorer (``code`` is scorer.py) trained/checked on the credit data."""
    folder.mkdir(parents=True)
    (folder / "scorer.py").write_text(textwrap.dedent(code))
    if copy_model:
        shutil.copy(credit_files["model"], folder / "model.joblib")
    return registry.register(
        name, folder, flavor="python", train_data=credit_files["train"], target="default", schema=schema, **register
    )


def failed_ids(report: Any) -> set[str]:
    return {c.case.id for c in report.failures}


def failed_checks(report: Any) -> set[str]:
    return {c.id for c in report.failed_checks}
