"""Schemathesis against a live server: no generated input may cause a 5xx, and answers
match the documented status codes and schemas, for the browser API (receipts included),
the CMS webhook and the operator API.

The app runs in a real HTTP server (werkzeug, threaded) on the real Redis fixture,
so requests go through sockets, body limits and error handlers as in production.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
import requests.auth
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.serving import make_server

from service import create_app
from service.openapi import build_admin_openapi, build_openapi
from service.settings import Settings
from service.vapid import VapidKey

# Per operation and mode (16 operations x positive/negative): keeps the module around a minute.
MAX_EXAMPLES = 60
WEBHOOK = "/webhooks/cms"

# Schemathesis cannot invent a point on P-256 or a real push-service URL from a JSON
# schema, so "positive" bodies are rightly refused with 422; it is not a failure.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Where the test itself supplies a valid signature or token, header "negatives" are fixed up.
LENIENT_CHECKS = [check for check in CHECKS if check is not negative_data_rejection]

# A body over the size limit is refused with 413 before it is parsed: that is a
# rejection of invalid data too (schemathesis does not count 413 by default).
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]}}}
)


@pytest.fixture
def live_server(settings: Settings, vapid_key: VapidKey) -> Iterator[str]:
    """The app on a free port; yields its base URL."""
    app = create_app(settings.with_overrides(rate_limit_per_minute=1_000_000))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


class SignAsTheCms(requests.auth.AuthBase):
    """Signs each generated webhook body as the CMS would (Standard Webhooks), so the
    fuzzing reaches payload validation instead of stopping at the 401 for a bad signature.
    Header values schemathesis made up are replaced, so header "negative" cases become
    valid ones; signature failures are tested in test_webhooks.py."""

    def __init__(self, secret: str):
        self.key = base64.b64decode(secret.removeprefix("whsec_"))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        message_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
        mac = hmac.digest(self.key, f"{message_id}.{timestamp}.".encode() + body, "sha256")
        request.headers["webhook-id"] = message_id
        request.headers["webhook-timestamp"] = timestamp
        request.headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
        return request


def _cases(document: dict) -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation; negative only where there is input to break."""
    cases = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            cases.append((method, path, GenerationMode.POSITIVE))
            if "requestBody" in operation or operation.get("parameters"):
                cases.append((method, path, GenerationMode.NEGATIVE))
    return cases


def _fuzz(document_url: str, base_url: str, method: str, path: str, mode: GenerationMode, **call: object) -> None:
    schema = schemathesis.openapi.from_url(document_url, config=CONFIG, **call.pop("load", {}))  # type: ignore[arg-type]
    operation = schema[path][method.upper()]
    checks = call.pop("checks", CHECKS)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Case) -> None:
        case.call_and_validate(base_url=base_url, checks=checks, timeout=10, **call)

    check()


# `schemathesis.pytest.from_fixture` would be the idiomatic way to load a schema from a
# live server, but schemathesis 4.32 reads `request.node._nodeid`, which pytest 9 removed.
# So each test loads the served document itself and drives Hypothesis directly.
@pytest.mark.parametrize(("method", "path", "mode"), _cases(build_openapi()), ids=lambda v: getattr(v, "value", v))
def test_browser_api_and_webhook_never_answer_5xx(
    live_server: str, webhook_secret: str, method: str, path: str, mode: GenerationMode
):
    call: dict = {}
    if path == WEBHOOK:
        session = requests.Session()
        session.auth = SignAsTheCms(webhook_secret)
        call = {"session": session, "checks": LENIENT_CHECKS}
    _fuzz(f"{live_server}/api/openapi.json", live_server, method, path, mode, **call)


@pytest.mark.parametrize(
    ("method", "path", "mode"), _cases(build_admin_openapi()), ids=lambda v: getattr(v, "value", v)
)
def test_operator_api_never_answers_5xx(live_server: str, settings: Settings, method: str, path: str, mode):
    """Always with the right bearer token (so schemathesis's "missing Authorization" negatives
    are not negative here), and unknown query arguments are ignored as most HTTP APIs do:
    so no negative-data check, but every other check and no 5xx."""
    bearer = {"Authorization": f"Bearer {settings.admin_token}"}
    _fuzz(
        f"{live_server}/admin/api/openapi.json",
        live_server,
        method,
        path,
        mode,
        headers=bearer,
        checks=LENIENT_CHECKS,
        load={"headers": bearer},
    )


def test_served_documents_are_the_generated_ones(live_server: str, settings: Settings):
    served = requests.get(f"{live_server}/api/openapi.json", timeout=5).json()
    assert served == json.loads(json.dumps(build_openapi([t.id_ for t in settings.topics])))
    assert "/webhooks/cms" in served["paths"]
    bearer = {"Authorization": f"Bearer {settings.admin_token}"}
    admin = requests.get(f"{live_server}/admin/api/openapi.json", headers=bearer, timeout=5)
    assert admin.json() == json.loads(json.dumps(build_admin_openapi()))
    assert requests.get(f"{live_server}/admin/api/openapi.json", timeout=5).status_code == 401
