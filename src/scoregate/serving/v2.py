"""Open Inference Protocol (KServe V2 / Triton / MLServer) REST encoding.

Inputs come as named tensors: either one tensor per feature (shape ``[n]`` or
``[n, 1]``) or one 2-D numeric tensor ``[n, n_features]`` with the features in schema
order. Tensors may carry JSON ``data`` or, with the binary tensor extension that
Triton's clients use by default, raw bytes after the JSON header
(``Inference-Header-Content-Length``). Outputs are tensors named like the scorer's
outputs, returned as JSON data or as binary when asked (``binary_data_output`` or a
requested output's ``binary_data``).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from scoregate.errors import InvalidInputError, ScoregateError
from scoregate.schema import V2_DATATYPES, ModelSchema
from scoregate.serving.errors import HTTPError, bounded

NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NUMERIC_DATATYPES = frozenset(NUMPY_TYPES) - {"BOOL"}
DATATYPES = frozenset(NUMPY_TYPES) | {"BYTES"}

FEATURE_DATATYPE = V2_DATATYPES


class BadRequest(ScoregateError):
    status_code = 400
    code = "bad_request"


def _problem(field: str, rule: str, message: str) -> InvalidInputError:
    field = bounded(field, 100)
    return InvalidInputError(
        f"invalid inference request: {field}: {message} [rule: {rule}]",
        details=[{"field": field, "rule": rule, "message": message}],
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    """Parse the JSON header of a request; the rest (binary tensors) is returned as is."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)")
        head, rest = body[:header_length], body[header_length:]
    else:
        head, rest = body, b""
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the inference request must be a JSON object")
    return request, rest


def _flatten(data: Any, dims: int) -> list[Any]:
    """Row-major values of ``data`` nested at most ``dims`` deep; deeper lists stay as values (and
    fail validation), so a body nested a thousand levels costs no recursion."""
    if not isinstance(data, list):
        return [data]
    values = data
    for _ in range(dims - 1):
        if not any(isinstance(item, list) for item in values):
            break
        flat: list[Any] = []
        for item in values:
            if isinstance(item, list):
                flat.extend(item)
            else:
                flat.append(item)
        values = flat
    return values


def _decode_bytes_tensor(raw: bytes, field: str) -> list[Any]:
    values: list[Any] = []
    offset, size = 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            raise _problem(field, "binary", "truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > size:
            raise _problem(field, "binary", "truncated BYTES element")
        chunk = raw[offset : offset + length]
        offset += length
        try:
            values.append(chunk.decode())
        except UnicodeDecodeError:
            raise _problem(field, "binary", "BYTES element is not UTF-8 text") from None
    return values


def _tensor_values(
    tensor: dict[str, Any], index: int, binary: bytes, offset: int, max_rows: int
) -> tuple[list[Any], int, list[int]]:
    """Return (flat values, new binary offset, shape) of one input tensor."""
    name = tensor.get("name")
    shape = tensor.get("shape")
    data = tensor.get("data")
    datatype = tensor.get("datatype")
    # The common case first, with the same rules in fewer steps: a named JSON tensor of shape [n].
    if (
        name.__class__ is str
        and shape.__class__ is list
        and len(shape) == 1
        and data.__class__ is list
        and datatype.__class__ is str
        and datatype in DATATYPES
        and "parameters" not in tensor
    ):
        n = shape[0]
        if (
            n.__class__ is int
            and 0 <= n <= max_rows
            and len(data) == n
            and name
            and (not n or data[0].__class__ is not list)
        ):
            return data, offset, shape
    field = f"inputs[{index}]"
    if not isinstance(name, str) or not name:
        raise _problem(f"{field}.name", "type", "each input tensor needs a name (a non-empty string)")
    field = name
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise _problem(
            field,
            "datatype",
            f"unknown datatype {bounded(repr(datatype), 40)}; expected one of {', '.join(sorted(DATATYPES))}",
        )
    if not isinstance(shape, list) or not 0 < len(shape) <= 8 or not all(_is_count(d) for d in shape):
        raise _problem(
            field, "shape", f"shape must be a list of 1 to 8 non-negative integers, got {bounded(repr(shape), 60)}"
        )
    if shape[0] > max_rows:
        raise HTTPError(
            413,
            "too_many_rows",
            f"input {bounded(name, 100)!r} has {shape[0]} rows; a request may carry at most {max_rows}",
            details=[{"field": bounded(name, 100), "rule": "max_rows", "message": f"at most {max_rows} rows"}],
        )
    count = 1
    for d in shape:
        count *= d
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not _is_count(size) or offset + size > len(binary):
            raise _problem(field, "binary", f"binary_data_size {bounded(repr(size), 40)} exceeds the binary payload")
        raw = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            values = _decode_bytes_tensor(raw, field)
        else:
            dtype = np.dtype(NUMPY_TYPES[datatype])
            if size != count * dtype.itemsize:
                raise _problem(field, "shape", f"{size} bytes of {datatype} do not fill shape {shape}")
            values = np.frombuffer(raw, dtype=dtype).tolist()
    else:
        if "data" not in tensor:
            raise _problem(field, "required", "the tensor has neither data nor binary_data_size")
        values = _flatten(tensor["data"], len(shape))
        if datatype == "BYTES":
            values = [v.decode() if isinstance(v, bytes) else v for v in values]
    if len(values) != count:
        raise _problem(field, "shape", f"has {len(values)} values but shape {shape} needs {count}")
    return values, offset, shape


def decode_inputs(
    request: dict[str, Any],
    binary: bytes,
    schema: ModelSchema,
    *,
    max_rows: int = 10_000,
    drop_undeclared: bool = False,
    names: list[str] | None = None,
    known: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Turn the request's input tensors into JSON-like rows for the record validator.

    An input that is not a feature is refused (``unknown_input``), or skipped with
    ``drop_undeclared`` (the version's ``serving.extra_fields=drop``). ``names`` and
    ``known``: the schema's feature names as a list and a set, when the caller keeps them."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise _problem("inputs", "required", "the request needs a non-empty list of input tensors")
    if len(inputs) > 4 * len(schema.features) + 16:
        raise _problem("inputs", "max_items", f"{len(inputs)} input tensors for {len(schema.features)} features")
    names = names if names is not None else schema.feature_names
    known = known if known is not None else frozenset(names)
    offset = 0
    decoded = []
    for index, tensor in enumerate(inputs):
        values, offset, shape = _tensor_values(tensor, index, binary, offset, max_rows)
        if drop_undeclared and len(inputs) > 1 and tensor["name"] not in known:
            continue  # read (its binary bytes are skipped), never scored nor logged
        decoded.append((tensor["name"], values, shape, tensor["datatype"]))
    if not decoded:
        raise _problem("inputs", "required", "no input tensor names a feature of this model")

    # One 2-D tensor holding every feature, in schema order.
    if len(decoded) == 1 and (decoded[0][0] not in known or len(names) == 1):
        name, values, shape, datatype = decoded[0]
        if len(shape) == 2 and shape[1] == len(names) and (name not in known or len(names) == 1):
            if datatype not in NUMERIC_DATATYPES:
                raise _problem(str(name), "datatype", f"a 2-D feature tensor must be numeric, got {datatype}")
            width = len(names)
            return [dict(zip(names, values[i : i + width], strict=True)) for i in range(0, len(values), width)]
        if name not in known:
            raise _problem(
                str(name),
                "unknown_input",
                f"input {name!r} is not a feature; send one tensor per feature ({', '.join(names[:10])}"
                f"{', ...' if len(names) > 10 else ''}) or one [n, {len(names)}] tensor",
            )

    # One tensor per feature.
    rows: int | None = None
    columns: dict[str, list[Any]] = {}
    for name, values, shape, _datatype in decoded:
        if name not in known:
            raise _problem(str(name), "unknown_input", f"input {name!r} is not a feature of this model")
        if name in columns:
            raise _problem(name, "duplicate", f"input {name!r} is given twice")
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise _problem(name, "shape", f"a feature tensor has shape [n] or [n, 1], got {shape}")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise _problem(name, "shape", f"has {shape[0]} rows but other inputs have {rows}")
        columns[name] = values
    n = rows or 0
    present = [(name, columns[name]) for name in names if name in columns]
    return [{name: column[i] for name, column in present} for i in range(n)]


def _datatype_for(kind: str) -> str:
    letter, size = kind[0], kind[1:]
    if letter == "f":
        return "FP32" if size == "4" else "FP64"
    if letter in "iu":
        return "INT64"
    if letter == "b":
        return "BOOL"
    return "BYTES"


def requested_outputs(request: dict[str, Any], available: list[str]) -> tuple[list[str], set[str]]:
    """Names of the outputs to return, and which of them go back as binary."""
    params = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
    binary_all = bool(params.get("binary_data_output", False))
    wanted = request.get("outputs")
    if not wanted:
        return list(available), set(available) if binary_all else set()
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise _problem("outputs", "type", "outputs must be a list of objects with a name")
    names, binary = [], set()
    for item in wanted:
        name = item["name"]
        if name not in available:
            raise _problem(name, "unknown_output", f"output {name!r} does not exist; available: {', '.join(available)}")
        names.append(name)
        p = item.get("parameters") if isinstance(item.get("parameters"), dict) else {}
        if p.get("binary_data", binary_all):
            binary.add(name)
    return names, binary


def encode_response(
    model: str,
    version: int,
    request: dict[str, Any],
    outputs: Any,
    rows: int,
    client_request_id: str | None = None,
    flags: list[dict[str, Any]] | None = None,
) -> tuple[bytes, int | None]:
    """Return the response body and, when it carries binary tensors, the JSON header length.

    ``flags`` (rows outside the observed profile, scored) go in the response's
    ``parameters`` as ``flags``, only when there are some.
    """
    wanted, binary = requested_outputs(request, outputs.names)
    index = {name: i for i, name in enumerate(outputs.names)}
    tensors = []
    chunks: list[bytes] = []
    for name in wanted:
        i = index[name]
        values = outputs.columns[i]
        datatype = _datatype_for(outputs.kinds[i])
        tensor: dict[str, Any] = {"name": name, "shape": [rows], "datatype": datatype}
        if datatype == "BYTES":
            values = [v if isinstance(v, str) else str(v) for v in values]
        if name in binary:
            if datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(e)) + e for e in (v.encode() for v in values))
            else:
                raw = np.asarray(values, dtype=NUMPY_TYPES[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": tensors}
    if client_request_id is not None:  # the protocol echoes the request's id (validated by the caller)
        body["id"] = client_request_id
    if isinstance(request.get("parameters"), dict):
        params = {k: v for k, v in request["parameters"].items() if k != "binary_data_output"}
        if params:
            body["parameters"] = params
    if flags:
        body["parameters"] = {**body.get("parameters", {}), "flags": flags}
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def model_metadata(name: str, versions: list[int], schema: ModelSchema, flavor: str, outputs: Any) -> dict[str, Any]:
    inputs = [{"name": f.name, "datatype": FEATURE_DATATYPE[f.type], "shape": [-1]} for f in schema.features]
    out = []
    if outputs is not None:
        out = [
            {"name": n, "datatype": _datatype_for(k), "shape": [-1]}
            for n, k in zip(outputs.names, outputs.kinds, strict=True)
        ]
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": f"scoregate-{flavor}",
        "inputs": inputs,
        "outputs": out,
    }
