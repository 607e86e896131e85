"""What the HTTP API takes and answers, as its OpenAPI document says it.

The request models carry every rule JSON Schema can state exactly as the
producer checks it (lengths, patterns, enums, ranges); the rules it cannot
state (a number valid in its country's plan, a text that fits the chosen
gateway, a callback host that is not inside) are named by a `format` and
spelled out in the field's description. Values that come from the settings
(`to`'s `maxItems` from SMSQ_HTTP_MAX_BULK, the configured providers) are
written into the document when it is served (`runtime_schema`), so it says what
this deployment does. `schemathesis run --checks all` holds the API to it
(tests/integration/test_schemathesis.py).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, BeforeValidator, Field, StrictBool, field_validator

from producer.api import MAX_BULK_IDEMPOTENCY_KEY
from producer.limits import limits_for
from producer.settings import Settings
from producer.suppressions import MAX_REASON, REASON_PATTERN
from producer.traffic import MAX_TTL
from producer.validation import (
    MAX_IDEMPOTENCY_KEY,
    MAX_URL,
    NOT_BLANK_PATTERN,
    WHITESPACE_CLASS,
)

PHONE_FORMAT = "phone-number"
CALLBACK_FORMAT = "callback-url"
SEND_AT_FORMAT = "future-date-time"

PHONE_NUMBER = {
    "type": "string",
    "format": PHONE_FORMAT,
    "minLength": 1,
    "description": (
        "An international number, country code first (`243851234567`, `+243 851 234 567`, "
        "`00243...`; spaces, dots, dashes, slashes and brackets allowed), valid in its "
        "country's numbering plan, in SMSQ_ALLOWED_COUNTRIES when set, and not premium-rate, "
        "shared-cost, freephone or non-geographic unless SMSQ_ALLOW_SPECIAL_NUMBERS=true."
    ),
}
PhoneNumber = Annotated[str, Field(json_schema_extra=PHONE_NUMBER)]

# A sender, as producer.validation.check_sender takes it (surrounding blanks are
# stripped first): 3-15 digits with an optional "+", or at most 11 letters, digits,
# spaces and `. - _ &`, all digits or with at least one letter.
_WS = f"[{WHITESPACE_CLASS}]*"
_ALNUM_EDGE = r"[A-Za-z0-9.\-_&]"
SENDER_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": rf"^{_WS}\+?[0-9]{{3,15}}{_WS}$"},
        {
            "type": "string",
            "allOf": [
                {"pattern": rf"^{_WS}{_ALNUM_EDGE}([A-Za-z0-9 .\-_&]{{0,9}}{_ALNUM_EDGE})?{_WS}$"},
                {"pattern": rf"[A-Za-z]|^{_WS}[0-9]+{_WS}$"},
            ],
        },
        {"type": "null"},
    ],
    "description": (
        "Sender id: 3-15 digits (optionally after `+`), or 1-11 letters, digits, spaces "
        "and `. - _ &` (all digits or at least one letter); unset: the gateway's default."
    ),
}


IdempotencyKey = Annotated[
    str,
    Field(
        json_schema_extra={
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY,
            "pattern": NOT_BLANK_PATTERN,
        }
    ),
]
SendAt = Annotated[str, Field(json_schema_extra={"format": SEND_AT_FORMAT})]
CallbackUrl = Annotated[
    str, Field(json_schema_extra={"format": CALLBACK_FORMAT, "maxLength": MAX_URL})
]
Reason = Annotated[str, Field(max_length=MAX_REASON, json_schema_extra={"pattern": REASON_PATTERN})]


def _whole_number(value: object) -> object:
    """A JSON integer, as JSON Schema reads one: 60 and 60.0, never "60" or true."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


def _text_description() -> str:
    from producer.settings import provider_names

    limits = ", ".join(
        f"{name} {limits_for(name).max_text} characters / {limits_for(name).max_segments} parts"
        for name in provider_names()
    )
    return (
        "Not blank, no NUL; at most the chosen gateway's characters and parts (GSM 03.38 "
        f"or UCS-2, counted as the gateway counts them): {limits}."
    )


class MessageIn(BaseModel):
    """A message (or a bulk send when `to` is a list); the same rules as `send_sms`."""

    to: PhoneNumber | Annotated[list[PhoneNumber], Field(min_length=1)] = Field(
        description="International number, or a list of them for a bulk send "
        "(at most SMSQ_HTTP_MAX_BULK)"
    )
    text: str = Field(
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
        description="The text (see the gateway limits)",
    )
    provider: str | None = Field(
        default=None, description="A configured gateway; unset: SMSQ_ROUTES or the default"
    )
    sender: str | None = Field(default=None, json_schema_extra=SENDER_SCHEMA)
    idempotency_key: IdempotencyKey | None = Field(
        default=None,
        description=(
            f"The same key (per API key name) sends once; at most {MAX_IDEMPOTENCY_KEY} "
            f"characters, {MAX_BULK_IDEMPOTENCY_KEY} for a list (`<key>:<index>` is stored)"
        ),
    )
    send_at: SendAt | None = Field(
        default=None,
        description="ISO 8601 date and time in the future (UTC when it has no offset)",
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description=(
            "http(s) URL for status callbacks: no `user:password@`, a valid port, and a host "
            "that is not (and does not resolve to) a loopback, private, link-local, CGNAT, "
            "unique-local, multicast or unspecified address unless "
            "SMSQ_CALLBACK_ALLOW_PRIVATE=true"
        ),
    )
    flash: StrictBool = Field(
        default=False, description="A flash message: only on a gateway that sends them"
    )
    priority: Literal["high", "normal", "bulk"] | None = Field(
        default=None, description="high, normal (one number) or bulk (a list: the default)"
    )
    ttl: Annotated[int, Field(ge=1, le=MAX_TTL), BeforeValidator(_whole_number)] | None = Field(
        default=None, description="seconds from when it is due; not sent by then: expired"
    )
    quiet_hours: StrictBool = Field(default=True, description="false: ignore SMSQ_QUIET_HOURS")

    @field_validator("provider")
    @classmethod
    def _configured_provider(cls, value: str | None) -> str | None:
        """Exactly a configured gateway's name, as the document's enum lists them."""
        from producer.settings import get_settings

        known = get_settings().configured_providers()
        if value is not None and value not in known:
            raise ValueError(f"must be one of: {', '.join(known)} (the configured gateways)")
        return value


class SuppressionIn(BaseModel):
    number: PhoneNumber
    reason: Reason | None = Field(
        default=None,
        description=(
            "No control characters (C0, C1, DEL, line or paragraph separators, "
            "bidirectional controls); blanks around it are dropped"
        ),
    )
    scope: Literal["all", "bulk"] = Field(
        default="all", description="`all`: every message; `bulk`: bulk-priority messages only"
    )


class Problem(BaseModel):
    """Every error answer: `error` says what is wrong, in words."""

    error: str


class InvalidInput(BaseModel):
    """422: the field and the rule it breaks; the input is never echoed."""

    error: str = Field(description="`<field>: <rule>`")
    field: str
    rule: str | None = None
    errors: list[dict[str, str]] | None = None


class TooMany(BaseModel):
    """429: a limit refused the request; nothing was stored."""

    error: str
    retry_after: int = Field(description="seconds, as in the Retry-After header")
    field: str | None = None
    numbers: list[str] | None = Field(
        default=None, description="the numbers past SMSQ_RECIPIENT_LIMIT"
    )


class Created(BaseModel):
    id: str


class CreatedBulk(BaseModel):
    ids: list[str] = Field(description="one id per number, in the order of `to`")


class MessageOut(BaseModel):
    id: str
    status: str
    owner: str | None
    provider: str
    provider_message_id: str | None
    to: str
    text: str
    sender: str | None
    encoding: str
    segments: int
    attempts: int
    error: str | None
    note: str | None
    created_at: str
    updated_at: str
    send_at: str | None
    sent_at: str | None
    priority: str
    ttl: int | None
    expires_at: str | None


class SuppressionOut(BaseModel):
    number: str
    scope: Literal["all", "bulk"]
    reason: str | None
    added_by: str | None
    created_at: str


class SuppressionPage(BaseModel):
    suppressions: list[SuppressionOut]
    next: str | None = Field(description="`after` for the next page; null on the last")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str


RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 0}}
}


def _error(description: str, model: type[BaseModel] = Problem, **extra: Any) -> dict[str, Any]:
    return {"description": description, "model": model, **extra}


UNAUTHORIZED = _error("Missing or wrong API key (checked before the body is read)")
API_OFF = "the HTTP API is off (SMSQ_API_KEYS unset)"
UNAVAILABLE = _error(
    "The store, the broker or the limit counters cannot take it now: try again",
    headers=RETRY_AFTER,
)
TOO_LARGE = _error("The body is over SMSQ_MAX_BODY_BYTES")
INVALID = _error("A field breaks a rule (named, with the rule)", InvalidInput)

# The answers every /v1/ operation may give besides its own.
API_ERRORS: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    404: _error(f"Not found, or {API_OFF}"),
    422: INVALID,
    503: UNAVAILABLE,
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {**API_ERRORS, 413: TOO_LARGE}
CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    429: _error(
        "SMSQ_API_KEY_LIMIT or SMSQ_RECIPIENT_LIMIT refused it; nothing stored",
        TooMany,
        headers=RETRY_AFTER,
    ),
}

# The media type /metrics answers with (prometheus_client's), without its charset.
PROMETHEUS_TEXT = CONTENT_TYPE_LATEST.split("; charset")[0]
BEARER = "apiKey"


def runtime_schema(base: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`base` (FastAPI's document) with what this deployment's settings decide: the
    bearer scheme on every /v1/ operation, `to`'s maxItems, the provider enum and
    the bulk idempotency-key rule."""
    doc = copy.deepcopy(base)
    doc.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A key of SMSQ_API_KEYS (`Authorization: Bearer <key>`)",
    }
    for path, operations in doc.get("paths", {}).items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{BEARER: []}]
    schemas = doc["components"].get("schemas", {})
    message = schemas.get("MessageIn")
    if message is not None:
        _message_rules(message, settings)
    return doc


def _message_rules(message: dict[str, Any], settings: Settings) -> None:
    props = message["properties"]
    for option in props["to"].get("anyOf", []):
        if option.get("type") == "array":
            option["maxItems"] = settings.http_max_bulk
    providers = settings.configured_providers()
    props["provider"] = {
        "anyOf": [{"type": "string", "enum": providers}, {"type": "null"}],
        "description": props["provider"].get("description", ""),
    }
    props["text"]["description"] = _text_description()
    # A list stores `<key>:<index>` per number: its key must leave room for the index.
    message["if"] = {"properties": {"to": {"type": "array"}}, "required": ["to"]}
    message["then"] = {"properties": {"idempotency_key": {"maxLength": MAX_BULK_IDEMPOTENCY_KEY}}}
    flash = [p for p in providers if limits_for(p).supports_flash]
    default = _default_provider(settings, providers)
    allowed: list[Any] = list(flash) + ([None] if default in flash else [])
    # A flash message needs a gateway that sends them: one named, or the default one.
    message["allOf"] = [
        {
            "if": {"properties": {"flash": {"const": True}}, "required": ["flash"]},
            "then": {
                "properties": {"provider": {"enum": allowed}},
                **({} if None in allowed else {"required": ["provider"]}),
            },
        }
    ]


def _default_provider(settings: Settings, providers: list[str]) -> str | None:
    """The gateway a message without `provider` goes to when no route matches."""
    if settings.routes:
        return None  # it depends on the number: the document cannot say
    if settings.default_provider:
        return settings.default_provider.strip().lower()
    return providers[0] if providers else None
