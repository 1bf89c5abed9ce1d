"""Synthetic training data shared by the flavor tests (no downloads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def numeric_data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Three numeric features (float, float, int), a binary label and a 3-class label."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.uniform(-2, 2, size=n),
            "k": rng.integers(0, 5, size=n).astype(np.int64),
        }
    )
    score = frame["x1"] + 0.5 * frame["x2"] - 0.2 * frame["k"] + rng.normal(scale=0.3, size=n)
    binary = (score > 0).to_numpy().astype(np.int64)
    multi = np.digitize(score.to_numpy(), [-0.7, 0.7]).astype(np.int64)
    return frame, binary, multi


@pytest.fixture(scope="session")
def mixed_data() -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric features plus a string category column (Python str objects), string labels."""
    rng = np.random.default_rng(11)
    n = 300
    colour = rng.choice(["red", "green", "blue"], size=n)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "k": rng.integers(0, 4, size=n).astype(np.int64),
            "colour": pd.array(colour.tolist(), dtype=object),
        }
    )
    score = frame["x1"] + (colour == "red") - 0.3 * frame["k"] + rng.normal(scale=0.3, size=n)
    labels = np.where(score > 0, "yes", "no").astype(object)
    return frame, labels
