from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.errors import FlavorError, InvalidInputError
from scoregate.flavors import get_flavor, load_scorer


def test_pipeline_with_string_categories(tmp_path, mixed_data):
    frame, labels = mixed_data
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["x1", "k"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, labels)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)

    scorer = load_scorer("sklearn", path)
    batch = frame.iloc[:40].reset_index(drop=True)
    out = scorer.predict(batch)

    assert list(out.columns) == ["prediction", "proba_no", "proba_yes"]
    assert isinstance(out.index, type(batch.index)) and len(out) == 40
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(batch))
    np.testing.assert_allclose(out[["proba_no", "proba_yes"]].to_numpy(), model.predict_proba(batch), rtol=1e-6)


def test_numpy_fitted_classifier_pickle(tmp_path, numeric_data):
    frame, _, multi = numeric_data
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(frame.to_numpy(), multi)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))

    out = load_scorer("sklearn", path).predict(frame)

    assert list(out.columns) == ["prediction", "proba_0", "proba_1", "proba_2"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame.to_numpy()))
    np.testing.assert_allclose(out.iloc[:, 1:].to_numpy(), model.predict_proba(frame.to_numpy()), rtol=1e-6)


def test_regressor(tmp_path, numeric_data):
    frame, binary, _ = numeric_data
    model = LinearRegression().fit(frame, frame["x1"] * 2 + binary)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)

    out = load_scorer("sklearn", path).predict(frame)

    assert list(out.columns) == ["prediction"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))


def test_packages():
    assert get_flavor("sklearn").packages == ("scikit-learn", "joblib", "numpy")


def test_text_file_is_rejected(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_text("this is not a model\n")
    with pytest.raises(FlavorError, match="sklearn flavor") as info:
        load_scorer("sklearn", path)
    assert "\n" not in info.value.message


def test_pickle_without_predict_is_rejected(tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump({"not": "a model"}, path)
    with pytest.raises(FlavorError, match=r"sklearn flavor.*dict"):
        load_scorer("sklearn", path)


def test_unknown_flavor():
    with pytest.raises(InvalidInputError, match="unknown flavor 'tensorflow'"):
        load_scorer("tensorflow", "x")


def test_accepts_unseen_reads_the_fitted_encoders(tmp_path, mixed_data):
    """Only a column every transformer of which takes unknown levels is opened; the rest stay closed."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OrdinalEncoder

    frame, labels = mixed_data
    frame = frame.assign(shade=frame["colour"], tone=frame["colour"], hue=frame["colour"])

    def fitted(*transformers, **kw):
        model = Pipeline([("prep", ColumnTransformer(list(transformers), **kw)), ("clf", LogisticRegression())])
        path = tmp_path / "m.joblib"
        joblib.dump(model.fit(frame, labels), path)
        return load_scorer("sklearn", path).accepts_unseen()

    assert fitted(
        ("num", StandardScaler(), ["x1", "k"]),
        ("ignore", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ("raise", OneHotEncoder(), ["shade"]),
        ("ord", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), [4]),
        (
            "imputed",
            Pipeline(
                [("fill", SimpleImputer(strategy="most_frequent")), ("oh", OneHotEncoder(handle_unknown="ignore"))]
            ),
            ["hue"],
        ),
    ) == {"colour", "tone", "hue"}
    # a column also read by an encoder that raises stays closed; one the model drops takes anything
    assert fitted(
        ("a", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ("b", OrdinalEncoder(), ["colour"]),
        ("num", StandardScaler(), ["x1"]),
    ) == {"k", "shade", "tone", "hue"}
    assert (
        load_scorer("sklearn", _dump(tmp_path, LogisticRegression().fit(frame[["x1"]], labels))).accepts_unseen()
        == set()
    )


def _dump(tmp_path, model):
    path = tmp_path / "plain.joblib"
    joblib.dump(model, path)
    return path
