from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from scoregate.errors import FlavorError
from scoregate.flavors import get_flavor, load_scorer

FILE_SCORER = """
import numpy as np


class Helper:
    pass


class Doubler:
    def predict(self, frame):
        return frame["x1"].to_numpy() * 2
"""

DIR_SCORER = """
from pathlib import Path

import pandas as pd

from weights import scale
from scoregate.flavors.base import Scorer as Base


class Scorer(Base):
    def __init__(self, directory):
        self.offset = float((Path(directory) / "offset.txt").read_text())

    def predict(self, frame):
        values = frame["x1"].to_numpy() * scale + self.offset
        return pd.DataFrame({"score": values}, index=frame.index + 100)
"""


def test_scorer_from_file(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    path = tmp_path / "doubler.py"
    path.write_text(FILE_SCORER)

    out = load_scorer("python", path).predict(frame)

    assert list(out.columns) == ["prediction"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), frame["x1"].to_numpy() * 2)


def test_scorer_from_directory_with_helper_and_init_path(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    (tmp_path / "scorer.py").write_text(DIR_SCORER)
    (tmp_path / "weights.py").write_text("scale = 3.0\n")
    (tmp_path / "offset.txt").write_text("0.5")

    out = load_scorer("python", tmp_path).predict(frame.iloc[10:20])

    assert list(out.columns) == ["score"]
    assert out.index.equals(pd.RangeIndex(10))
    np.testing.assert_array_equal(out["score"].to_numpy(), frame["x1"].iloc[10:20].to_numpy() * 3.0 + 0.5)


@pytest.mark.parametrize(
    ("body", "columns"),
    [
        ("return {'a': frame['x1'].to_numpy(), 'b': frame['k'].to_numpy()}", ["a", "b"]),
        ("return np.column_stack([frame['x1'], frame['x2']])", ["output_0", "output_1"]),
        ("return list(frame['k'])", ["prediction"]),
    ],
)
def test_return_shapes(tmp_path, numeric_data, body, columns):
    frame, _, _ = numeric_data
    path = tmp_path / "scorer.py"
    path.write_text(f"import numpy as np\n\nclass Model:\n    def predict(self, frame):\n        {body}\n")

    out = load_scorer("python", path).predict(frame)

    assert list(out.columns) == columns
    assert len(out) == len(frame)


def test_two_versions_load_side_by_side(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    for version in (1, 2):
        (tmp_path / f"v{version}").mkdir()
        (tmp_path / f"v{version}" / "scorer.py").write_text(
            f"class Scorer:\n    def predict(self, frame):\n        return frame['k'] * 0 + {version}\n"
        )
    first = load_scorer("python", tmp_path / "v1")
    second = load_scorer("python", tmp_path / "v2")
    assert first.predict(frame)["prediction"].iloc[0] == 1
    assert second.predict(frame)["prediction"].iloc[0] == 2


def test_packages():
    assert get_flavor("python").packages == ("numpy", "pandas")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "no class with a predict"),
        ("class A:\n    def predict(self, f): ...\n\nclass B:\n    def predict(self, f): ...\n", "several classes"),
        ("def broken(:\n", "importing 'scorer.py' failed: SyntaxError"),
        ("class A:\n    def __init__(self, a, b):\n        pass\n    def predict(self, f): ...\n", "creating A failed"),
    ],
)
def test_bad_scorers(tmp_path, source, message):
    (tmp_path / "scorer.py").write_text(source)
    with pytest.raises(FlavorError, match="python flavor") as info:
        load_scorer("python", tmp_path)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_wrong_kind_of_file(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04not python")
    with pytest.raises(FlavorError, match="python flavor"):
        load_scorer("python", path)
    with pytest.raises(FlavorError, match=r"python flavor.*no scorer.py"):
        load_scorer("python", tmp_path)


def test_wrong_row_count(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    path = tmp_path / "scorer.py"
    path.write_text(
        textwrap.dedent("""
        class Scorer:
            def predict(self, frame):
                return [1, 2]
    """)
    )
    with pytest.raises(FlavorError, match="returned 2 rows"):
        load_scorer("python", path).predict(frame)


HELPED_SCORER = """
import pickle
from pathlib import Path

import features


class Scorer:
    def __init__(self, path):
        self.model = pickle.loads((Path(path) / "model.pkl").read_bytes())  # an instance of a helper's class

    def predict(self, frame):
        return features.scale * frame["x1"] + self.model.offset
"""


def test_versions_with_same_named_helpers_each_get_their_own(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    for version in (1, 2):
        root = tmp_path / f"v{version}"
        root.mkdir()
        (root / "scorer.py").write_text(HELPED_SCORER)
        (root / "features.py").write_text(
            f"scale = {version}.0\n\nclass Offset:\n    def __init__(self):\n        self.offset = {10 * version}.0\n"
        )
        (root / "model.pkl").write_bytes(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import pickle, sys, features; sys.stdout.buffer.write(pickle.dumps(features.Offset()))",
                ],
                cwd=root,
                check=True,
                capture_output=True,
            ).stdout
        )
    first = load_scorer("python", tmp_path / "v1")
    second = load_scorer("python", tmp_path / "v2")
    assert "features" not in sys.modules
    x1 = frame["x1"].to_numpy()
    np.testing.assert_array_equal(first.predict(frame)["prediction"].to_numpy(), 1.0 * x1 + 10.0)
    np.testing.assert_array_equal(second.predict(frame)["prediction"].to_numpy(), 2.0 * x1 + 20.0)
