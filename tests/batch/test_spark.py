"""Spark on a real local session (pyspark, Java): ``--engine spark`` gives the local engine's bytes, and
``spark_udf`` scores a DataFrame as a batch job does."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from scoregate.batch import job
from scoregate.batch.plan import BatchOptions, Engine
from scoregate.config import Settings
from scoregate.registry import Registry

from .conftest import FEATURES, applicants, write_parquet

pytest.importorskip("pyspark")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    from scoregate.batch.spark import share_python_path

    share_python_path()
    session = (
        SparkSession.builder.master("local[2,2]")
        .appName("scoregate-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_engine_and_spark_udf_score_as_the_local_engine(
    tmp_path: Path, batch_home: Settings, float_model, spark
) -> None:
    frame = applicants(8_000, seed=31)
    frame.loc[[2, 7_000], "x0"] = float("nan")
    source = write_parquet(frame, tmp_path / "in.parquet", 2_000)
    registry = Registry.open(batch_home)
    options = BatchOptions(chunk_rows=2_000, keep=("id",))
    local_folder, local_manifest = job.plan(float_model, str(source), tmp_path / "local", options, who="t")
    local = job.run(registry, local_folder, local_manifest, workers=1)
    folder, manifest = job.plan(float_model, str(source), tmp_path / "spark", options, who="t")
    result = job.run(registry, folder, manifest, engine=Engine.SPARK, workers=2)
    assert result.state is job.JobState.DONE, result.message
    assert result.output_digest == local.output_digest  # the same bytes, part for part

    from scoregate.batch.spark import spark_udf

    udf = spark_udf("credit-float@1", registry=registry, spark=spark)
    df = spark.read.parquet(str(source))
    from pyspark.sql.functions import struct

    scored = df.withColumn("out", udf(struct(*FEATURES))).select("id", "out.*").toPandas()
    scored = scored.sort_values("id").set_index("id")
    batch = pq.read_table(local_folder.root).to_pandas().set_index("id").sort_index()
    assert scored.loc[[2, 7_000]].isna().all().all()  # broken rows: null outputs
    kept = scored.drop(index=[2, 7_000])
    assert list(kept.index) == list(batch.index)
    for name in ("prediction", "proba_0", "proba_1"):
        assert np.array_equal(kept[name].to_numpy(), batch[name].to_numpy()), name
