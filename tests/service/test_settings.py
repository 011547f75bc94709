"""Settings: a bad value stops start-up, naming the variable."""

from __future__ import annotations

import pytest

from service.errors import SettingsError
from service.settings import load_settings


@pytest.mark.parametrize("name", ["STORYPUSH_METRICS_TOKEN", "STORYPUSH_ADMIN_TOKEN"])
def test_short_tokens_stop_start_up(name):
    with pytest.raises(SettingsError) as caught:
        load_settings({name: "short"})
    assert caught.value.variable == name
    assert getattr(load_settings({name: "x" * 16}), name.removeprefix("STORYPUSH_").lower()) == "x" * 16
