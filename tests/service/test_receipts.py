"""Receipts: every minted token verifies, nothing else does, and no input raises."""

from __future__ import annotations

import secrets

from hypothesis import example, given
from hypothesis import strategies as st

from service import receipts

KEY = secrets.token_bytes(32)
CAMPAIGN_IDS = st.from_regex(r"c[0-9a-f]{12}", fullmatch=True)
SUBSCRIPTION_IDS = st.integers(min_value=0, max_value=2**63)


@given(CAMPAIGN_IDS, SUBSCRIPTION_IDS)
def test_minted_receipts_verify(campaign_id, subscription_id):
    token = receipts.mint(KEY, campaign_id, subscription_id)
    assert receipts.verify(KEY, token) == receipts.Receipt(campaign_id, subscription_id)
    assert receipts.verify(secrets.token_bytes(32), token) is None


@given(st.text(max_size=128))
@example("cabc.1.é")  # the row: hmac.compare_digest raised on non-ASCII text
@example("cabc.1.\udc80")
@example("c0123456789ab.0x1f.AAAAAAAAAAAAAAAA")
@example("c0123456789ab.-1.AAAAAAAAAAAAAAAA")
@example("c0123456789ab. 1f.AAAAAAAAAAAAAAAA")
def test_any_text_is_refused_without_raising(token):
    assert receipts.verify(KEY, token) is None


@given(CAMPAIGN_IDS, SUBSCRIPTION_IDS, st.data())
def test_any_change_to_a_receipt_is_refused(campaign_id, subscription_id, data):
    token = receipts.mint(KEY, campaign_id, subscription_id)
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != token[position]))
    assert receipts.verify(KEY, token[:position] + replacement + token[position + 1 :]) is None


def test_receipts_verify_and_refuse_forgeries():
    key, other = b"k" * 32, b"o" * 32
    token = receipts.mint(key, "c0ffee", 1234)
    assert receipts.verify(key, token) == receipts.Receipt("c0ffee", 1234)
    assert receipts.verify(other, token) is None
    campaign, _hex_id, mac = token.split(".")
    assert receipts.verify(key, f"{campaign}.{1235:x}.{mac}") is None
    assert receipts.verify(key, "garbage") is None
    assert len(token) < 40
