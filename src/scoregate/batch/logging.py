"""``--log``: a finished job's scored rows appended to the prediction log, so monitoring sees batch traffic.

Each chunk becomes one logged "request" whose id is ``<job>/<chunk>`` (route ``batch``),
its scored rows numbered in order (the output's ``_row`` gives each one's position in the
job's input); the inputs are read again from
the input chunk (the output parts hold only the kept columns and the outputs). Written once
per job, after its last chunk, and marked done in the job's folder so a second ``resume``
does not log twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from scoregate.batch.chunk import ROW_COLUMN, ChunkReader, TextRows, records_of
from scoregate.batch.plan import Manifest
from scoregate.batch.store import JobFolder, read_part


@dataclass(frozen=True)
class _Outputs:
    """The shape the prediction log takes outputs in: names and columns of Python values."""

    names: list[str]
    columns: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.names, values, strict=True)) for values in zip(*self.columns, strict=True)]


def log_outputs(settings: Any, folder: JobFolder, manifest: Manifest) -> int:
    from scoregate.registry.predictions import Durability, PredictionLog
    from scoregate.schema import ModelSchema

    marker = folder.meta / "logged.json"
    if marker.exists():
        return 0
    schema = ModelSchema.model_validate(manifest.input_schema)
    reader = ChunkReader(schema, [])
    log = PredictionLog(settings.predictions_dir, durability=Durability.OFF)
    written = 0
    done = folder.done()
    for index, record in sorted(done.items()):
        chunk = manifest.chunks[index]
        part = read_part(folder.root / record.part, manifest.options.output_format)
        if not part.num_rows:
            continue
        rows = reader.read(manifest.inputs[chunk.file], chunk)
        records = rows.records if isinstance(rows, TextRows) else records_of(rows, schema.feature_names)
        positions = part.column(ROW_COLUMN).to_numpy() - chunk.first_row
        inputs = [records[i] for i in positions]
        names = [n for n in part.column_names if n != ROW_COLUMN and n not in manifest.options.keep]
        outputs = _Outputs(names, [part.column(n).to_pylist() for n in names])
        log.append(manifest.name, manifest.version, f"{manifest.job}/{index}", inputs, outputs, 0.0, route="batch")
        written += len(inputs)
        if written >= 200_000:
            log.flush()
    log.flush()
    folder.write_json(marker, {"rows": written, "at": time.time()})
    return written
