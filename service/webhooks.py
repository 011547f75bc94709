"""The CMS webhook: Standard Webhooks signatures, idempotent story events."""

from __future__ import annotations

import contextlib

import redis
from flask import Blueprint, Response, g, jsonify, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from . import publishing
from .errors import NotFound, Unauthorized
from .http import parse_model, raw_body, read_json
from .state import current_state
from .validation import StoryData, StoryEvent, StoryRef

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

_OUTCOME_BY_STATUS = {401: "unauthorized", 404: "not_found"}
# A CMS sends whole articles (the browser API's 8 KiB would refuse them); title and
# body are then cut to what a push carries (validation.StoryData).
MAX_BODY_BYTES = 256 * 1024


@bp.before_request
def _body_limit() -> None:
    request.max_content_length = MAX_BODY_BYTES


@bp.after_request
def _count_call(response: Response) -> Response:
    """Count every call by outcome for `storypush_webhook_calls_total`."""
    status = response.status_code
    outcome = g.get("webhook_outcome") or _OUTCOME_BY_STATUS.get(status)
    if outcome is None:
        outcome = "accepted" if status < 300 else "invalid" if status < 500 else "error"
    # A metric lost while Redis is down must not turn the answer (say, 503) into a 500.
    with contextlib.suppress(redis.RedisError):
        current_state().store.metrics.count_webhook(outcome)
    return response


def _verified_body() -> bytes:
    """The raw body if its signature is valid; 401 otherwise (also when no secret is set)."""
    secret = current_state().settings.webhook_secret
    if not secret:
        raise Unauthorized("webhook secret not configured; refusing all calls")
    body = raw_body()
    try:
        Webhook(secret).verify(body, dict(request.headers), json_parse=False)
    except UnicodeDecodeError:  # the library verifies text only
        raise Unauthorized("webhook body is not UTF-8, so its signature cannot be checked") from None
    except (WebhookVerificationError, ValueError) as exc:
        raise Unauthorized(f"bad webhook signature: {exc}") from None
    return body


def _answer(result: publishing.PublishResult | None, status: int) -> tuple[Response, int]:
    if result is None:
        raise NotFound("no campaign for that story", field="data.id")
    return jsonify({"campaign": result.campaign_id, "status": result.status}), status


@bp.post("/cms")
def cms() -> tuple[Response, int]:
    """story.published / story.updated / story.unpublished, signed per Standard Webhooks."""
    _verified_body()
    state = current_state()
    store = state.store
    message_id = request.headers["webhook-id"]
    seen = store.campaigns.campaign_for_webhook(message_id)
    if seen is not None:
        g.webhook_outcome = "duplicate"
        return jsonify({"campaign": seen, "status": store.campaigns.state(seen).value}), 200
    event = parse_model(StoryEvent, read_json())
    context = {"topics": store.topic_ids}
    if event.type == "story.unpublished":
        ref = parse_model(StoryRef, event.data, prefix="data")
        return _answer(publishing.unpublish(store, ref.id), 200)
    story = parse_model(StoryData, event.data, prefix="data", **context)
    if event.type == "story.updated":
        return _answer(publishing.update(store, story.as_story()), 200)
    result = publishing.publish(store, state.queue, story.as_story(), story.send_at_timestamp())
    store.campaigns.remember_webhook(message_id, result.campaign_id)
    if not result.created:
        g.webhook_outcome = "duplicate"
    return _answer(result, 202 if result.created else 200)
