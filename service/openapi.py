"""OpenAPI 3 documents generated from the pydantic models that validate each request.

`build_openapi` covers what strangers call (the browser API and the CMS webhook)
and is served at `/api/openapi.json`; `build_admin_openapi` covers the operator
API and is served behind the admin token at `/admin/api/openapi.json`. The fuzz
tests drive schemathesis from both, so every documented input is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from .validation import (
    MAX_CAMPAIGNS,
    MAX_RATE_MINUTES,
    ChangeRequest,
    PromptEvent,
    ReceiptEvent,
    StoryData,
    StoryRef,
    SubscribeRequest,
    UnsubscribeRequest,
)

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
_OBJECT = {"type": "object"}
_CAMPAIGN_ANSWER = {
    "type": "object",
    "required": ["campaign", "status"],
    "properties": {"campaign": {"type": "string"}, "status": {"type": "string"}},
}
# One event type per data shape: unpublished needs only the story id.
_STORY_EVENT = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "data"],
            "properties": {
                "type": {"enum": ["story.published", "story.updated"]},
                "data": {"$ref": _REF.format(model="StoryData")},
            },
        },
        {
            "type": "object",
            "required": ["type", "data"],
            "properties": {
                "type": {"const": "story.unpublished"},
                "data": {"$ref": _REF.format(model="StoryRef")},
            },
        },
    ]
}
_WEBHOOK_HEADERS = [
    ("webhook-id", "unique per message; a repeat is answered with the same campaign"),
    ("webhook-timestamp", "Unix seconds, within 5 minutes of our clock"),
    ("webhook-signature", 'space-separated "v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>"'),
]


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=name)}}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {str(s): _json(ref, "refused; see error.code and error.field") for s in statuses}


def _schemas(models: Sequence[type[BaseModel]], topic_ids: Sequence[str]) -> dict[str, Any]:
    """Component schemas of `models`; topic lists name the configured topics."""
    schemas: dict[str, Any] = {"Error": _ERROR}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF, mode="validation")
        schemas.update(schema.pop("$defs", {}))
        topics = schema["properties"].get("topics")
        if topics and topic_ids:
            topics["items"]["enum"] = list(topic_ids)
        schemas[model.__name__] = schema
    return schemas


def build_openapi(topic_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The browser API and the CMS webhook."""
    models = [SubscribeRequest, UnsubscribeRequest, ChangeRequest, PromptEvent, ReceiptEvent, StoryData, StoryRef]
    schemas = _schemas(models, topic_ids)
    schemas["StoryEvent"] = _STORY_EVENT
    write_errors = _errors(400, 413, 422, 429)
    return {
        "openapi": "3.1.0",
        "info": {"title": "storypush browser API and CMS webhook", "version": "1"},
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
                    "requestBody": _body("SubscribeRequest"),
                    "responses": {
                        "201": _json(_ID, "created"),
                        "200": _json(_ID, "same endpoint, updated"),
                        **write_errors,
                    },
                },
                "delete": {
                    "requestBody": _body("UnsubscribeRequest"),
                    "responses": {"204": {"description": "removed (or unknown)"}, **write_errors},
                },
            },
            "/api/v1/subscriptions/change": {
                "post": {
                    "requestBody": _body("ChangeRequest"),
                    "responses": {"200": _json(_ID, "moved"), **_errors(400, 404, 413, 422, 429)},
                }
            },
            "/api/v1/events": {
                "post": {
                    "requestBody": _body("ReceiptEvent"),
                    "responses": {"204": {"description": "counted (once)"}, **_errors(400, 403, 413, 422, 429)},
                }
            },
            "/api/v1/prompt-events": {
                "post": {
                    "requestBody": _body("PromptEvent"),
                    "responses": {"204": {"description": "counted"}, **write_errors},
                }
            },
            "/webhooks/cms": {
                "post": {
                    "description": "A story event from the CMS, signed per the Standard Webhooks spec; "
                    "bodies up to 256 KiB, title and body cut to what a push carries.",
                    "parameters": [
                        {
                            "name": name,
                            "in": "header",
                            "required": True,
                            "description": text,
                            "schema": {"type": "string"},
                        }
                        for name, text in _WEBHOOK_HEADERS
                    ],
                    "requestBody": _body("StoryEvent"),
                    "responses": {
                        "202": _json(_CAMPAIGN_ANSWER, "campaign created: queued or scheduled"),
                        "200": _json(_CAMPAIGN_ANSWER, "a repeat, an update or a cancel: the story's campaign"),
                        **_errors(400, 401, 404, 413, 422),
                    },
                }
            },
        },
        "components": {"schemas": schemas},
    }


def _operation(responses: dict[str, Any], parameters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """An operator API operation: bearer token, and the auth answers every route has."""
    operation: dict[str, Any] = {"responses": {**responses, **_errors(401, 429)}}
    if parameters:
        operation["parameters"] = list(parameters)
    return operation


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _range(name: str, high: int) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": high}}


def build_admin_openapi() -> dict[str, Any]:
    """The operator API under /admin/api (README "Operator API")."""
    campaign = _json(_OBJECT, "the campaign")
    job_answer = _json(_ID, "done")
    return {
        "openapi": "3.1.0",
        "info": {"title": "storypush operator API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {
            "/admin/api/overview": {"get": _operation({"200": _json(_OBJECT, "subscribers, queues, workers")})},
            "/admin/api/campaigns": {
                "get": _operation(
                    {"200": _json(_OBJECT, "newest first"), **_errors(422)}, [_range("limit", MAX_CAMPAIGNS)]
                )
            },
            "/admin/api/campaigns/{campaign_id}": {
                "get": _operation({"200": campaign, **_errors(404)}, [_path_id("campaign_id")])
            },
            "/admin/api/campaigns/{campaign_id}/cancel": {
                "post": _operation({"200": campaign, **_errors(404, 409)}, [_path_id("campaign_id")])
            },
            "/admin/api/failed-jobs": {"get": _operation({"200": _json(_OBJECT, "failed RQ jobs")})},
            "/admin/api/failed-jobs/{job_id}/retry": {
                "post": _operation({"200": job_answer, **_errors(404)}, [_path_id("job_id")])
            },
            "/admin/api/failed-jobs/{job_id}/delete": {
                "post": _operation({"200": job_answer, **_errors(404)}, [_path_id("job_id")])
            },
            "/admin/api/send-rate": {
                "get": _operation(
                    {"200": _json(_OBJECT, "pushes per second per minute"), **_errors(422)},
                    [_range("minutes", MAX_RATE_MINUTES)],
                )
            },
        },
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
