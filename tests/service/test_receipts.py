"""Receipts: tokens naming (campaign, subscription) that only storypush can mint."""

from __future__ import annotations

from service import receipts


def test_receipts_verify_and_refuse_forgeries():
    key, other = b"k" * 32, b"o" * 32
    token = receipts.mint(key, "c0ffee", 1234)
    assert receipts.verify(key, token) == receipts.Receipt("c0ffee", 1234)
    assert receipts.verify(other, token) is None
    campaign, _hex_id, mac = token.split(".")
    assert receipts.verify(key, f"{campaign}.{1235:x}.{mac}") is None
    assert receipts.verify(key, "garbage") is None
    assert len(token) < 40
