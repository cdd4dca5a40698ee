"""An OpenAPI document for one model, derived from its signature."""

from __future__ import annotations

from typing import Any

from modelpack.signature import Schema, Signature

_JSON_TYPES = {"bool": "boolean", "string": "string", "binary": "string", "datetime": "string"}


def _json_type(dtype: str) -> dict[str, Any]:
    if dtype in _JSON_TYPES:
        return {"type": _JSON_TYPES[dtype]}
    if dtype.startswith(("int", "uint")):
        return {"type": "integer"}
    if dtype.startswith("float"):
        return {"type": "number"}
    return {}


def _input_schema(schema: Schema | None) -> dict[str, Any]:
    split: dict[str, Any] = {
        "type": "object",
        "required": ["data"],
        "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
    }
    records: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
    tensor: dict[str, Any] = {}
    if schema is not None and not schema.is_tensor:
        names = [c.name for c in schema.columns]
        split["properties"]["columns"] = {"type": "array", "items": {"enum": names}}
        records["items"] = {
            "type": "object",
            "properties": {c.name: _json_type(c.dtype) for c in schema.columns},
            "required": [c.name for c in schema.columns if c.required],
        }
    elif schema is not None:
        tensor = {
            "description": "tensors: "
            + ", ".join(f"{t.name or 'input'} {t.dtype}{list(t.shape)}" for t in schema.tensors)
        }
    params = {"type": "object"}
    return {
        "type": "object",
        "description": "exactly one of dataframe_split, dataframe_records, instances, inputs",
        "properties": {
            "dataframe_split": split,
            "dataframe_records": records,
            "instances": tensor or {},
            "inputs": tensor or {},
            "params": params,
        },
        "minProperties": 1,
    }


def _json_error(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "error", "content": {"application/json": {"schema": schema}}}


def _error() -> dict[str, Any]:
    code_and_message = {"code": {"type": "string"}, "message": {"type": "string"}}
    return _json_error(
        {
            "type": "object",
            "properties": {"error": {"type": "object", "properties": code_and_message}},
        }
    )


def _v2_error() -> dict[str, Any]:
    # The v2 protocol's error is a string (tritonclient fails on an object), with our code beside.
    return _json_error(
        {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
        }
    )


def _name_parameter(name: str) -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "the served model's name",
        "schema": {"type": "string", "enum": [name]},
    }


def _v2_tensor() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
            "datatype": {"type": "string"},
            "parameters": {"type": "object"},
            "data": {"type": "array"},
        },
    }


def openapi(name: str, version: str, signature: Signature | None) -> dict[str, Any]:
    errors = {str(s): _error() for s in (400, 413, 415, 422, 503, 504)}
    v2_errors = {str(s): _v2_error() for s in (400, 404, 413, 415, 422, 503, 504)}
    simple = {"200": {"description": "ok"}, "503": _error()}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"modelpack model {name}", "version": version},
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Predict (MLflow scoring protocol)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _input_schema(signature.inputs if signature else None)
                            },
                            "text/csv": {"schema": {"type": "string"}},
                            "application/vnd.apache.parquet": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "predictions",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"predictions": {}},
                                    }
                                }
                            },
                        },
                        **errors,
                    },
                }
            },
            "/v2/models/{name}/infer": {
                "post": {
                    "summary": "Predict (Open Inference Protocol v2)",
                    "parameters": [_name_parameter(name)],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["inputs"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "parameters": {"type": "object"},
                                        "inputs": {
                                            "type": "array",
                                            "minItems": 1,
                                            "items": _v2_tensor(),
                                        },
                                        "outputs": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["name"],
                                                "properties": {
                                                    "name": {"type": "string"},
                                                    "parameters": {"type": "object"},
                                                },
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": {"description": "outputs"}, **v2_errors},
                }
            },
            "/v2/models/{name}": {
                "get": {
                    "summary": "Model metadata (Open Inference Protocol v2)",
                    "parameters": [_name_parameter(name)],
                    "responses": {"200": {"description": "metadata"}, "404": _v2_error()},
                }
            },
            "/v2/models/{name}/ready": {
                "get": {
                    "parameters": [_name_parameter(name)],
                    "responses": {"200": {"description": "ready"}, "503": _v2_error()},
                }
            },
            **{p: {"get": {"responses": simple}} for p in ("/ping", "/health")},
            "/v2/health/ready": {
                "get": {"responses": {"200": {"description": "ok"}, "503": _v2_error()}}
            },
            **{
                p: {"get": {"responses": {"200": {"description": "ok"}}}}
                for p in ("/version", "/metadata", "/metrics", "/v2", "/v2/health/live")
            },
        },
    }
