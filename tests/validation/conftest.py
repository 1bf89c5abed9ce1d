"""A registry holding a good scikit-learn credit model, and helpers to register broken ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scoregate.registry import Registry


@pytest.fixture
def registry(sqlite_settings: Any) -> Any:
    reg = Registry.open(sqlite_settings)
    yield reg
    reg.close()


@pytest.fixture
def good(registry: Any, credit_files: dict[str, Path]) -> Any:
    """credit-risk@1: the fixture's sklearn pipeline, registered with its training data."""
    return registry.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )
