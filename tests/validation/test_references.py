"""Independent references (a validator's scorer, ONNX) and the bounds of the reference process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import psutil
import pytest

from scoregate.registry.records import LoadedModel
from scoregate.validation import PythonTarget, validate
from tests.validation.helpers import python_model
from tests.validation.test_validation import Perturbed

#: A validator's own re-implementation of the credit pipeline, from its exported parameters.
FUNCTION_SCORER = """
import json
import math
from pathlib import Path

PARAMS = json.loads((Path(__file__).parent / "params.json").read_text())


def score(rows):
    out = []
    for r in rows:
        x = [1.0 if r["purpose"] == c else 0.0 for c in PARAMS["categories"]]
        x += [(r[n] - m) / s for n, m, s in zip(PARAMS["numeric"], PARAMS["mean"], PARAMS["scale"])]
        z = PARAMS["intercept"] + sum(w * v for w, v in zip(PARAMS["coef"], x))
        p = 1 / (1 + math.exp(-z)) + PARAMS.get("bias", 0.0)
        out.append({"prediction": int(p > 0.5), "proba_0": 1 - p, "proba_1": p})
    return out
"""

CLASS_SCORER = """
import json
from pathlib import Path

import numpy as np
import pandas as pd


class Reference:
    def __init__(self):
        self.params = json.loads((Path(__file__).parent / "params.json").read_text())

    def predict(self, frame):
        p = self.params
        onehot = np.column_stack([(frame["purpose"] == c).to_numpy(float) for c in p["categories"]])
        numeric = (frame[p["numeric"]].to_numpy(float) - p["mean"]) / p["scale"]
        z = p["intercept"] + np.hstack([onehot, numeric]) @ np.asarray(p["coef"])
        proba = 1 / (1 + np.exp(-z))
        return {"prediction": (proba > 0.5).astype(int), "proba_1": proba}
"""


def export_parameters(model_path: Path, folder: Path, bias: float = 0.0) -> None:
    model = joblib.load(model_path)
    transformer, regression = model[0], model[-1]
    onehot = transformer.named_transformers_["onehotencoder"]
    scaler = transformer.named_transformers_["remainder"]
    numeric = [c for c in transformer.feature_names_in_ if c != "purpose"]
    params = {
        "categories": [str(c) for c in onehot.categories_[0]],
        "numeric": numeric,
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": regression.coef_[0].tolist(),
        "intercept": float(regression.intercept_[0]),
        "bias": bias,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))


@pytest.mark.parametrize("code", [FUNCTION_SCORER, CLASS_SCORER], ids=["score-function", "predict-class"])
def test_a_validators_scorer_is_the_reference(
    registry: Any, good: Any, credit_files: dict[str, Path], tmp_path: Path, code: str
) -> None:
    folder = tmp_path / "validator"
    export_parameters(credit_files["model"], folder)
    path = folder / "reference.py"
    path.write_text(code)
    report = validate(registry, good.ref, reference="scorer", reference_scorer=path, out_dir=tmp_path / "out")
    assert report.passed, report.parity.error or [(c.case.id, c.reason) for c in report.failures]
    p = report.parity
    assert p.reference == "scorer" and p.available and p.outcome == "compared" and p.error is None
    assert p.rows_compared > 2000 and p.mismatches == 0
    assert (p.atol, p.rtol) == (report.settings.independent_atol, report.settings.independent_rtol)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["settings"]["reference"] == "scorer"
    assert data["settings"]["reference_scorer_digest"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["parity"]["independent"] is True and data["parity"]["available"] is True
    page = (tmp_path / "out" / "report.html").read_text()
    assert "scorer (independent)" in page and f"{p.atol:g}" in page


def test_a_scorer_that_disagrees_fails_parity(
    registry: Any, good: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "validator"
    export_parameters(credit_files["model"], folder, bias=1e-3)
    (folder / "reference.py").write_text(FUNCTION_SCORER)
    report = validate(registry, good.ref, reference="scorer", reference_scorer=folder / "reference.py")
    assert not report.passed and report.parity.mismatches > 0
    assert report.parity.worst[0].size == pytest.approx(1e-3, rel=1e-3)
    assert any("differs from the scorer reference by 0.001" in c.reason for c in report.failures)


NOISY_SCORER = """
import json
import math
from pathlib import Path

print("loading the reference scorer")  # on stdout: must not corrupt the answer
PARAMS = json.loads((Path(__file__).parent / "params.json").read_text())


def score(rows):
    print("scoring", len(rows), "rows")
    if any(r["age"] == 79 for r in rows) and PARAMS.get("crash"):
        raise ZeroDivisionError("the validator's scorer divided by zero")
    return [{"proba_1": 1 / (1 + math.exp(-(PARAMS["intercept"])))} for r in rows]
"""


def test_a_scorer_that_prints_or_crashes(
    registry: Any, good: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "validator"
    export_parameters(credit_files["model"], folder)
    (folder / "reference.py").write_text(NOISY_SCORER)
    report = validate(registry, good.ref, reference="scorer", reference_scorer=folder / "reference.py")
    assert report.parity.available and report.parity.mismatches > 0  # compared: the prints went to stderr
    params = json.loads((folder / "params.json").read_text())
    (folder / "params.json").write_text(json.dumps({**params, "crash": True}))
    report = validate(registry, good.ref, reference="scorer", reference_scorer=folder / "reference.py")
    p = report.parity
    assert p.failed and not p.available and not report.passed
    assert p.error == (
        "the scorer reference failed: scoring raised ZeroDivisionError: the validator's scorer divided by zero"
    )


def test_a_scorer_file_changed_during_the_run_is_caught(registry: Any, good: Any, tmp_path: Path) -> None:
    from scoregate.validation.reference import score_reference
    from scoregate.validation.settings import Clock, ValidationSettings

    path = tmp_path / "reference.py"
    path.write_text("def score(rows):\n    return [{} for r in rows]\n")
    settings = ValidationSettings(reference="scorer", reference_scorer=path)
    rows = [{"income": 50000.0, "age": 40, "debt_ratio": 0.3, "purpose": "car"}]
    recorded = hashlib.sha256(b"what the run recorded before the file changed").hexdigest()
    answer = score_reference(registry, good, rows, settings, Clock(60), scorer_digest=recorded)
    assert answer.failed and "changed during the run" in (answer.error or "")


def test_onnx_reference_converts_the_pipeline(registry: Any, good: Any) -> None:
    report = validate(registry, good.ref, reference="onnx")
    p = report.parity
    assert report.passed, p.error
    assert p.reference == "onnx" and p.available and p.outcome == "compared"
    assert p.rows_compared > 2000 and p.mismatches == 0
    assert p.details["converter"].startswith("skl2onnx") and p.details["precision"] == "float32"
    assert p.details["inputs"] == {
        "income": "FloatTensorType",
        "age": "FloatTensorType",
        "debt_ratio": "FloatTensorType",
        "purpose": "StringTensorType",
    }
    # float32: not bit-identical, but well inside the independent tolerance
    assert 0 < p.comparison.max_observed < report.settings.independent_atol


def test_onnx_reference_catches_a_target_that_drifts(registry: Any, good: Any) -> None:
    loaded = registry.load(good.ref)
    target = PythonTarget(LoadedModel(loaded.version, Perturbed(loaded.scorer, 1e-3)))
    report = validate(registry, good.ref, target=target, reference="onnx")
    assert report.parity.mismatches > 0 and "differs from the onnx reference" in report.failures[0].reason


def test_onnx_reference_says_why_it_is_unavailable(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    version = python_model(registry, tmp_path / "py", "plain", HANGS_IN_REFERENCE_ONLY, credit_files, copy_model=True)
    report = validate(registry, version.ref, reference="onnx")
    p = report.parity
    assert p.outcome == "unavailable" and not p.available and not p.failed
    assert p.error == (
        "the onnx reference is unavailable: it converts scikit-learn models only, and plain@1 is a python model"
    )
    assert p.passed and report.passed  # whether unavailable is acceptable is the policy's call


def test_onnx_reference_for_gradient_boosting(registry: Any, credit_files: dict[str, Path], tmp_path: Path) -> None:
    """Converted where skl2onnx can; otherwise one line naming the converter and why."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_parquet(credit_files["train"])
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["purpose"]), remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=20),
    ).fit(frame.drop(columns="default"), frame["default"])
    joblib.dump(model, tmp_path / "hgb.joblib")
    version = registry.register(
        "hgb", tmp_path / "hgb.joblib", flavor="sklearn", train_data=credit_files["train"], target="default"
    )
    p = validate(registry, version.ref, reference="onnx").parity
    if p.available:
        assert p.mismatches == 0 and p.rows_compared > 2000
    else:
        assert p.outcome == "unavailable" and "\n" not in p.error
        assert p.error.startswith("the onnx reference is unavailable: skl2onnx ")
        assert "cannot convert Pipeline(ColumnTransformer, HistGradientBoostingClassifier)" in p.error


HANGS_IN_REFERENCE_ONLY = """
    import os
    import subprocess
    import time
    from pathlib import Path

    import joblib
    import pandas as pd

    def elsewhere():
        host = os.environ.get("SG_TEST_HOST_PID")
        return host is not None and int(host) != os.getpid()

    class Scorer:
        def __init__(self, directory):
            self.model = joblib.load(Path(directory) / "model.joblib")
            if elsewhere() and os.environ.get("SG_TEST_HANG") == "load":
                time.sleep(600)

        def predict(self, frame):
            if elsewhere() and os.environ.get("SG_TEST_HANG") == "score":
                child = subprocess.Popen(["sleep", "600"])
                Path(os.environ["SG_TEST_PIDS"]).write_text(f"{os.getpid()} {child.pid}")
                time.sleep(600)
            p = self.model.predict_proba(frame)[:, 1]
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_model_hanging_in_the_reference_process_is_killed(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("SG_TEST_HOST_PID", str(os.getpid()))
    monkeypatch.setenv("SG_TEST_PIDS", str(tmp_path / "pids"))
    # registration scores in a worker process too: the hang starts once the version is registered
    version = python_model(registry, tmp_path / "hang", "hangs", HANGS_IN_REFERENCE_ONLY, credit_files, copy_model=True)
    monkeypatch.setenv("SG_TEST_HANG", "score")
    report = validate(registry, version.ref, timeout_s=1.0, out_dir=tmp_path / "out")
    p = report.parity
    assert p.failed and not p.available and p.outcome == "failed"
    assert p.error == "the subprocess reference process did not answer within 3 s of scoring: killed"
    assert not report.passed and report.stopped is None
    # every case ran, and the report was written
    assert all(c.outcome != "not run" for c in report.cases) and not report.failures
    assert json.loads((tmp_path / "out" / "report.json").read_text())["parity"]["error"] == p.error
    # the process group went with it: the reference process and the process it started
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    assert all(gone(pid) for pid in pids)


def test_a_model_hanging_while_the_reference_loads_it_is_killed(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("SG_TEST_HOST_PID", str(os.getpid()))
    monkeypatch.setattr("scoregate.validation.reference.REFERENCE_LOAD_S", 5.0)
    version = python_model(registry, tmp_path / "hang", "hangs", HANGS_IN_REFERENCE_ONLY, credit_files, copy_model=True)
    monkeypatch.setenv("SG_TEST_HANG", "load")
    report = validate(registry, version.ref, timeout_s=1.0)
    assert report.parity.error == (
        "the subprocess reference process did not get ready within 5 s (starting, loading): killed"
    )
    assert not report.passed
