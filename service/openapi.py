"""The browser API's OpenAPI 3 document, generated from the pydantic models that validate it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .validation import ChangeRequest, PromptEvent, ReceiptEvent, SubscribeRequest, UnsubscribeRequest

_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}

_ID = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {str(s): _json(ref, "refused; see error.code and error.field") for s in statuses}


def build_openapi() -> dict[str, Any]:
    models = [SubscribeRequest, UnsubscribeRequest, ChangeRequest, PromptEvent, ReceiptEvent]
    schemas: dict[str, Any] = {"Error": _ERROR}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF, mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    write_errors = _errors(400, 413, 422, 429)
    return {
        "openapi": "3.1.0",
        "info": {"title": "storypush browser API", "version": "1"},
        "paths": {
            "/api/v1/vapid-public-key": {
                "get": {
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["publicKey"],
                                "properties": {"publicKey": {"type": "string"}},
                            },
                            "the applicationServerKey (base64url)",
                        )
                    }
                }
            },
            "/api/v1/topics": {
                "get": {
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "topics": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                                        },
                                    }
                                },
                            },
                            "the topics readers can follow",
                        )
                    }
                }
            },
            "/api/v1/subscriptions": {
                "post": {
                    "requestBody": _body(SubscribeRequest),
                    "responses": {
                        "201": _json(_ID, "created"),
                        "200": _json(_ID, "same endpoint, updated"),
                        **write_errors,
                    },
                },
                "delete": {
                    "requestBody": _body(UnsubscribeRequest),
                    "responses": {"204": {"description": "removed (or unknown)"}, **write_errors},
                },
            },
            "/api/v1/subscriptions/change": {
                "post": {
                    "requestBody": _body(ChangeRequest),
                    "responses": {"200": _json(_ID, "moved"), **_errors(400, 404, 413, 422, 429)},
                }
            },
            "/api/v1/events": {
                "post": {
                    "requestBody": _body(ReceiptEvent),
                    "responses": {"204": {"description": "counted (once)"}, **_errors(400, 403, 413, 422, 429)},
                }
            },
            "/api/v1/prompt-events": {
                "post": {
                    "requestBody": _body(PromptEvent),
                    "responses": {"204": {"description": "counted"}, **write_errors},
                }
            },
        },
        "components": {"schemas": schemas},
    }
