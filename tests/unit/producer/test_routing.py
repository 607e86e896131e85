"""SMSQ_ROUTES parsing and the choice of provider (producer.routing)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from producer.errors import InvalidMessage
from producer.routing import Route, choose_providers, match_route, parse_routes
from producer.settings import reload_settings

DRC = "243851234567"
UKRAINE = "380501234567"
TOGO = "22890123456"


def test_parse_full_routes() -> None:
    routes = parse_routes("243=keccel,228=kingsms,380=smsclub,*=sms1601")
    assert routes == [
        Route("243", ("keccel",)),
        Route("228", ("kingsms",)),
        Route("380", ("smsclub",)),
        Route("*", ("sms1601",)),
    ]


def test_parse_fallbacks() -> None:
    assert parse_routes("243=keccel|sms1601") == [Route("243", ("keccel", "sms1601"))]


def test_parse_tolerates_spaces_case_plus_and_empty_entries() -> None:
    assert parse_routes(" +243 = KECCEL | Sms1601 ,, *=smsclub ,") == [
        Route("243", ("keccel", "sms1601")),
        Route("*", ("smsclub",)),
    ]


@pytest.mark.parametrize("value", [None, "", "  ", ","])
def test_parse_empty(value: str | None) -> None:
    assert parse_routes(value) == []


def test_star_sorts_last_and_longest_prefix_first() -> None:
    routes = parse_routes("*=sms1601,2=kingsms,2438=smsclub,243=keccel")
    assert [r.prefix for r in routes] == ["2438", "243", "2", "*"]


def test_longest_prefix_wins() -> None:
    routes = parse_routes("*=sms1601,24=kingsms,243=keccel,2438=smsclub")
    assert match_route("243851234567", routes) == Route("2438", ("smsclub",))
    assert match_route("243991234567", routes) == Route("243", ("keccel",))
    assert match_route("241234", routes) == Route("24", ("kingsms",))
    assert match_route("380501234567", routes) == Route("*", ("sms1601",))


def test_no_match_without_star() -> None:
    assert match_route(UKRAINE, parse_routes("243=keccel")) is None


@pytest.mark.parametrize(
    "entry",
    [
        "243keccel",  # no '='
        "abc=keccel",  # prefix not digits
        "24 3=keccel",
        "243=twilio",  # unknown provider
        "243=keccel|nope",  # unknown fallback
        "243=",  # no provider
        "=keccel",  # no prefix
        "**=keccel",
    ],
)
def test_bad_entry_raises_value_error_naming_it(entry: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_routes(f"228=kingsms,{entry},*=sms1601")
    assert repr(entry) in str(info.value)
    assert "SMSQ_ROUTES" in str(info.value)


# ---------------------------------------------------------------- choose_providers


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    """No SMSQ_* from outside, no .env file; settings re-read before and after."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            monkeypatch.delenv(key)
    reload_settings()
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()


def _set(mp: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in values.items():
        mp.setenv(f"SMSQ_{key.upper()}", value)
    reload_settings()


def test_named_provider(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x", smsclub_token="y")
    assert choose_providers(DRC, "smsclub") == ("smsclub",)
    assert choose_providers(DRC, "keccel") == ("keccel",)


def test_named_provider_beats_route(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x", smsclub_token="y", routes="243=keccel")
    assert choose_providers(DRC, "smsclub") == ("smsclub",)


def test_named_provider_matching_route_keeps_configured_fallbacks(
    env: pytest.MonkeyPatch,
) -> None:
    _set(
        env,
        keccel_token="x",
        smsclub_token="y",
        routes="243=keccel|kingsms|smsclub",
    )
    # kingsms is not configured: dropped from the fallbacks
    assert choose_providers(DRC, "keccel") == ("keccel", "smsclub")


def test_routed(env: pytest.MonkeyPatch) -> None:
    _set(
        env,
        keccel_token="x",
        smsclub_token="y",
        sms1601_username="u",
        sms1601_password="p",
        routes="243=keccel|sms1601,380=smsclub,*=sms1601",
    )
    assert choose_providers(DRC, None) == ("keccel", "sms1601")
    assert choose_providers(UKRAINE, None) == ("smsclub",)
    assert choose_providers(TOGO, None) == ("sms1601",)


def test_routed_first_provider_unconfigured_refused(env: pytest.MonkeyPatch) -> None:
    _set(env, smsclub_token="y", routes="243=keccel")
    with pytest.raises(InvalidMessage) as info:
        choose_providers(DRC, None)
    assert info.value.field == "provider"
    assert "keccel is not configured" in info.value.rule


def test_default_provider_when_no_route_matches(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x", smsclub_token="y", routes="380=smsclub", default_provider="keccel")
    assert choose_providers(DRC, None) == ("keccel",)
    assert choose_providers(UKRAINE, None) == ("smsclub",)


def test_default_provider_normalised(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x", smsclub_token="y", default_provider=" SMSClub ")
    assert choose_providers(DRC, None) == ("smsclub",)


def test_unknown_default_provider_refused(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x", default_provider="twilio")
    with pytest.raises(InvalidMessage) as info:
        choose_providers(DRC, None)
    assert info.value.field == "provider"
    assert "twilio" in info.value.rule


def test_first_configured_in_declared_order(env: pytest.MonkeyPatch) -> None:
    _set(env, sms1601_username="u", sms1601_password="p", smsclub_token="y")
    assert choose_providers(DRC, None) == ("smsclub",)
    _set(env, keccel_token="x")
    assert choose_providers(DRC, None) == ("keccel",)


def test_half_configured_provider_is_not_configured(env: pytest.MonkeyPatch) -> None:
    _set(env, kingsms_api_key="k")  # client_id missing
    with pytest.raises(InvalidMessage) as info:
        choose_providers(DRC, None)
    assert info.value.field == "provider"


def test_none_configured(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidMessage) as info:
        choose_providers(DRC, None)
    assert info.value.field == "provider"
    assert "no provider is configured" in info.value.rule


def test_unconfigured_named_provider_refused(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x")
    with pytest.raises(InvalidMessage) as info:
        choose_providers(DRC, "kingsms")
    assert info.value.field == "provider"
    assert "kingsms is not configured" in info.value.rule
    assert "SMSQ_KINGSMS_" in info.value.rule


def test_bad_routes_setting_is_invalid_message(env: pytest.MonkeyPatch) -> None:
    _set(env, keccel_token="x", routes="243=twilio")
    with pytest.raises(InvalidMessage) as info:
        choose_providers(DRC, None)
    assert info.value.field == "provider"
    assert "'243=twilio'" in info.value.rule
