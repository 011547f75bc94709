"""Fixtures the simulator's tests share: one VAPID key pair per module."""

from __future__ import annotations

import pytest
from py_vapid import Vapid02

from benchmarks.pushsim.crypto import public_bytes


@pytest.fixture(scope="module")
def vapid() -> Vapid02:
    key = Vapid02()
    key.generate_keys()
    return key


@pytest.fixture(scope="module")
def server_key(vapid: Vapid02) -> bytes:
    return public_bytes(vapid.private_key)
