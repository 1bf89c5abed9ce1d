"""Make a synthetic credit-default data set and train two model versions.

No download: the data is generated here. Writes into the folder given as the first
argument: train.parquet, rows.json (five applicants to score), v1.joblib (a
logistic regression) and v2.joblib (gradient boosting), and metrics.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def make_applicants(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.lognormal(10.8, 0.4, n).round(2),
            "age": rng.integers(18, 76, n),
            "debt_ratio": rng.beta(2, 5, n).round(4),
            "credit_lines": rng.poisson(4, n),
            "employment": rng.choice(["salaried", "self-employed", "unemployed", "retired"], n, p=[0.6, 0.2, 0.1, 0.1]),
            "purpose": rng.choice(["car", "home", "education", "business"], n),
        }
    )
    risk = (
        -2.6
        + 3.0 * (frame["debt_ratio"] > 0.4)
        + 0.002 * (frame["age"] - 45) ** 2
        - 0.6 * np.log(frame["income"] / 50_000)
        + 0.8 * (frame["employment"] == "unemployed")
        + 0.4 * (frame["purpose"] == "business")
    )
    frame["default"] = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(int)
    return frame


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = make_applicants(5_000)
    data.to_parquet(out / "train.parquet", index=False)
    features, target = data.drop(columns="default"), data["default"]
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.25, random_state=0)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["employment", "purpose"]), remainder=StandardScaler()
    )
    models = {
        "v1": make_pipeline(encode, LogisticRegression(max_iter=1000)),
        "v2": make_pipeline(encode, HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, random_state=0)),
    }
    metrics = {}
    for name, model in models.items():
        model.fit(x_train, y_train)
        metrics[name] = round(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]), 4)
        joblib.dump(model, out / f"{name}.joblib")
    features.head(5).to_json(out / "rows.json", orient="records", indent=1)
    (out / "metrics.json").write_text(json.dumps(metrics))
    print(f"trained v1 (logistic regression, AUC {metrics['v1']}) and v2 (gradient boosting, AUC {metrics['v2']})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
