"""Liveness for load balancers: `/healthz` answers 503 when Redis is unreachable."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from rq import Worker

from .state import current_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Redis reachable (store and queue) and how many RQ workers are alive."""
    state = current_state()
    try:
        state.store.client.ping()
        state.queue_connection.ping()
        workers = Worker.count(connection=state.queue_connection)
    except (redis.RedisError, OSError) as exc:
        return jsonify({"redis": f"error: {type(exc).__name__}", "workers": 0}), 503
    return jsonify({"redis": "ok", "workers": workers}), 200
