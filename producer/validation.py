"""Checks at the edge: every rule names its field, and runs before anything is stored."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import phonenumbers

from producer import callback_policy
from producer.encoding import TextInfo, analyse
from producer.errors import InvalidMessage
from producer.limits import limits_for
from producer.settings import get_settings, provider_names

# What people paste around a number: spaces, dashes, dots, brackets, a leading + or 00.
_NUMBER_CHARS = re.compile(r"^\(?\+?[0-9 ().\-/]+$")
# Alphanumeric senders: letters, digits, space and a few marks every network carries.
_SENDER_ALNUM = re.compile(r"^[A-Za-z0-9 .\-_&]+$")
_SENDER_NUMERIC = re.compile(r"^\+?[0-9]{3,15}$")
MAX_IDEMPOTENCY_KEY = 200
MAX_URL = 2000

# Every character `str.strip()` removes (str.isspace), spelled as a regular-expression
# class body with explicit escapes only, so Python's `re`, ECMA-262 (JSON Schema) and
# Rust's regex read it alike: the OpenAPI document's patterns say "blank" exactly as
# the checks below mean it.
WHITESPACE_CLASS = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A string holding at least one character that is not blank, and no NUL.
NOT_BLANK_PATTERN = rf"^[^\x00]*[^{WHITESPACE_CLASS}\x00][^\x00]*$"


def _encodable(value: str, field: str) -> str:
    """`value`, or InvalidMessage when it holds an unpaired surrogate or a NUL character:
    neither is storable (a PostgreSQL text column refuses NUL)."""
    if "\x00" in value:
        raise InvalidMessage(field, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage(field, "is not valid Unicode (unpaired surrogate)") from None
    return value


def normalise_number(value: object, field: str = "to") -> str:
    """International digits without "+" (243851234567), or InvalidMessage."""
    return _parse_number(value, field)[0]


def _parse_number(value: object, field: str) -> tuple[str, phonenumbers.PhoneNumber]:
    """`normalise_number`'s digits and the parsed number (parsed once per check)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InvalidMessage(field, "must be a phone number as a string")
    if isinstance(value, int) and abs(value) >= 10**20:  # str() of a huge int raises
        raise InvalidMessage(field, "is not a possible number (wrong length)")
    raw = str(value).strip()
    if not raw:
        raise InvalidMessage(field, "is empty; give an international number like 243851234567")
    if not _NUMBER_CHARS.match(raw):
        raise InvalidMessage(
            field, f"{raw!r} has characters a phone number cannot have (digits, +, spaces only)"
        )
    digits = re.sub(r"[^0-9]", "", raw)
    if raw.startswith("00"):
        digits = digits[2:]
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        raise InvalidMessage(
            field, f"{raw!r} is not an international number (country code first)"
        ) from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidMessage(field, f"{raw!r} is not a possible number (wrong length)")
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidMessage(field, f"{raw!r} is not a valid number in its country's plan")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:], parsed


_SPECIAL_TYPES = {
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
    phonenumbers.PhoneNumberType.TOLL_FREE: "a freephone number",
}
NON_GEOGRAPHIC = "001"  # phonenumbers' region of +800, +808, +870, +881, +882, +883, +979...


def destination_refusal(
    number: str,
    allowed: frozenset[int],
    allow_special: bool,
    parsed: phonenumbers.PhoneNumber | None = None,
) -> str | None:
    """Why smsq will not send to `number` (normalised digits), or None.

    `allowed`: calling codes (empty: all). Premium-rate, shared-cost, freephone and
    non-geographic numbers (satellite, international networks) cost the sender or
    reach no person: refused unless `allow_special`. `parsed`: `number` already parsed."""
    parsed = parsed or phonenumbers.parse("+" + number, None)
    if allowed and parsed.country_code not in allowed:
        codes = ", ".join(str(c) for c in sorted(allowed))
        code = parsed.country_code
        return f"{number} is in calling code {code}; allowed: {codes} (SMSQ_ALLOWED_COUNTRIES)"
    if allow_special:
        return None
    kind = _SPECIAL_TYPES.get(phonenumbers.number_type(parsed))
    if kind is None and phonenumbers.region_code_for_number(parsed) == NON_GEOGRAPHIC:
        kind = "a non-geographic number (satellite, international network or service)"
    if kind is not None:
        return f"{number} is {kind}; refused unless SMSQ_ALLOW_SPECIAL_NUMBERS=true"
    return None


def check_destination(value: object, field: str = "to") -> str:
    """`normalise_number`, then the deployment's destination policy (countries, kinds)."""
    number, parsed = _parse_number(value, field)
    settings = get_settings()
    refusal = destination_refusal(
        number, settings.allowed_calling_codes, settings.allow_special_numbers, parsed
    )
    if refusal is not None:
        raise InvalidMessage(field, refusal)
    return number


def check_provider(value: object, field: str = "provider") -> str:
    if not isinstance(value, str) or value.strip().lower() not in provider_names():
        raise InvalidMessage(
            field, f"unknown provider {value!r}; known: {', '.join(provider_names())}"
        )
    return value.strip().lower()


def check_text(value: object, provider: str, field: str = "text") -> TextInfo:
    if not isinstance(value, str):
        raise InvalidMessage(field, "must be a string")
    if not value.strip():
        raise InvalidMessage(field, "is empty")
    if "\x00" in value:
        raise InvalidMessage(field, "contains a NUL character")
    _encodable(value, field)
    limits = limits_for(provider)
    if len(value) > limits.max_text:
        raise InvalidMessage(
            field, f"has {len(value)} characters; {provider} takes at most {limits.max_text}"
        )
    info = analyse(value)
    if info.segments > limits.max_segments:
        raise InvalidMessage(
            field,
            f"needs {info.segments} {info.encoding} parts; {provider} takes at most "
            f"{limits.max_segments}",
        )
    return info


def check_sender(value: object, provider: str, field: str = "sender") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(field, "must be a string")
    sender = value.strip()
    if not sender:
        raise InvalidMessage(field, "is empty; leave it out to use the provider's default")
    if _SENDER_NUMERIC.match(sender):
        return sender
    limit = limits_for(provider).max_sender
    if len(sender) > limit:
        raise InvalidMessage(field, f"{sender!r} is longer than {limit} characters")
    if not _SENDER_ALNUM.match(sender):
        raise InvalidMessage(
            field,
            f"{sender!r} has characters networks refuse (use letters, digits, space . - _ &)",
        )
    if sender.isdigit() is False and not any(ch.isalpha() for ch in sender):
        raise InvalidMessage(field, f"{sender!r} needs at least one letter")
    return sender


def check_send_at(value: object, field: str = "send_at") -> datetime | None:
    """An aware or naive-UTC datetime (or ISO 8601 text) in the future, as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidMessage(field, f"{value!r} is not an ISO 8601 date and time") from None
    if not isinstance(value, datetime):
        raise InvalidMessage(field, "must be a datetime")
    try:
        when = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:  # 9999-12-31T23:59-05:00 is past datetime.max in UTC
        raise InvalidMessage(field, f"{value.isoformat()} is out of range") from None
    if when <= datetime.now(UTC):
        raise InvalidMessage(field, f"{value.isoformat()} is in the past")
    return when


def check_idempotency_key(value: object, field: str = "idempotency_key") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidMessage(field, "must be a non-empty string")
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise InvalidMessage(field, f"is longer than {MAX_IDEMPOTENCY_KEY} characters")
    return _encodable(value, field)


_OWNER = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def check_owner(value: object, field: str = "owner") -> str:
    """'' for no owner (Python calls), else a key name: letters, digits, `_ . -`."""
    if value is None:
        return ""
    if not isinstance(value, str) or not _OWNER.match(value):
        raise InvalidMessage(field, "must be 1-100 letters, digits, '_', '.' or '-'")
    return value


def check_url(value: object, field: str = "callback_url") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value.strip()):
        raise InvalidMessage(field, "must be an http:// or https:// URL")
    if len(value) > MAX_URL:
        raise InvalidMessage(field, f"is longer than {MAX_URL} characters")
    return _encodable(value.strip(), field)


def check_callback_url(value: object, field: str = "callback_url") -> str | None:
    """An http(s) URL that does not aim inside (see producer.callback_policy)."""
    url = check_url(value, field)
    if url is None:
        return None
    refusal = callback_policy.url_refusal(url, get_settings().callback_allow_private)
    if refusal is not None:
        raise InvalidMessage(field, refusal)
    return url
