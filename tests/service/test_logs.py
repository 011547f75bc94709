"""Logs never carry a push endpoint: a short digest stands in for it."""

from __future__ import annotations

from service.logs import endpoint_ref


def test_endpoint_ref_is_short_and_stable():
    endpoint = "https://fcm.googleapis.com/fcm/send/x"
    assert endpoint_ref(endpoint) == endpoint_ref(endpoint) and len(endpoint_ref(endpoint)) == 12
    assert "fcm" not in endpoint_ref(endpoint)
