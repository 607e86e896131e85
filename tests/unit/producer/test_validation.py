"""Edge checks of producer.validation: every rule raises InvalidMessage naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from producer.errors import InvalidMessage
from producer.limits import limits_for
from producer.settings import provider_names
from producer.validation import (
    MAX_IDEMPOTENCY_KEY,
    MAX_URL,
    check_idempotency_key,
    check_provider,
    check_send_at,
    check_sender,
    check_text,
    check_url,
    normalise_number,
)

# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "raw",
    [
        "243851234567",
        "+243851234567",
        "+243 85 123 4567",
        "00243851234567",
        "243-85-123-4567",
        "243.85.123.4567",
        "  243851234567  ",
        "(243) 85 123 4567",
    ],
)
def test_normalise_number_accepts_pasted_forms(raw: str) -> None:
    assert normalise_number(raw) == "243851234567"


def test_normalise_number_accepts_plus_inside_brackets() -> None:
    assert normalise_number("(+243) 85-123-4567") == "243851234567"


def test_normalise_number_other_countries() -> None:
    assert normalise_number("+380 50 123 4567") == "380501234567"


def test_normalise_number_accepts_int() -> None:
    assert normalise_number(243851234567) == "243851234567"


def _invalid(value: object, field: str = "to") -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        normalise_number(value, field)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return info.value


def test_letters_refused() -> None:
    exc = _invalid("24385ABC4567")
    assert "characters a phone number cannot have" in exc.rule
    assert "24385ABC4567" in exc.rule


@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_refused(raw: str) -> None:
    assert "empty" in _invalid(raw).rule


def test_too_short_refused() -> None:
    assert "wrong length" in _invalid("2438512").rule


def test_too_long_refused() -> None:
    exc = _invalid("24385123456789012")
    assert "wrong length" in exc.rule or "not an international number" in exc.rule


def test_unknown_country_code_refused() -> None:
    assert "not an international number" in _invalid("999123456789").rule


def test_invalid_in_country_plan_refused() -> None:
    # +243 55... has the right length but no such range in the DRC plan
    assert "not a valid number" in _invalid("243551234567").rule


@pytest.mark.parametrize("bad", ["+", "++243851234567", "243851234567+", "#243851234567"])
def test_bad_punctuation_refused(bad: str) -> None:
    _invalid(bad)


@pytest.mark.parametrize("value", [None, 243851234567.0, True, False, b"243851234567", ["243"], {}])
def test_non_string_types_refused(value: object) -> None:
    assert "as a string" in _invalid(value).rule


def test_custom_field_name_is_used() -> None:
    assert _invalid("abc", "to[3]").field == "to[3]"


# ---------------------------------------------------------------- sender


@pytest.mark.parametrize("sender", ["A", "SMSQ", "Shop-24 A.B", "ABCDEFGHIJK", "My_Co & Co"])
def test_alnum_sender_up_to_11_ok(sender: str) -> None:
    assert check_sender(sender, "keccel") == sender


def test_sender_is_stripped() -> None:
    assert check_sender("  SMSQ  ", "keccel") == "SMSQ"


def test_no_sender_is_none() -> None:
    assert check_sender(None, "keccel") is None


@pytest.mark.parametrize("provider", sorted(provider_names()))
def test_sender_12_chars_refused(provider: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_sender("ABCDEFGHIJKL", provider)
    assert info.value.field == "sender"
    assert "longer than 11" in info.value.rule


@pytest.mark.parametrize("sender", ["Café", "<SMSQ>", "Hi!", "A@B", "SMS\nQ", "A+B"])
def test_sender_bad_characters_refused(sender: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_sender(sender, "keccel")
    assert info.value.field == "sender"
    assert "characters networks refuse" in info.value.rule


@pytest.mark.parametrize("sender", ["123", "243851234567", "+243851234567", "123456789012345"])
def test_numeric_sender_up_to_15_digits_ok(sender: str) -> None:
    assert check_sender(sender, "kingsms") == sender


def test_numeric_sender_16_digits_refused() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_sender("1234567890123456", "keccel")
    assert info.value.field == "sender"


@pytest.mark.parametrize("sender", ["", "   "])
def test_empty_sender_refused(sender: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_sender(sender, "keccel")
    assert info.value.field == "sender"
    assert "empty" in info.value.rule


def test_sender_without_letters_refused() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_sender("- -", "keccel")
    assert "at least one letter" in info.value.rule


def test_non_string_sender_refused() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_sender(12345, "keccel")
    assert info.value.field == "sender"


# ---------------------------------------------------------------- text


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_empty_text_refused(text: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_text(text, "keccel")
    assert info.value.field == "text"
    assert "empty" in info.value.rule


@pytest.mark.parametrize("provider", sorted(provider_names()))
def test_text_at_provider_max_ok_and_one_more_refused(provider: str) -> None:
    limit = limits_for(provider).max_text
    info = check_text("a" * limit, provider)
    assert info.encoding == "gsm7"
    assert info.segments <= limits_for(provider).max_segments
    with pytest.raises(InvalidMessage) as exc:
        check_text("a" * (limit + 1), provider)
    assert exc.value.field == "text"
    assert f"has {limit + 1} characters" in exc.value.rule
    assert provider in exc.value.rule


def test_text_too_many_ucs2_parts_refused() -> None:
    # 459 characters is sms1601's max, but in UCS-2 that is 7 parts, over its 3
    limits = limits_for("sms1601")
    with pytest.raises(InvalidMessage) as exc:
        check_text("ж" * limits.max_text, "sms1601")
    assert exc.value.field == "text"
    assert "parts" in exc.value.rule


def test_text_with_nul_refused() -> None:
    for text in ("\x00", "hello\x00world"):
        with pytest.raises(InvalidMessage) as info:
            check_text(text, "keccel")
        assert info.value.field == "text"
        assert "NUL" in info.value.rule


def test_text_non_string_refused() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_text(b"hello", "keccel")
    assert info.value.field == "text"


def test_text_info_returned() -> None:
    info = check_text("Привет", "smsclub")
    assert (info.encoding, info.units, info.segments) == ("ucs2", 6, 1)


# ---------------------------------------------------------------- send_at


def test_send_at_none() -> None:
    assert check_send_at(None) is None


def test_send_at_past_refused() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_send_at(datetime.now(UTC) - timedelta(seconds=5))
    assert info.value.field == "send_at"
    assert "in the past" in info.value.rule


def test_send_at_future_aware_returned_as_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    when = datetime.now(plus2) + timedelta(hours=1)
    got = check_send_at(when)
    assert got == when
    assert got is not None and got.utcoffset() == timedelta(0)


def test_send_at_naive_is_utc() -> None:
    aware = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    got = check_send_at(aware.replace(tzinfo=None))
    assert got == aware
    assert got is not None and got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_send_at_naive_past_utc_refused() -> None:
    # one minute ago in UTC, as naive: refused whatever the local time zone
    naive = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None)
    with pytest.raises(InvalidMessage):
        check_send_at(naive)


@pytest.mark.parametrize("suffix", ["Z", "+00:00", "+02:00"])
def test_send_at_iso_string_accepted(suffix: str) -> None:
    got = check_send_at(f"2999-01-02T03:04:05{suffix}")
    expected = datetime(2999, 1, 2, 3, 4, 5, tzinfo=UTC)
    if suffix == "+02:00":
        expected -= timedelta(hours=2)
    assert got == expected


def test_send_at_iso_string_in_past_refused() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_send_at("2000-01-01T00:00:00Z")
    assert info.value.field == "send_at"


@pytest.mark.parametrize("garbage", ["tomorrow", "", "2999-13-01T00:00:00", "12/01/2999"])
def test_send_at_garbage_string_refused(garbage: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_send_at(garbage)
    assert info.value.field == "send_at"
    assert "ISO 8601" in info.value.rule


@pytest.mark.parametrize("value", [1234567890, 12.5, ["2999-01-01"]])
def test_send_at_wrong_type_refused(value: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_send_at(value)
    assert info.value.field == "send_at"


# ---------------------------------------------------------------- provider, url, key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("keccel", "keccel"),
        (" SMSClub ", "smsclub"),
        ("KINGSMS", "kingsms"),
        ("sms1601", "sms1601"),
    ],
)
def test_check_provider_ok(value: str, expected: str) -> None:
    assert check_provider(value) == expected


@pytest.mark.parametrize("value", ["twilio", "", None, 1, ["keccel"]])
def test_check_provider_refused(value: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_provider(value)
    assert info.value.field == "provider"
    assert "unknown provider" in info.value.rule
    assert "keccel" in info.value.rule  # lists the known ones


@pytest.mark.parametrize(
    "url", ["http://example.com", "https://example.com/hook?x=1", " https://a.b/c "]
)
def test_check_url_ok(url: str) -> None:
    assert check_url(url) == url.strip()


def test_check_url_none() -> None:
    assert check_url(None) is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com", "example.com", "https://", "https:// x", "", 42, "javascript:x"]
)
def test_check_url_refused(url: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_url(url)
    assert info.value.field == "callback_url"


def test_check_url_too_long_refused() -> None:
    url = "https://example.com/" + "a" * MAX_URL
    with pytest.raises(InvalidMessage) as info:
        check_url(url)
    assert info.value.field == "callback_url"
    assert str(MAX_URL) in info.value.rule


def test_check_idempotency_key() -> None:
    assert check_idempotency_key(None) is None
    assert check_idempotency_key("order-42") == "order-42"
    assert check_idempotency_key("k" * MAX_IDEMPOTENCY_KEY) == "k" * MAX_IDEMPOTENCY_KEY


@pytest.mark.parametrize("key", ["", "   ", 42, b"k", "k" * (MAX_IDEMPOTENCY_KEY + 1)])
def test_check_idempotency_key_refused(key: object) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_idempotency_key(key)
    assert info.value.field == "idempotency_key"
