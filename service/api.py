"""Browser API (`/api/v1`): subscriptions, topics, the VAPID key, prompt events."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import receipts
from .errors import ApiError, Forbidden, NotFound
from .http import client_id, parse_body
from .state import current_state
from .store.rate_limit import RateSlot
from .validation import ChangeRequest, PromptEvent, ReceiptEvent, SubscribeRequest, UnsubscribeRequest

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _rate_slot() -> RateSlot:
    return RateSlot.current("api", client_id(), current_state().settings.rate_limit_per_minute)


def _new_subscription_slot() -> RateSlot:
    return RateSlot.current(
        "new-subscriptions",
        "all",
        current_state().settings.new_subscriptions_per_minute,
        message="too many new subscriptions across all readers right now; try again later",
    )


def _rate_limit() -> None:
    current_state().store.rate_limiter.hit(_rate_slot())


def _validation_context() -> dict:
    state = current_state()
    return {"push_hosts": state.settings.push_hosts, "topics": state.store.topic_ids}


@bp.get("/vapid-public-key")
def vapid_public_key() -> Response:
    """The applicationServerKey browsers subscribe with."""
    return jsonify({"publicKey": current_state().vapid_key.public_key_b64})


@bp.get("/topics")
def topics() -> Response:
    """The topics a reader can follow."""
    return jsonify({"topics": [t.as_json() for t in current_state().store.topics]})


@bp.post("/subscriptions")
def subscribe() -> tuple[Response, int]:
    """Create or update (same endpoint) a subscription."""
    try:
        body = parse_body(SubscribeRequest, **_validation_context())
    except ApiError:
        _rate_limit()  # a refused body counts too (a 429 once over), or junk could flood us freely
        raise
    # Both limits are counted inside the upsert: one Redis round trip.
    subscriptions = current_state().store.subscriptions
    id_, created = subscriptions.upsert(body.to_subscription(), rate=_rate_slot(), ceiling=_new_subscription_slot())
    return jsonify({"id": str(id_)}), 201 if created else 200


@bp.delete("/subscriptions")
def unsubscribe() -> tuple[str, int]:
    """Remove a subscription; unknown endpoints are fine (idempotent)."""
    _rate_limit()
    body = parse_body(UnsubscribeRequest)
    current_state().store.subscriptions.delete(body.endpoint)
    return "", 204


@bp.post("/subscriptions/change")
def change_subscription() -> tuple[Response, int]:
    """Carry a rotated subscription's topics and settings over to its new endpoint."""
    _rate_limit()
    body = parse_body(ChangeRequest, **_validation_context())
    id_ = current_state().store.subscriptions.change(body.oldEndpoint, body.to_subscription())
    if id_ is None:
        raise NotFound("no subscription with that oldEndpoint", field="oldEndpoint")
    return jsonify({"id": str(id_)}), 200


@bp.post("/prompt-events")
def prompt_event() -> tuple[str, int]:
    """Count a step of the soft-prompt funnel."""
    _rate_limit()
    body = parse_body(PromptEvent)
    current_state().store.count_prompt_event(body.type)
    return "", 204


@bp.post("/events")
def receipt_event() -> tuple[str, int]:
    """Count a delivered/clicked/dismissed receipt from the service worker, once each."""
    _rate_limit()
    body = parse_body(ReceiptEvent)
    state = current_state()
    receipt = receipts.verify(state.receipt_key, body.receipt)
    if receipt is None:
        raise Forbidden("receipt is not one we issued", field="receipt")
    state.store.campaigns.count_receipt(receipt.campaign_id, receipt.subscription_id, body.type)
    return "", 204
