"""A publisher-like story page with the soft prompt embedded, and the root-scoped service worker."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template, request, send_from_directory

bp = Blueprint("demo", __name__)


@bp.get("/demo")
def demo() -> str:
    """The "Our Planet" walrus story, embedding prompt.js with one script tag."""
    return render_template("demo.html", api=request.host_url.rstrip("/"))


@bp.get("/sw.js")
def service_worker() -> Response:
    """`static/sw.js` from the site root, so it may control (and push to) the whole origin."""
    response = send_from_directory(current_app.static_folder or "static", "sw.js", mimetype="application/javascript")
    response.headers["Service-Worker-Allowed"] = "/"
    # Browsers check for a new worker on navigation; a cached copy would delay fixes by a day.
    response.headers["Cache-Control"] = "no-cache"
    return response
