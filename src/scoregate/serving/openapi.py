"""The OpenAPI 3 description of the scoring server's routes."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": ok}
    words = {
        400: "Malformed JSON or request",
        404: "Unknown model, version, alias or route",
        413: "Body larger than the configured maximum",
        422: "Input does not match the model's schema",
        503: "Not ready",
    }
    for code in codes:
        out[str(code)] = {"description": words[code], "content": {"application/json": {"schema": _ERROR}}}
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(version: str) -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    ver = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "A version number (or an alias).",
    }
    request_id = {
        "name": "x-request-id",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Echoed back; generated when absent.",
    }
    infer = {
        "summary": "Score named input tensors (Open Inference Protocol V2)",
        "parameters": [name, request_id],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        },
        "responses": _responses(
            _json({"$ref": "#/components/schemas/InferenceResponse"}, "Output tensors"), 400, 404, 413, 422
        ),
    }
    infer_version = {**infer, "parameters": [name, ver, request_id]}
    metadata = {
        "summary": "Model metadata (V2)",
        "parameters": [name],
        "responses": _responses(_json({"$ref": "#/components/schemas/ModelMetadata"}, "Metadata"), 404),
    }
    ready = {
        "summary": "Model readiness (V2)",
        "parameters": [name],
        "responses": {"200": _json({"type": "object"}, "Ready"), "404": {"description": "Not served"}},
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {
                "type": "string",
                "enum": [
                    "BOOL",
                    "INT8",
                    "INT16",
                    "INT32",
                    "INT64",
                    "UINT8",
                    "UINT16",
                    "UINT32",
                    "UINT64",
                    "FP16",
                    "FP32",
                    "FP64",
                    "BYTES",
                ],
            },
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scoregate scoring server",
            "version": version,
            "description": "Real-time scoring of registered model versions (plain JSON and Open Inference "
            "Protocol V2). Every response carries x-request-id and, when a model answered, "
            "x-model-version (model@version).",
        },
        "paths": {
            "/models/{ref}/predict": {
                "post": {
                    "summary": "Score rows with name@alias or name@version",
                    "parameters": [
                        {
                            "name": "ref",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
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
                        400,
                        404,
                        413,
                        422,
                    ),
                }
            },
            "/models": {
                "get": {
                    "summary": "Models, versions, aliases and policies served",
                    "responses": {"200": _json({"type": "object"}, "Served models")},
                }
            },
            "/v2": {
                "get": {"summary": "Server metadata (V2)", "responses": {"200": _json({"type": "object"}, "Metadata")}}
            },
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Live"}}}},
            "/v2/health/ready": {
                "get": {
                    "summary": "Readiness",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
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
                        }
                    },
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "code": {"type": "string"},
                        "request_id": {"type": "string"},
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
                    "properties": {
                        "rows": {"type": "array", "items": {"type": "object"}},
                        "columns": {"type": "object", "additionalProperties": {"type": "array"}},
                    },
                },
                "PredictResponse": {
                    "type": "object",
                    "properties": {
                        "model": {"type": "string"},
                        "version": {"type": "integer"},
                        "ref": {"type": "string"},
                        "alias": {"type": ["string", "null"]},
                        "request_id": {"type": "string"},
                        "predictions": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Tensor": tensor,
                "InferenceRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                },
                "InferenceResponse": {
                    "type": "object",
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
                    "properties": {
                        "name": {"type": "string"},
                        "versions": {"type": "array", "items": {"type": "string"}},
                        "platform": {"type": "string"},
                        "inputs": {"type": "array", "items": {"type": "object"}},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    }
