"""``/api/v1/openapi.json``, built from the route table so it cannot drift from the routes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from modelpack._version import __version__
from modelpack.teamserver._api import ApiRoute

_STR = {"type": "string"}
_INT = {"type": "integer"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NULL_STR = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": _STR, "message": _STR},
            }
        },
    },
    "ModelVersion": {
        "type": "object",
        "properties": {
            "name": _STR,
            "version": _INT,
            "source": _STR,
            "run_id": _NULL_STR,
            "aliases": {"type": "array", "items": _STR},
            "stage": _NULL_STR,
            "tags": _STR_MAP,
            "description": _NULL_STR,
            "status": _STR,
            "parent": _NULL_STR,
            "flavors": {"type": "array", "items": _STR},
            "signature": {"type": ["object", "null"]},
            "created_at": _INT,
            "updated_at": _INT,
            "descriptor_sha256": _STR,
        },
    },
    "RegisteredModel": {
        "type": "object",
        "properties": {
            "name": _STR,
            "description": _NULL_STR,
            "tags": _STR_MAP,
            "aliases": {"type": "object", "additionalProperties": _INT},
            "latest_version": {"type": ["integer", "null"]},
            "created_at": _INT,
            "updated_at": _INT,
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "id": _STR,
            "experiment": _STR,
            "name": _NULL_STR,
            "status": {"enum": ["RUNNING", "FINISHED", "FAILED", "KILLED"]},
            "start_time": _INT,
            "end_time": {"type": ["integer", "null"]},
            "parent_id": _NULL_STR,
            "params": _STR_MAP,
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "tags": _STR_MAP,
        },
    },
}

_RESULT = {
    "search_models": "RegisteredModel",
    "create_model": "RegisteredModel",
    "get_model": "RegisteredModel",
    "update_model": "RegisteredModel",
    "register_version": "ModelVersion",
    "get_version": "ModelVersion",
    "update_version": "ModelVersion",
    "transition": "ModelVersion",
    "get_alias": "ModelVersion",
    "set_alias": "ModelVersion",
    "get_run": "Run",
    "end_run": "Run",
}
_ERRORS = {"400": "bad input", "401": "no or unknown token", "403": "role too low"}


def _operation(route: ApiRoute) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": _STR}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    name = route.handler.__name__
    responses: dict[str, Any] = {}
    if route.status == 204:
        responses["204"] = {"description": "done"}
    else:
        content: dict[str, Any] = {"type": "object"}
        if name in _RESULT and not name.startswith("search"):
            content = {"$ref": f"#/components/schemas/{_RESULT[name]}"}
        responses[str(route.status)] = {
            "description": "OK",
            "content": {"application/json": {"schema": content}},
        }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for status, text in {**_ERRORS, "404": "not found", "409": "conflict"}.items():
        responses[status] = {"description": text, "content": error}
    op: dict[str, Any] = {
        "operationId": name,
        "summary": route.summary,
        "parameters": params,
        "responses": responses,
        "x-required-role": route.role,
    }
    if route.method in ("POST", "PUT", "PATCH"):
        op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return op


def openapi(routes: Sequence[ApiRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(f"/api/v1{route.path}", {})[route.method.lower()] = _operation(route)
    paths["/api/v1/blobs/{sha256}"] = {
        method: {
            "operationId": f"{method}_blob",
            "summary": summary,
            "parameters": [{"name": "sha256", "in": "path", "required": True, "schema": _STR}],
            "responses": {"200": {"description": "OK"}, "404": {"description": "absent"}},
            "x-required-role": "write" if method == "put" else "read",
        }
        for method, summary in {
            "get": "Download a blob (Range requests resume a download)",
            "head": "200 when stored; else 404 with Upload-Offset, the bytes received so far",
            "put": "Upload a blob; Content-Range bytes START-END/TOTAL resumes an upload",
        }.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelpack team server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
