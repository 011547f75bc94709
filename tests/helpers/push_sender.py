"""A sender built from the reference libraries (pywebpush), for the simulator's own tests:
a pass means the simulator agrees with them."""

from __future__ import annotations

import requests
from pywebpush import WebPusher

from benchmarks.pushsim import PushSimulator


def encrypt(subscription: dict, plaintext: bytes) -> bytes:
    """pywebpush's RFC 8291 aes128gcm body for `subscription`."""
    return WebPusher(subscription).encode(plaintext, "aes128gcm")["body"]


def post_push(
    sim: PushSimulator, endpoint: str, body: bytes, headers: dict[str, str], session: requests.Session | None = None
) -> requests.Response:
    """POST a push body to the simulator over its HTTPS."""
    # verify= explicitly: this machine exports REQUESTS_CA_BUNDLE, which only yields to a path.
    return (session or requests).post(endpoint, data=body, headers=headers, verify=sim.ca_file, timeout=10)
