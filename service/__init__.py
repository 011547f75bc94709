"""storypush's Flask application factory."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from .settings import Settings, load_settings
from .state import AppState

_PACKAGE_DIR = Path(__file__).resolve().parent
# `sw.js` and `prompt.js`. Installed from a wheel or sdist they are package data beside this
# file (pyproject.toml maps the repository's static/ to `service/static`); in a checkout (an
# editable install) they stay where the repository keeps them, at its top level.
STATIC_DIR = _PACKAGE_DIR / "static" if (_PACKAGE_DIR / "static").is_dir() else _PACKAGE_DIR.parent / "static"

# Browser bodies are a subscription and a few topics; anything bigger is not ours.
MAX_BODY_BYTES = 8 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; tests pass their own `settings`, production reads the environment."""
    settings = settings or load_settings()
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["storypush"] = AppState(settings)
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    CORS(
        app,
        resources={r"/api/v1/*": {"origins": list(settings.allowed_origins)}},
        methods=["GET", "POST", "DELETE"],
        allow_headers=["Content-Type"],
        max_age=86400,
    )

    from . import admin, api, demo, health, metrics, webhooks
    from .http import register_error_handlers
    from .openapi import build_openapi

    register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(demo.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(metrics.bp)
    document = build_openapi([topic.id_ for topic in settings.topics])
    app.add_url_rule("/api/openapi.json", "openapi", lambda: jsonify(document))
    return app
