"""Spark: ``--engine spark`` runs the chunk plan as Spark tasks, and :func:`spark_udf` scores a
DataFrame column-wise, both through the same chunk scorer and digest check as the local engine.

A task is one chunk: it reads the chunk from the input, scores it and commits it to the
job's folder (storage every executor sees), returning the commit record. Spark retries a
failed task once (``local[N,2]``, or ``spark.task.maxFailures``), which is the local
engine's retry. The artifact goes to the executors as a broadcast of the verified blob,
and each Python worker checks its digest before loading it, once per worker process.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd  # at module level: pandas_udf resolves the UDF's type hints in this module

from scoregate.batch.local import Stop
from scoregate.batch.plan import Manifest
from scoregate.batch.store import ChunkRecord, JobFolder
from scoregate.errors import ConfigurationError
from scoregate.schema import FeatureType

#: Loaded scorers of this Python worker, by artifact digest: a worker loads a version once.
_LOADED: dict[str, Any] = {}


def _scorer(manifest_like: dict[str, Any], blob: bytes) -> Any:
    """The chunk scorer of a version on this executor, from the broadcast blob (digest-checked)."""
    from scoregate.batch.chunk import ChunkScorer
    from scoregate.batch.worker import check_artifact, unpack_artifact
    from scoregate.flavors import get_flavor
    from scoregate.schema import ModelSchema

    digest = manifest_like["artifact_digest"]
    key = f"{digest}:{','.join(manifest_like['keep'])}"
    if key not in _LOADED:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        where = Path(tempfile.mkdtemp(prefix="scoregate-spark-"))
        manifest = _Artifact(**{k: manifest_like[k] for k in ("artifact_kind", "artifact_name")})
        artifact = unpack_artifact(blob, manifest, where)  # type: ignore[arg-type]
        check_artifact(artifact, manifest_like["artifact_kind"], where / "blob", digest)
        scorer = get_flavor(manifest_like["flavor"]).load(artifact)
        schema = ModelSchema.model_validate(manifest_like["input_schema"])
        _LOADED[key] = ChunkScorer(scorer, schema, manifest_like["keep"])
    return _LOADED[key]


class _Artifact:
    def __init__(self, artifact_kind: str, artifact_name: str) -> None:
        self.artifact_kind = artifact_kind
        self.artifact_name = artifact_name


def share_python_path() -> None:
    """Executors run this interpreter with this process's import path. Spark resolves a virtualenv's
    ``python`` link to the base interpreter, which would not see the venv's packages, so the path
    (site-packages included) goes to the workers in ``PYTHONPATH``; set before the JVM starts."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    have = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([*have, *(p for p in sys.path if p and p not in have)])


def _session(master: str | None, workers: int) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigurationError("--engine spark needs pyspark: pip install pyspark") from None
    master = master or os.environ.get("SPARK_MASTER") or f"local[{workers},2]"  # 2: a failed task is retried once
    share_python_path()
    return (
        SparkSession.builder.master(master)
        .appName("scoregate-batch")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )


def run_spark(
    registry: Any,
    folder: JobFolder,
    manifest: Manifest,
    *,
    workers: int,
    storage: dict[str, Any],
    on_commit: Callable[[ChunkRecord], Stop | None],
    master: str | None = None,
) -> Stop | None:
    blob = registry.artifacts.fetch(manifest.artifact_digest).read_bytes()  # verified on fetch
    done = folder.done()
    todo = [c.index for c in manifest.chunks if c.index not in done]
    from pyspark.sql import SparkSession

    owned = SparkSession.getActiveSession() is None  # a session the caller made is the caller's to stop
    spark = _session(master, workers)
    try:
        shared = spark.sparkContext.broadcast(blob)
        described = _described(manifest)
        root = str(folder.root)

        def score(indexes: Any) -> Any:
            from scoregate.batch.store import JobFolder as Folder
            from scoregate.batch.worker import score_chunk

            job_folder = Folder(Path(root))
            job = job_folder.manifest()
            scorer = _scorer(described, shared.value)
            for index in indexes:
                yield score_chunk(scorer, job_folder, job, index, 1, storage).model_dump_json()

        try:
            records = spark.sparkContext.parallelize(todo, max(1, len(todo))).mapPartitions(score).collect()
        except Exception as exc:  # Py4JJavaError: the task failed twice
            return Stop(f"a Spark task failed twice: {_last_line(exc)}")
        for text in records:
            stop = on_commit(ChunkRecord.model_validate_json(text))
            if stop is not None:
                return stop
        return None
    finally:
        if owned:
            spark.stop()


def _described(manifest: Manifest) -> dict[str, Any]:
    return {
        "artifact_digest": manifest.artifact_digest,
        "artifact_kind": manifest.artifact_kind,
        "artifact_name": manifest.artifact_name,
        "flavor": manifest.flavor,
        "input_schema": manifest.input_schema,
        "keep": list(manifest.options.keep),
    }


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if "Error" in line or "error" in line]
    return (lines[-1] if lines else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]


_SPARK_TYPES = {
    FeatureType.FLOAT: "double",
    FeatureType.INT: "bigint",
    FeatureType.BOOL: "boolean",
    FeatureType.CATEGORY: "string",
    FeatureType.STRING: "string",
    FeatureType.DATETIME: "timestamp",
}


def spark_udf(ref: str, *, registry: Any = None, spark: Any = None) -> Any:
    """A pandas UDF that scores a version on a Spark DataFrame, MLflow ``spark_udf``'s role.

    ``df.withColumn("score", udf(struct(*features)))`` (a struct of the feature columns,
    by name; ``struct("*")`` passes them all) returns a struct of the version's outputs.
    Rows are validated and scored by the same chunk scorer as a batch job (so as the
    server), after the artifact's digest is checked on the executor; a row that breaks
    the version's rules gets null outputs, since a UDF cannot drop it.
    """
    import pyarrow as pa
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf

    from scoregate.batch.chunk import ROW_COLUMN
    from scoregate.refs import ModelRef

    if registry is None:
        from scoregate.registry import Registry

        registry = Registry.open()
    version = registry.resolve(ModelRef.parse(ref, require_selector=True))
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise ConfigurationError("spark_udf needs an active SparkSession (or pass spark=...)")
    blob = registry.artifacts.fetch(version.artifact_digest).read_bytes()
    if hashlib.sha256(blob).hexdigest() != version.artifact_digest:  # fetch verified it; say so again here
        raise ConfigurationError(f"{version.ref}: the artifact does not hash to its digest")
    shared = spark.sparkContext.broadcast(blob)
    schema = version.input_schema
    described = {
        "artifact_digest": version.artifact_digest,
        "artifact_kind": version.artifact_kind,
        "artifact_name": version.artifact_name,
        "flavor": version.flavor,
        "input_schema": schema.model_dump(mode="json"),
        "keep": [],
    }
    outputs = version.output_schema
    returns = ", ".join(f"`{o.name}` {_SPARK_TYPES[o.type]}" for o in outputs)
    names = schema.feature_names

    @pandas_udf(returns)  # type: ignore[call-overload,misc]
    def score(rows: pd.DataFrame) -> pd.DataFrame:
        scorer = _scorer(described, shared.value)
        missing = [name for name in names if name not in rows.columns]
        if missing:
            raise ValueError(f"{version.ref}: the struct passed to the UDF lacks the feature(s) {', '.join(missing)}")
        frame = rows[names].reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        scored = scorer.score(table, 0).outputs.to_pandas().set_index(ROW_COLUMN)
        result = scored.reindex(range(len(frame)))[[o.name for o in outputs]]
        for o in outputs:  # a broken row's null in an integer or boolean output
            if o.type is FeatureType.INT:
                result[o.name] = result[o.name].astype("Int64")
            elif o.type is FeatureType.BOOL:
                result[o.name] = result[o.name].astype("boolean")
        return result

    return score
