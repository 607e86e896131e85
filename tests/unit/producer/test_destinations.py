"""SMSQ_ALLOWED_COUNTRIES and special numbers (issue 15, point 3): refused as
InvalidMessage on `to`, nothing stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import func, select

from producer import InvalidMessage, db, send_bulk, send_sms
from producer import api as producer_api
from producer.models import Message
from producer.settings import Settings, reload_settings
from producer.validation import destination_refusal
from tests.unit.conftest import isolate, restore

PREMIUM_UK = "449098790000"
SATELLITE = "881612345678"
INTERNATIONAL_FREEPHONE = "80012345678"
UK_FREEPHONE = "448001234567"
FRENCH_SHARED_COST = "33810123456"
INTERNATIONAL_PREMIUM = "979123456789"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k", SMSQ_SMSCLUB_TOKEN="s")
    monkeypatch.setattr(producer_api, "publish_send", lambda ids, countdown=None, **_: None)
    yield monkeypatch
    restore(monkeypatch)


def stored() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (PREMIUM_UK, "premium-rate"),
        (SATELLITE, "non-geographic"),
        (INTERNATIONAL_FREEPHONE, "freephone"),
        (UK_FREEPHONE, "freephone"),
        (FRENCH_SHARED_COST, "shared-cost"),
        (INTERNATIONAL_PREMIUM, "premium-rate"),
    ],
)
def test_special_numbers_are_refused_on_to(store, number: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidMessage) as refused:
        send_sms(number, "x")
    assert refused.value.field == "to" and kind in refused.value.rule
    assert "SMSQ_ALLOW_SPECIAL_NUMBERS" in refused.value.rule
    assert stored() == 0


def test_special_numbers_pass_when_allowed(store) -> None:  # type: ignore[no-untyped-def]
    store.setenv("SMSQ_ALLOW_SPECIAL_NUMBERS", "true")
    reload_settings()
    send_sms(PREMIUM_UK, "x", provider="keccel")
    send_sms(SATELLITE, "x", provider="keccel")
    assert stored() == 2


def test_only_allowed_calling_codes_pass(store) -> None:  # type: ignore[no-untyped-def]
    store.setenv("SMSQ_ALLOWED_COUNTRIES", "243, +228")
    reload_settings()
    send_sms("243851234567", "x")
    with pytest.raises(InvalidMessage) as refused:
        send_bulk(["243851234567", "380989361131"], "x")
    assert refused.value.field == "to[1]"
    assert "calling code 380; allowed: 228, 243" in refused.value.rule
    assert stored() == 1


def test_destination_refusal_is_a_pure_decision() -> None:
    assert destination_refusal("243851234567", frozenset(), False) is None
    assert destination_refusal("243851234567", frozenset({243}), False) is None
    assert destination_refusal("31612345678", frozenset({243}), True) is not None
    assert destination_refusal(PREMIUM_UK, frozenset({44}), True) is None
    assert "premium-rate" in str(destination_refusal(PREMIUM_UK, frozenset({44}), False))


@pytest.mark.parametrize("value", ["243,abc", "1234", "24 3"])
def test_a_bad_allowed_countries_setting_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="SMSQ_ALLOWED_COUNTRIES"):
        Settings(allowed_countries=value)
