"""The CMS side of the webhook: Standard Webhooks signatures and story events, in-process or over HTTP."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import requests
from flask import Flask
from standardwebhooks.webhooks import Webhook

from benchmarks.common import WALRUS_STORY

STORY = WALRUS_STORY


def signed(secret: str, payload: dict, message_id: str | None = None, timestamp: float | None = None):
    """(body, headers) of a webhook call as the CMS sends it."""
    body = json.dumps(payload)
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    when = timestamp if timestamp is not None else time.time()
    signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(when, tz=UTC), body)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when)),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body, headers


def post(client, secret, payload, **kwargs):
    """A signed webhook call through a Flask test client."""
    body, headers = signed(secret, payload, **kwargs)
    return client.post("/webhooks/cms", data=body, headers=headers)


def publish(app: Flask, webhook_secret: str, story: dict | None = None) -> str:
    """`story.published` (the walrus story by default) in-process; the new campaign's id."""
    response = post(app.test_client(), webhook_secret, {"type": "story.published", "data": story or STORY})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["campaign"]


def publish_over_http(base: str, secret: str, story: dict) -> str:
    """`story.published` to a running `storypush web` at `base`; the new campaign's id."""
    body, headers = signed(secret, {"type": "story.published", "data": story})
    response = requests.post(f"{base}/webhooks/cms", data=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["campaign"]
