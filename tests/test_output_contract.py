"""The output contract is declared or confirmed at registration, never learned from NaN the model returned."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from scoregate.errors import InvalidInputError, NotFoundError, SchemaViolationError
from scoregate.registry import Registry
from scoregate.registry.tables import VersionRow
from scoregate.schema import FeatureType, OutputContract, OutputField
from scoregate.validation import validate
from tests.conftest import make_credit_data

#: proba_1 is NaN where income is missing: a defect unless someone declares it intended
NAN_FOR_MISSING_INCOME = """
    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            income = frame["income"].to_numpy(dtype=float)
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - np.nan_to_num(income) / 50000)))
            p = np.where(np.isnan(income), np.nan, p)
            return pd.DataFrame({"prediction": (frame["debt_ratio"] > 0.5).astype(int), "proba_1": p})
"""

DECLARED = [
    OutputField(name="prediction", type=FeatureType.INT),
    OutputField(name="proba_1", type=FeatureType.FLOAT, nullable=True),
]


@pytest.fixture
def train_with_nulls(tmp_path: Path) -> Path:
    frame = make_credit_data()
    frame.loc[frame.index[::10], "income"] = np.nan  # every tenth applicant gave no income
    path = tmp_path / "nulls.parquet"
    frame.to_parquet(path, index=False)
    return path


def nan_scorer(tmp_path: Path) -> Path:
    folder = tmp_path / "nan-scorer"
    folder.mkdir(exist_ok=True)
    (folder / "scorer.py").write_text(textwrap.dedent(NAN_FOR_MISSING_INCOME))
    return folder


def test_nan_outputs_are_refused_unless_declared(registry: Registry, train_with_nulls: Path, tmp_path: Path) -> None:
    folder = nan_scorer(tmp_path)
    with pytest.raises(SchemaViolationError) as refused:
        registry.register("nanny", folder, flavor="python", train_data=train_with_nulls, target="default")
    assert "returned NaN or null in output 'proba_1'" in refused.value.message
    assert "declare the outputs" in refused.value.message and "\n" not in refused.value.message
    with pytest.raises(NotFoundError):
        registry.resolve("nanny")  # nothing stored

    version = registry.register(
        "nanny", folder, flavor="python", train_data=train_with_nulls, target="default", outputs=DECLARED
    )
    assert version.input_schema.output_contract is OutputContract.DECLARED
    assert version.output_schema == DECLARED
    # declared NaN is part of the contract: the null-income cases pass
    report = validate(registry, version.ref, reference="none")
    by_id = {c.case.id: c for c in report.cases}
    assert by_id["income:null"].status == "pass", by_id["income:null"].reason
    assert by_id["income:missing"].status == "pass"
    assert report.check("output_contract").details["contract"] == "declared"


def test_declared_outputs_are_checked_against_the_model(
    registry: Registry, train_with_nulls: Path, tmp_path: Path
) -> None:
    strict = [o.model_copy(update={"nullable": False}) for o in DECLARED]
    with pytest.raises(
        SchemaViolationError, match=r"do not match the declared outputs: row 0 .*NaN in output 'proba_1'"
    ):
        registry.register(
            "nanny",
            nan_scorer(tmp_path),
            flavor="python",
            train_data=train_with_nulls,
            target="default",
            outputs=strict,
        )
    missing = [OutputField(name="score", type=FeatureType.FLOAT)]
    with pytest.raises(SchemaViolationError, match="output 'score' is missing"):
        registry.register(
            "nanny",
            nan_scorer(tmp_path),
            flavor="python",
            train_data=train_with_nulls,
            target="default",
            outputs=missing,
        )


def test_a_sound_model_needs_no_declaration(registry: Registry, good: Any) -> None:
    schema = good.input_schema
    assert schema.output_contract is OutputContract.INFERRED
    assert [o.nullable for o in good.output_schema] == [False, False, False]
    assert registry.resolve(good.ref).input_schema.output_contract is OutputContract.INFERRED


@pytest.mark.parametrize("flavor", ["sklearn", "xgboost", "lightgbm"])
def test_flavors_give_no_nan_for_rows_with_nulls(
    registry: Registry, train_with_nulls: Path, tmp_path: Path, flavor: str
) -> None:
    """Models that take missing values natively score every valid row: the common path needs no declaration."""
    frame = pd.read_parquet(train_with_nulls)
    x = frame[["income", "age", "debt_ratio"]]
    data = tmp_path / "numeric.parquet"
    frame[["income", "age", "debt_ratio", "default"]].to_parquet(data, index=False)
    if flavor == "sklearn":
        from sklearn.ensemble import HistGradientBoostingClassifier

        path = tmp_path / "model.joblib"
        joblib.dump(HistGradientBoostingClassifier(max_iter=20).fit(x, frame["default"]), path)
    elif flavor == "xgboost":
        xgboost = pytest.importorskip("xgboost")
        path = tmp_path / "model.json"
        xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, frame["default"]).save_model(path)
    else:
        lightgbm = pytest.importorskip("lightgbm")
        path = tmp_path / "model.txt"
        lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, frame["default"]).booster_.save_model(path)
    version = registry.register(f"nulls-{flavor}", path, flavor=flavor, train_data=data, target="default")
    assert version.input_schema.feature("income").nullable
    assert version.input_schema.output_contract is OutputContract.INFERRED
    assert not any(o.nullable for o in version.output_schema)


def test_stored_versions_keep_their_outputs_but_undeclared_nan_fails_validation(
    registry: Registry, train_with_nulls: Path, tmp_path: Path
) -> None:
    version = registry.register(
        "nanny", nan_scorer(tmp_path), flavor="python", train_data=train_with_nulls, target="default", outputs=DECLARED
    )
    # a version stored before the contract was recorded: nullable learned silently, no output_contract
    with registry.mutation(None, version.ref) as (session, actor):  # recorded, so the audit log agrees
        row = session.scalars(select(VersionRow)).one()
        row.input_schema = {k: v for k, v in row.input_schema.items() if k != "output_contract"}
        session.flush()
        registry.record_event(session, actor, "test.legacy_contract", version.ref)
    legacy = registry.resolve(version.ref)
    assert legacy.input_schema.output_contract is None
    assert legacy.output_schema == DECLARED  # kept as stored
    assert legacy.input_schema.digest() == version.input_schema.digest()  # the input digest did not move
    assert legacy.input_schema.contract_digest() != version.input_schema.contract_digest()
    report = validate(registry, version.ref, reference="none")
    failed = {c.case.id: c.reason for c in report.failures}
    assert "NaN in output 'proba_1' where the output schema forbids it" in failed["income:null"]
    contract = report.check("output_contract")
    assert contract.status == "fail" and contract.details["contract"] == "unrecorded"
    assert contract.details["nullable_not_declared"] == ["proba_1"]


def test_outputs_declared_twice_are_refused(registry: Registry, credit_files: dict[str, Path]) -> None:
    frame = pd.read_parquet(credit_files["train"])
    from scoregate.schema import infer_schema

    schema = infer_schema(frame, target="default").model_copy(update={"outputs": DECLARED})
    with pytest.raises(InvalidInputError, match="declared twice"):
        registry.register("twice", credit_files["model"], flavor="sklearn", schema=schema, outputs=DECLARED)
    with pytest.raises(InvalidInputError, match="the declared outputs name proba_1 more than once"):
        registry.register("twice", credit_files["model"], flavor="sklearn", outputs=[*DECLARED, DECLARED[1]])


def test_cli_register_outputs_file(run, tmp_path: Path, train_with_nulls: Path) -> None:  # type: ignore[no-untyped-def]
    folder = nan_scorer(tmp_path)
    code, _, err = run("register", "nanny", folder, "--flavor", "python", "--train-data", train_with_nulls)
    assert code == 3 and "declare the outputs" in err and len(err.strip().splitlines()) == 1
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"outputs": [o.model_dump(mode="json") for o in DECLARED]}))
    code, out, err = run(
        "register", "nanny", folder, "--flavor", "python", "--train-data", train_with_nulls, "--outputs", outputs
    )
    assert code == 0, err
    code, out, _ = run("models", "show", "nanny@1")
    assert "proba_1 (float, nullable)" in out and "(declared)" in out
    for bad, message in ((tmp_path / "none.json", "cannot read outputs file"), (folder / "scorer.py", "not JSON")):
        code, _, err = run("register", "nanny", folder, "--flavor", "python", "--outputs", bad)
        assert code == 3 and message in err and len(err.strip().splitlines()) == 1
    outputs.write_text(json.dumps([{"name": "p", "type": "decimal"}]))
    code, _, err = run("register", "nanny", folder, "--flavor", "python", "--outputs", outputs)
    assert code == 3 and "invalid outputs file" in err
