"""``GET /openapi.json``: an OpenAPI 3.0 document of the deployment, from the model's signature.

>>> doc = document("cancer", Schema(("x",), ("double",), (True,)), None, {"predict"}, require_token=False)
>>> doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]["required"]
['dataframe_split']

Each of MLflow's request formats is a schema of its own (``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs``, and CSV), built from the columns and their
MLflow types, with ``params.predict_method`` limited to the methods the model has; the
answer is ``{"predictions": [...]}``, an error ``{"error_code", "message"}``. The bearer
scheme is declared, required when the server requires a token. A code generator (or a
person) needs nothing else to call the model; the example body is the model's own
(``serving_input_example.json``, as MLflow wrote it when the version was registered), left
out when the deployment keeps its inputs private (it is often a real training row).
"""

from __future__ import annotations

from typing import Any

from nbdeploy.serving.protocol import Schema

__all__ = ["document"]

_TYPES: dict[str, dict[str, Any]] = {
    "double": {"type": "number"}, "float": {"type": "number"}, "long": {"type": "integer"},
    "integer": {"type": "integer"}, "boolean": {"type": "boolean"}, "string": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"}, "binary": {"type": "string", "format": "byte"},
}  # fmt: skip
_ANY_CELL = {"nullable": True, "oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
_ERROR = {"type": "object", "required": ["error_code", "message"],
          "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}}}  # fmt: skip


def _cell(mlflow_type: str) -> dict[str, Any]:
    return dict(_TYPES.get(mlflow_type, _ANY_CELL))


def _formats(schema: Schema, methods: set[str]) -> list[dict[str, Any]]:
    required = [n for n, r in zip(schema.names, schema.required, strict=True) if r]
    row: dict[str, Any] = {"type": "object", "properties": {n: _cell(t) for n, t in zip(schema.names, schema.types,
                                                                                        strict=True)}}  # fmt: skip
    if required:
        row["required"] = required
    params = {"type": "object", "properties": {"predict_method": {"type": "string", "enum": sorted(methods)}}}
    shapes = {
        "dataframe_split": {"type": "object", "required": ["columns", "data"], "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": list(schema.names)}},
            "data": {"type": "array", "items": {"type": "array", "items": _ANY_CELL}},
            "index": {"type": "array", "items": _ANY_CELL}}},
        "dataframe_records": {"type": "array", "items": row},
        "instances": {"type": "array", "items": row},
        "inputs": {"oneOf": [{"type": "object", "additionalProperties": {"type": "array", "items": _ANY_CELL}},
                             {"type": "array", "items": row}]},
    }  # fmt: skip
    return [{"type": "object", "title": key, "required": [key], "additionalProperties": False,
             "properties": {key: shape, "params": params}} for key, shape in shapes.items()]  # fmt: skip


def document(name: str, schema: Schema, outputs: list[dict[str, Any]] | None, methods: set[str], *,
             require_token: bool, version: int | None = None,
             example: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The OpenAPI document of a deployment serving a model of this signature."""
    out_type = _cell(str(outputs[0].get("type"))) if outputs and len(outputs) == 1 else _ANY_CELL
    if len(methods) > 1:  # predict_proba and its kin answer a list of numbers per row
        out_type = {"oneOf": [out_type, {"type": "array", "items": {"type": "number"}}]}
    json_body: dict[str, Any] = {"schema": {"oneOf": _formats(schema, methods)}}
    if example is not None:
        json_body["example"] = example
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    errors = {str(code): {"description": why, "content": error}
              for code, why in ((400, "the body names the field at fault"), (401, "no bearer token"),
                                (403, "a token that is not valid, or whose role does not reach the route"),
                                (413, "the body is larger than the server takes"))}  # fmt: skip
    security: list[dict[str, list[str]]] = [{"bearer": []}] if require_token else [{}, {"bearer": []}]
    plain = {"200": {"description": "up", "content": {"application/json": {"schema": {"type": "string"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{name} (nbdeploy)", "version": str(version if version is not None else "-"),
                 "description": "MLflow's scoring protocol, served by nbdeploy."},
        "paths": {
            "/invocations": {"post": {
                "summary": "Predictions for the rows in the body", "operationId": "invocations", "security": security,
                "requestBody": {"required": True, "content": {"application/json": json_body,
                                                              "text/csv": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "one prediction per row", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["predictions"],
                               "properties": {"predictions": {"type": "array", "items": out_type}}}}}}, **errors},
            }},
            "/ping": {"get": {"summary": "Liveness", "operationId": "ping", "security": [], "responses": plain}},
            "/health": {"get": {"summary": "Readiness", "operationId": "health", "security": [], "responses": plain}},
            "/version": {"get": {"summary": "MLflow's version", "operationId": "version", "security": [],
                                 "responses": plain}},
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": _ERROR}},
    }  # fmt: skip
