"""`/healthz`: what a load balancer asks."""

from __future__ import annotations

from service import create_app
from service.settings import Settings


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"redis": "ok", "workers": 0}


def test_healthz_503_when_redis_is_unreachable(tmp_path, vapid_key, settings: Settings):
    app = create_app(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    assert app.test_client().get("/healthz").status_code == 503
