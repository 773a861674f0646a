"""The user endpoint's guard: bearer token in constant time, and no token-less exposure to a network."""

from __future__ import annotations

import pytest

from retention_model.errors import RetentionError
from streams.access import authorised, check_api_exposure, is_loopback
from streams.settings import Settings


def test_the_token_is_required_and_compared_exactly() -> None:
    assert authorised(None, "")  # no token configured: open (loopback only, see below)
    assert not authorised(None, "s3cret")
    assert not authorised("Bearer wrong", "s3cret")
    assert not authorised("Bearer s3cret-and-more", "s3cret")
    assert not authorised("Basic s3cret", "s3cret")
    assert authorised("Bearer s3cret", "s3cret")
    assert authorised("bearer  s3cret ", "s3cret")


def test_loopback_addresses_and_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_a_worker_on_a_network_address_without_a_token_refuses_to_start() -> None:
    exposed = Settings.load({"RETENTION_WEB_HOST": "0.0.0.0"})
    with pytest.raises(RetentionError, match="RETENTION_API_TOKEN"):
        check_api_exposure(exposed)
    check_api_exposure(exposed.replace(api_token="t0ken"))
    check_api_exposure(exposed.replace(api_public="true"))  # said on purpose
    check_api_exposure(exposed.replace(state_api="off"))  # nothing personal served
    check_api_exposure(Settings.load({}))  # 127.0.0.1 by default


def test_the_token_is_never_shown() -> None:
    settings = Settings.load({"RETENTION_API_TOKEN": "t0ken-value"})
    assert "t0ken-value" not in repr(settings)
    from streams.reference import settings_table, settings_text

    assert "t0ken-value" not in settings_table() + settings_text()
