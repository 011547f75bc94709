"""The operator dashboard and API under `/admin`, all behind `STORYPUSH_ADMIN_TOKEN`.

Two ways in: `Authorization: Bearer <token>` (scripts, monitoring) or a sign-in
form that sets a signed session cookie (people). The cookie is signed with a key
derived from the admin token, so there is no second secret to manage and
changing the token signs everyone out. Cookie-authenticated POSTs must carry the
session's CSRF token; bearer requests need none (a browser never adds that
header by itself). No token configured: every route answers 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, send_from_directory, url_for
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from . import feeds, queueing
from .errors import Conflict, Forbidden, InvalidField, NotFound, Unauthorized
from .http import bearer_token, parse_body, same_secret, token_matches
from .openapi import build_admin_openapi
from .state import current_state
from .store.campaign_store import FINAL_STATES, CampaignState
from .validation import MAX_CAMPAIGNS, MAX_RATE_MINUTES

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

ASSETS_DIR = Path(__file__).resolve().parent / "templates" / "admin"
ASSETS = frozenset({"dashboard.js", "admin.css"})
SESSION_COOKIE = "sp_admin"
SESSION_MAX_AGE = 12 * 3600
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.login_submit"})
DISABLED = "admin is disabled: STORYPUSH_ADMIN_TOKEN is not set"
# Scripts and styles only from our own origin: no inline JS for an injected string to become.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"


# -- authentication -----------------------------------------------------------------


def _serializer(admin_token: str) -> URLSafeTimedSerializer:
    key = hmac.new(admin_token.encode(), b"storypush admin session v1", hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt="storypush-admin-session")


def _session(admin_token: str) -> dict[str, Any] | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(admin_token).loads(raw, max_age=SESSION_MAX_AGE)
    except BadData:  # a bad or expired signature, or a payload that does not load
        return None
    return data if isinstance(data, dict) and isinstance(data.get("csrf"), str) else None


def _csrf_sent() -> str:
    return request.headers.get(CSRF_HEADER) or request.form.get("csrf_token") or ""


def _refuse(message: str) -> BaseResponse:
    """401: JSON for the API, the sign-in page (or a redirect to it) for pages."""
    if request.path.startswith("/admin/api/"):
        raise Unauthorized(message)
    if current_state().settings.admin_token is None:
        return Response(render_template("admin/login.html", error=message, disabled=True), status=401)
    return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))


@bp.before_request
def _authorize() -> BaseResponse | None:
    """Let through a valid bearer token, or a valid session (with CSRF token on writes)."""
    admin_token = current_state().settings.admin_token
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if admin_token is None:
        return _refuse(DISABLED)
    bearer = bearer_token()
    if bearer is not None:
        if not token_matches(bearer, admin_token):
            raise Unauthorized("wrong admin token")
        g.admin_auth = "bearer"
        return None
    session = _session(admin_token)
    if session is None:
        return _refuse("sign in with the admin token")
    if request.method not in SAFE_METHODS and not same_secret(_csrf_sent(), session["csrf"]):
        raise Forbidden("missing or wrong CSRF token")
    g.admin_auth, g.csrf_token = "session", session["csrf"]
    return None


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if response.status_code == 401 and request.path.startswith("/admin/api/"):
        response.headers["WWW-Authenticate"] = 'Bearer realm="storypush admin"'
    return response


@bp.get("/login")
def login() -> tuple[str, int]:
    """The sign-in form (asks for the admin token)."""
    disabled = current_state().settings.admin_token is None
    error = DISABLED if disabled else None
    return render_template("admin/login.html", error=error, disabled=disabled), 401 if disabled else 200


@bp.post("/login")
def login_submit() -> BaseResponse | tuple[str, int]:
    """Check the token; on success set the session cookie and go to the dashboard."""
    admin_token = current_state().settings.admin_token
    if admin_token is None or not token_matches(request.form.get("token", ""), admin_token):
        error = DISABLED if admin_token is None else "wrong token"
        return render_template("admin/login.html", error=error, disabled=admin_token is None), 401
    target = request.args.get("next", "")
    response = redirect(target if target.startswith("/admin") and "//" not in target else url_for("admin.dashboard"))
    cookie = _serializer(admin_token).dumps({"csrf": secrets.token_urlsafe(32)})
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=SESSION_MAX_AGE, path="/admin", secure=True, httponly=True, samesite="Strict"
    )
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    """Forget the session cookie (CSRF-checked like every cookie POST)."""
    response = redirect(url_for("admin.login"))
    response.delete_cookie(SESSION_COOKIE, path="/admin", secure=True, httponly=True, samesite="Strict")
    return response


# -- pages ----------------------------------------------------------------------------


@bp.get("/")
@bp.get("")
def dashboard() -> str:
    """Campaigns, send rate, queues, workers, failed jobs, subscribers, prompt funnel."""
    return render_template("admin/dashboard.html", csrf_token=g.get("csrf_token", ""))


@bp.get("/campaigns/<campaign_id>")
def campaign_page(campaign_id: str) -> str:
    """One campaign: counters, errors by reason, timeline, Cancel."""
    campaign = current_state().store.campaigns.get(campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return render_template("admin/campaign.html", campaign=campaign, csrf_token=g.get("csrf_token", ""))


@bp.get("/assets/<name>")
def asset(name: str) -> Response:
    """The dashboard's own script and stylesheet (no build step, no CDN)."""
    if name not in ASSETS:
        raise NotFound(f"no asset {name}")
    return send_from_directory(ASSETS_DIR, name, max_age=0)


# -- operator API ---------------------------------------------------------------------


@bp.get("/api/overview")
def overview() -> Response:
    """Subscribers, queues, workers, send rate, push-service lanes and prompt funnel in one poll."""
    state = current_state()
    store, connection = state.store, state.queue_connection
    names = queueing.queue_names(connection, state.settings.queue_name)
    funnel = store.prompt_funnel()
    return jsonify(
        {
            "subscribers": {"total": store.subscriptions.count(), "by_topic": store.subscriptions.count_by_topic()},
            "queues": [{"name": name, **queueing.queue_counts(connection, name)} for name in names],
            "workers": queueing.worker_rows(connection),
            "send_rate": round(store.metrics.send_rate(), 3),
            "push_services": store.metrics.lane_rows(),
            "prompt_funnel": {**funnel, "subscribed": store.metrics.subscriptions_created()},
        }
    )


def _whole_number(name: str, default: int, high: int) -> int:
    """Query argument `name` as a whole number from 1 to `high`, else a 422 naming it.
    ASCII digits only: `str.isdigit` also takes "²", which `int` then refuses."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= high):
        raise InvalidField(f"{name} must be a whole number from 1 to {high}", field=name)
    return int(raw)


@bp.get("/api/campaigns")
def campaigns() -> Response:
    """Campaigns, newest first (`limit` 1..500, default 50)."""
    limit = _whole_number("limit", 50, MAX_CAMPAIGNS)
    return jsonify({"campaigns": current_state().store.campaigns.list(limit)})


@bp.get("/api/campaigns/<campaign_id>")
def campaign(campaign_id: str) -> Response:
    """One campaign: counters, timeline and errors by reason (README, Operator API)."""
    found = current_state().store.campaigns.get(campaign_id)
    if found is None:
        raise NotFound(f"no campaign {campaign_id}", field="id")
    return jsonify(found)


@bp.post("/api/campaigns/<campaign_id>/cancel")
def cancel_campaign(campaign_id: str) -> Response:
    """Cancel a campaign that is not final yet; batches not yet sent skip their work."""
    campaigns_ = current_state().store.campaigns
    state = campaigns_.state(campaign_id)
    if state is None:
        raise NotFound(f"no campaign {campaign_id}", field="id")
    if not campaigns_.cancel(campaign_id):  # only moves a campaign that is not final yet
        raise Conflict(f"campaign is already {campaigns_.state(campaign_id)}", field="state")
    return jsonify(campaigns_.get(campaign_id))


@bp.get("/api/send-rate")
def send_rate() -> Response:
    """Pushes per second per minute for the chart (`minutes` 1..120, default 60)."""
    buckets = current_state().store.metrics.rate_buckets(_whole_number("minutes", 60, MAX_RATE_MINUTES))
    return jsonify({"points": [{"minute": start, "rate": round(count / 60, 3)} for start, count in buckets]})


@bp.get("/api/openapi.json")
def openapi() -> Response:
    """This API's OpenAPI 3 document."""
    return jsonify(build_admin_openapi())


def _queues() -> tuple[Any, list[str]]:
    """The queue Redis and the names of the queues to look in for failed jobs."""
    state = current_state()
    return state.queue_connection, queueing.queue_names(state.queue_connection, state.settings.queue_name)


@bp.get("/api/failed-jobs")
def failed_jobs() -> Response:
    """Failed RQ jobs, newest first, with the error each ended on."""
    return jsonify({"jobs": queueing.failed_jobs(*_queues())})


@bp.post("/api/failed-jobs/<job_id>/retry")
def retry_failed_job(job_id: str) -> Response:
    """Put a failed job back on its queue."""
    queueing.retry_failed_job(*_queues(), job_id)
    return jsonify({"id": job_id, "status": "queued"})


@bp.post("/api/failed-jobs/<job_id>/delete")
def delete_failed_job(job_id: str) -> Response:
    """Forget a failed job."""
    queueing.delete_failed_job(*_queues(), job_id)
    return jsonify({"id": job_id, "status": "deleted"})


@bp.get("/api/feeds")
def list_feeds() -> Response:
    """Every feed with its poll status, oldest first."""
    return jsonify({"feeds": [feed.as_json() for feed in current_state().store.feeds.list()]})


@bp.post("/api/feeds")
def add_feed() -> tuple[Response, int]:
    """Add a feed (`url`, `topics`?, `category_map`?, `every`?); its first poll sends nothing."""
    state = current_state()
    spec = parse_body(feeds.FeedSpec, **feeds.spec_context(state.settings, state.store))
    return jsonify(feeds.add_feed(state, spec).as_json()), 201


@bp.get("/api/feeds/<feed_id>")
def feed(feed_id: str) -> Response:
    """One feed and its poll status."""
    found = current_state().store.feeds.get(feed_id)
    if found is None:
        raise NotFound(f"no feed {feed_id}", field="id")
    return jsonify(found.as_json())


@bp.delete("/api/feeds/<feed_id>")
def remove_feed(feed_id: str) -> tuple[str, int]:
    """Stop polling a feed and forget it (its stories' campaigns stay)."""
    if not feeds.remove_feed(current_state(), feed_id):
        raise NotFound(f"no feed {feed_id}", field="id")
    return "", 204


def is_final(state: str) -> bool:
    """For templates: whether Cancel makes sense."""
    return CampaignState(state) in FINAL_STATES


bp.add_app_template_global(is_final, "campaign_is_final")
