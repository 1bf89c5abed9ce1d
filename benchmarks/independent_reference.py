"""How far the ONNX reference (skl2onnx + onnxruntime, float32) is from scikit-learn.

The measurement behind ``DEFAULT_INDEPENDENT_ATOL``/``RTOL`` in
``scoregate/validation/settings.py``: each model is scored by scikit-learn (through the
sklearn flavor) and by the ONNX reference's own scoring path on the demo's synthetic
applicants. Printed per model: the largest absolute difference, the largest relative one
(values above 1e-3) and, as the ratio, the worst difference over its tolerance bound
``atol + rtol*|reference|`` (below 1: within tolerance). A model skl2onnx cannot convert
is listed with the reason. Run: ``.venv/bin/python benchmarks/independent_reference.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.flavors.sklearn import SklearnScorer
from scoregate.registry.records import LoadedModel
from scoregate.schema import infer_schema
from scoregate.validation.cases import frame_to_rows
from scoregate.validation.independent import Unavailable, onnx_scorer
from scoregate.validation.settings import DEFAULT_INDEPENDENT_ATOL, DEFAULT_INDEPENDENT_RTOL
from scoregate.validation.targets import output_records

ROWS = 5_000
CATEGORIES = ["employment", "purpose"]


def applicants() -> pd.DataFrame:
    path = Path(__file__).resolve().parents[1] / "examples" / "credit_risk" / "train.py"
    spec = importlib.util.spec_from_file_location("credit_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_applicants(ROWS)


def models() -> dict[str, tuple[Any, str]]:
    def encode() -> Any:
        return make_column_transformer((OneHotEncoder(handle_unknown="ignore"), CATEGORIES), remainder=StandardScaler())

    return {
        "logistic regression": (make_pipeline(encode(), LogisticRegression(max_iter=1000)), "default"),
        "random forest": (make_pipeline(encode(), RandomForestClassifier(n_estimators=50, random_state=0)), "default"),
        "gradient boosting": (make_pipeline(encode(), GradientBoostingClassifier(random_state=0)), "default"),
        "hist gradient boosting": (make_pipeline(encode(), HistGradientBoostingClassifier(random_state=0)), "default"),
        "ridge (income)": (make_pipeline(encode(), Ridge()), "income"),
    }


class _Version:
    def __init__(self, schema: Any) -> None:
        self.input_schema, self.ref, self.flavor = schema, "benchmark@1", "sklearn"


def measure(name: str, model: Any, target: str, frame: pd.DataFrame) -> str:
    x, y = frame.drop(columns=target), frame[target]
    model.fit(x, y)
    schema = infer_schema(frame, target=target)
    rows = frame_to_rows(schema, frame)
    expected = output_records(SklearnScorer(model).predict(x.reset_index(drop=True)))
    try:
        score, details = onnx_scorer(LoadedModel(_Version(schema), SklearnScorer(model)))  # type: ignore[arg-type]
    except Unavailable as exc:
        return f"{name:24} unavailable: {exc}"
    got = score(rows)
    worst_abs = worst_rel = worst_ratio = 0.0
    for a, b in zip(got, expected, strict=True):
        assert a is not None
        for column, reference in b.items():
            if isinstance(reference, str) or column not in a:
                continue
            value, reference = float(a[column]), float(reference)
            diff = abs(value - reference)
            worst_abs = max(worst_abs, diff)
            if abs(reference) > 1e-3:
                worst_rel = max(worst_rel, diff / abs(reference))
            worst_ratio = max(
                worst_ratio, diff / (DEFAULT_INDEPENDENT_ATOL + DEFAULT_INDEPENDENT_RTOL * abs(reference))
            )
    classifier = any(c.startswith("proba_") for c in expected[0])
    labels = sum(1 for a, b in zip(got, expected, strict=True) if a and str(a["prediction"]) != str(b["prediction"]))
    return (
        f"{name:24} max |diff| {worst_abs:9.3g}  max rel {worst_rel:9.3g}  worst/tolerance {worst_ratio:7.3g}"
        + (f"  labels differing {labels} of {len(rows)}" if classifier else "")
        + f"  ({details['precision']})"
    )


def main() -> None:
    frame = applicants()
    print(
        f"{ROWS} rows; tolerance atol={DEFAULT_INDEPENDENT_ATOL:g}, rtol={DEFAULT_INDEPENDENT_RTOL:g} "
        "(worst/tolerance below 1 passes)"
    )
    for name, (model, target) in models().items():
        print(measure(name, model, target, frame))


if __name__ == "__main__":
    main()
