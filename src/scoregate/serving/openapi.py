"""The OpenAPI 3.1 description of the scoring server, with each served version's contract.

Besides the generic routes (``/models/{ref}/predict``, ``/v2/models/{name}/infer``, ...)
the document has one path per served model, alias and version, whose request and
response schemas come from that version's schema: each feature's JSON type, range,
categories and nullability, the required features, undeclared fields refused (unless
the version drops them), at most ``--max-request-rows`` rows; and the outputs the
version returned when it was warmed up. A client generator or a fuzzer (the test suite
runs schemathesis against it) sees exactly what the server accepts.
"""

from __future__ import annotations

from typing import Any

from scoregate.refs import ALIAS_PATTERN, NAME_PATTERN
from scoregate.schema import Feature, FeatureType, UnseenCategories
from scoregate.serving.options import ServeOptions
from scoregate.serving.v2 import DATATYPES, FEATURE_DATATYPE, NUMERIC_DATATYPES

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_REF_PATTERN = f"^{NAME_PATTERN}(@([0-9]{{1,18}}|{ALIAS_PATTERN}))?$"
_ERROR = {"$ref": "#/components/schemas/Error"}
_WORDS = {
    400: "Malformed JSON, request or reference",
    401: "No valid token (--require-token)",
    403: "The token's user lacks the role the server requires",
    404: "Unknown model, version, alias or route",
    405: "The route does not take this method",
    413: "Body or rows over the server's limits",
    415: "Content-Type other than application/json (or octet-stream with binary tensors)",
    422: "Input does not match the model's schema",
    503: "Overloaded, not loaded, or the prediction log cannot be written; retry",
}
_POST_CODES = (400, 401, 403, 404, 405, 413, 415, 422, 503)
_GET_CODES = (400, 401, 403, 404, 405, 503)


def _responses(ok: dict[str, Any], codes: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"200": ok}
    for code in codes:
        out[str(code)] = {"description": _WORDS[code], "content": {"application/json": {"schema": _ERROR}}}
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def feature_schema(feature: Feature) -> dict[str, Any]:
    """The JSON Schema of one feature's values, as the server validates them."""
    kind = feature.type
    schema: dict[str, Any]
    if kind is FeatureType.FLOAT:
        schema = {"type": "number"}
        if feature.minimum is not None:
            schema["minimum"] = feature.minimum
        if feature.maximum is not None:
            schema["maximum"] = feature.maximum
    elif kind is FeatureType.INT:
        low = INT64_MIN if feature.minimum is None else max(INT64_MIN, _ceil(feature.minimum))
        high = INT64_MAX if feature.maximum is None else min(INT64_MAX, _floor(feature.maximum))
        schema = {"type": "integer", "minimum": low, "maximum": high}
    elif kind is FeatureType.BOOL:
        schema = {"type": "boolean"}
    elif kind is FeatureType.CATEGORY and feature.unseen is UnseenCategories.SCORE:
        # any string is scored (an unknown level is flagged); the known ones are examples
        schema = {"type": "string", "examples": list(feature.categories or [])[:10]}
    elif kind is FeatureType.CATEGORY:
        schema = {"type": "string", "enum": list(feature.categories or [])}
    elif kind is FeatureType.DATETIME:
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": "string"}
    if feature.nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if feature.description:
        schema["description"] = feature.description
    return schema


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole >= value else whole + 1


def _floor(value: float) -> int:
    whole = int(value)
    return whole if whole <= value else whole - 1


def row_schema(served: Any) -> dict[str, Any]:
    schema = served.info.input_schema
    return {
        "type": "object",
        "properties": {f.name: feature_schema(f) for f in schema.features},
        "required": [f.name for f in schema.features if not f.nullable],
        "additionalProperties": bool(served.drop_extra),
    }


def _output_schema(kind: str) -> dict[str, Any]:
    letter = kind[0]
    if letter == "f":
        return {"type": ["number", "null"]}  # NaN is sent as null
    if letter in "iu":
        return {"type": "integer"}
    if letter == "b":
        return {"type": "boolean"}
    if letter == "U":
        return {"type": "string"}
    return {}


def prediction_schema(served: Any) -> dict[str, Any]:
    outputs = served.outputs
    if outputs is None:
        return {"type": "object"}
    return {
        "type": "object",
        "properties": {n: _output_schema(k) for n, k in zip(outputs.names, outputs.kinds, strict=True)},
        "required": list(outputs.names),
    }


def _tensor(feature: Feature, max_rows: int) -> dict[str, Any]:
    datatype = FEATURE_DATATYPE[feature.type]
    accepted = sorted(NUMERIC_DATATYPES) if feature.type in (FeatureType.FLOAT, FeatureType.INT) else [datatype]
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": feature.name},
            "datatype": {"enum": accepted},
            "shape": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {"type": "integer", "minimum": 1, "maximum": max_rows},
            },
            "data": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": feature_schema(feature)},
            "parameters": {"type": "object"},
        },
    }


def _v2_request(served: Any, max_rows: int) -> dict[str, Any]:
    features = served.info.input_schema.features
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"$ref": "#/components/schemas/ClientRequestId"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"oneOf": [_tensor(f, max_rows) for f in features]},
            },
            "outputs": {"$ref": "#/components/schemas/RequestedOutputs"},
        },
        "description": "One tensor per feature (shape [n] or [n, 1]), all with the same n; or one "
        f"[n, {len(features)}] numeric tensor with the features in schema order.",
    }


def openapi_document(version: str, table: Any = None, options: ServeOptions | None = None) -> dict[str, Any]:
    options = options or ServeOptions()
    max_rows = options.max_request_rows
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{NAME_PATTERN}$"},
    }
    ver = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        "description": "A version number.",
    }
    request_id = {
        "name": "x-request-id",
        "in": "header",
        "required": False,
        "schema": {"$ref": "#/components/schemas/ClientRequestId"},
        "description": "The client's id, kept as client_request_id and echoed in x-client-request-id; "
        "the server's own id for the decision comes back in x-request-id.",
    }
    infer = {
        "summary": "Score named input tensors (Open Inference Protocol V2)",
        "parameters": [name, request_id],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        },
        "responses": _responses(
            _json({"$ref": "#/components/schemas/InferenceResponse"}, "Output tensors"), _POST_CODES
        ),
    }
    infer_version = {**infer, "parameters": [name, ver, request_id]}
    metadata = {
        "summary": "Model metadata (V2)",
        "parameters": [name],
        "responses": _responses(_json({"$ref": "#/components/schemas/ModelMetadata"}, "Metadata"), _GET_CODES),
    }
    ready_ok = _json(
        {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}, "Ready"
    )
    ready = {
        "summary": "Model readiness (V2)",
        "parameters": [name],
        "responses": {
            **_responses(ready_ok, _GET_CODES),
            "404": _json({"type": "object"}, "Not served"),
        },
    }
    paths: dict[str, Any] = {
        "/models/{ref}/predict": {
            "post": {
                "summary": "Score rows with name, name@alias or name@version",
                "parameters": [
                    {
                        "name": "ref",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": _REF_PATTERN},
                        "example": "credit-risk@production",
                    },
                    request_id,
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
                },
                "responses": _responses(
                    _json({"$ref": "#/components/schemas/PredictResponse"}, "One output row per input row"),
                    _POST_CODES,
                ),
            }
        },
        "/models": {
            "get": {
                "summary": "Models, versions, aliases and policies served",
                "responses": _responses(_json({"type": "object"}, "Served models"), (401, 403)),
            }
        },
        "/v2": {
            "get": {
                "summary": "Server metadata (V2)",
                "responses": _responses(_json({"type": "object"}, "Metadata"), (401, 403)),
            }
        },
        "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}, "Live")}}},
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness; lists the versions that could not be loaded, and why",
                "responses": {
                    "200": _json({"type": "object"}, "Ready"),
                    "503": _json({"type": "object"}, "Not ready"),
                },
            }
        },
        "/v2/models/{name}": {"get": metadata},
        "/v2/models/{name}/ready": {"get": ready},
        "/v2/models/{name}/infer": {"post": infer},
        "/v2/models/{name}/versions/{version}": {"get": {**metadata, "parameters": [name, ver]}},
        "/v2/models/{name}/versions/{version}/ready": {"get": {**ready, "parameters": [name, ver]}},
        "/v2/models/{name}/versions/{version}/infer": {"post": infer_version},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": {"description": _WORDS[401], "content": {"application/json": {"schema": _ERROR}}},
                    "403": {"description": _WORDS[403], "content": {"application/json": {"schema": _ERROR}}},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": _responses(_json({"type": "object"}, "OpenAPI 3.1"), (401, 403)),
            }
        },
    }
    schemas = _components(max_rows)
    if table is not None:
        _served_paths(table, paths, schemas, request_id, max_rows)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "scoregate scoring server",
            "version": version,
            "description": "Real-time scoring of registered model versions (plain JSON and Open Inference "
            "Protocol V2). Every response carries x-request-id (the server's id for the decision, the one "
            "the prediction log holds) and, when a model answered, x-model-version (model@version).",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if options.require_token:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


def _served_paths(
    table: Any, paths: dict[str, Any], schemas: dict[str, Any], request_id: dict[str, Any], max_rows: int
) -> None:
    """One path per served model, alias and version, with that version's contract."""
    for model, entry in sorted(table.models.items()):
        targets = [(f"{model}@{v}", route) for v, route in sorted(entry.versions.items())]
        targets += [(f"{model}@{a}", route) for a, route in sorted(entry.aliases.items())]
        if entry.default is not None:
            targets.append((model, entry.default))
        for ref, route in targets:
            served = route.primary
            key = f"{served.name}.v{served.version}"
            if f"{key}.Row" not in schemas:
                schemas[f"{key}.Row"] = row_schema(served)
                schemas[f"{key}.Prediction"] = prediction_schema(served)
                schemas[f"{key}.InferenceRequest"] = _v2_request(served, max_rows)
            request = {
                "type": "object",
                "required": ["rows"],
                "properties": {
                    "rows": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_rows,
                        "items": {"$ref": f"#/components/schemas/{key}.Row"},
                    }
                },
            }
            response = {
                "allOf": [
                    {"$ref": "#/components/schemas/PredictResponse"},
                    {
                        "type": "object",
                        "properties": {
                            "model": {"const": served.name},
                            "predictions": {
                                "type": "array",
                                "items": {"$ref": f"#/components/schemas/{key}.Prediction"},
                            },
                        },
                    },
                ]
            }
            paths[f"/models/{ref}/predict"] = {
                "post": {
                    "summary": f"Score rows with {ref} (version {served.version}'s contract)",
                    "parameters": [request_id],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                    "responses": _responses(_json(response, "One output row per input row"), _POST_CODES),
                }
            }
        v2_targets = [(f"/v2/models/{model}", entry.default.primary)] if entry.default is not None else []
        v2_targets += [(f"/v2/models/{model}/versions/{v}", r.primary) for v, r in sorted(entry.versions.items())]
        for base, served in v2_targets:
            key = f"{served.name}.v{served.version}"
            infer_request = {"$ref": f"#/components/schemas/{key}.InferenceRequest"}
            paths[f"{base}/infer"] = {
                "post": {
                    "summary": f"Score tensors with {served.ref} (V2)",
                    "parameters": [request_id],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": infer_request}}},
                    "responses": _responses(
                        _json({"$ref": "#/components/schemas/InferenceResponse"}, "Output tensors"), _POST_CODES
                    ),
                }
            }
            paths[base] = {
                "get": {
                    "summary": f"Metadata of {served.ref} (V2)",
                    "responses": _responses(
                        _json({"$ref": "#/components/schemas/ModelMetadata"}, "Metadata"), _GET_CODES
                    ),
                }
            }


def _components(max_rows: int) -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "minItems": 1, "maxItems": 8, "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": sorted(DATATYPES)},
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    return {
        "ClientRequestId": {"type": "string", "pattern": "^[ -~]{1,128}$", "maxLength": 128, "minLength": 1},
        "Error": {
            "type": "object",
            "required": ["error", "request_id"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "string"},
                "request_id": {"type": "string"},
                "client_request_id": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "rule": {"type": "string"},
                            "message": {"type": "string"},
                            "row": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "PredictRequest": {
            "type": "object",
            "description": 'Rows ({"rows": [{feature: value, ...}, ...]}) or columns ({"columns": {feature: '
            "[values...], ...}}, all of one length); each model's own path gives its features.",
            "anyOf": [{"required": ["rows"]}, {"required": ["columns"]}],
            "properties": {
                "rows": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": {"type": "object"}},
                "columns": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "array", "minItems": 1, "maxItems": max_rows},
                },
            },
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model", "version", "ref", "request_id", "predictions"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "ref": {"type": "string"},
                "alias": {"type": ["string", "null"]},
                "request_id": {"type": "string"},
                "client_request_id": {"type": "string"},
                "predictions": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Tensor": tensor,
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"$ref": "#/components/schemas/ClientRequestId"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Tensor"}},
                "outputs": {"$ref": "#/components/schemas/RequestedOutputs"},
            },
        },
        "RequestedOutputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/MetadataTensor"}},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/MetadataTensor"}},
            },
        },
        "MetadataTensor": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string", "enum": sorted(DATATYPES)},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
    }
