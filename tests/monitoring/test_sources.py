"""Reading files in record batches: the same counts from CSV and Parquet, bounded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoregate.errors import InvalidInputError
from scoregate.monitoring.counts import Accumulator, Bins, Kind
from scoregate.monitoring.sources import Column, FileSource


def test_booleans_and_labels_count_the_same_from_csv_and_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"flag": rng.random(5_000) < 0.3, "x": rng.normal(size=5_000)})
    frame.loc[::50, "x"] = np.nan
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    frame.to_csv(tmp_path / "f.csv", index=False)  # pandas writes True/False
    columns = [Column("flag", Kind.CATEGORICAL, boolean=True), Column("x", Kind.NUMERIC)]
    bins = [Bins("flag", Kind.CATEGORICAL, levels=("false", "true")), Bins("x", Kind.NUMERIC, edges=(-1.0, 0.0, 1.0))]
    counted = []
    for name in ("f.parquet", "f.csv"):
        acc = Accumulator(bins)
        source = FileSource(tmp_path / name, columns, batch_rows=700)
        for batch in source.batches():
            acc.update(batch)
        assert source.rows == 5_000 and len(source.sha256) == 64
        counted.append(acc)
    parquet, csv = counted
    assert (
        parquet["flag"].counts.tolist()
        == csv["flag"].counts.tolist()
        == [
            int((~frame["flag"]).sum()),
            int(frame["flag"].sum()),
            0,
        ]
    )
    assert parquet["x"].counts.tolist() == csv["x"].counts.tolist() and parquet["x"].nulls == csv["x"].nulls == 100


def test_a_word_in_a_csv_boolean_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("flag\ntrue\nmaybe\n")
    source = FileSource(tmp_path / "f.csv", [Column("flag", Kind.CATEGORICAL, boolean=True)])
    with pytest.raises(InvalidInputError, match=r"cannot read .*maybe"):
        list(source.batches())


def test_a_file_changed_between_passes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pd.DataFrame({"x": np.arange(1_000.0)}).to_parquet(path, index=False)
    source = FileSource(path, [Column("x", Kind.NUMERIC)])
    first = sum(b.num_rows for b in source.batches())
    assert first == 1_000 and source.sha256 is not None
    pd.DataFrame({"x": np.arange(1_001.0)}).to_parquet(path, index=False)
    with pytest.raises(InvalidInputError, match="changed while it was being read"):
        list(source.batches())
