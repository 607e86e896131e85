"""Generators for the formats the HTTP API's OpenAPI document names but JSON Schema
cannot check (worker/edge/api_schema.py): schemathesis draws valid values of them
from here, and keeps fuzzing everything else from the document alone.

Loaded by `schemathesis run` through SCHEMATHESIS_HOOKS (test_schemathesis.py). Each
generator only yields values the producer accepts on every configured gateway; the
module checks that at import, so a generator that drifted from the rules fails loudly
instead of turning into schemathesis failures.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import phonenumbers
import schemathesis
from hypothesis import strategies as st

from producer import callback_policy
from producer.encoding import analyse
from producer.limits import limits_for
from producer.settings import provider_names
from producer.validation import destination_refusal, normalise_number

# Mobile numbers of a few countries (phonenumbers' own examples: valid by definition).
REGIONS = ("CD", "UA", "TG", "NL", "FR", "DE", "GB", "KE", "NG", "BR", "IN", "US")
NUMBERS = tuple(
    phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.MOBILE) for r in REGIONS
)


def _spellings(number: phonenumbers.PhoneNumber) -> list[str]:
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    spaced = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return [e164[1:], e164, "00" + e164[1:], spaced, f" {e164} "]


PHONES = tuple(s for n in NUMBERS for s in _spellings(n))
for _spelling in PHONES:
    assert destination_refusal(normalise_number(_spelling), frozenset(), False) is None, _spelling

# Literal addresses of the documentation ranges: public to smsq's policy, and no DNS.
HOSTS = ("192.0.2.10", "198.51.100.7", "203.0.113.5", "[2001:db8::5]")
CALLBACK = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(("http", "https")),
    st.sampled_from(HOSTS),
    st.sampled_from(("", ":8443", ":80")),
    st.from_regex(r"\A(/[a-zA-Z0-9_.~-]{0,12}){0,3}(\?[a-z]{1,5}=[a-z0-9]{0,8})?\Z"),
)
for _host in HOSTS:
    assert callback_policy.url_refusal(f"https://{_host}/x", allow_private=False) is None

FUTURE = st.builds(
    lambda seconds, spelled: spelled(datetime.now(UTC) + timedelta(seconds=seconds)),
    st.integers(min_value=3600, max_value=50 * 365 * 24 * 3600),
    st.sampled_from(
        (
            lambda t: t.isoformat(),
            lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            lambda t: t.replace(tzinfo=None).isoformat(timespec="seconds"),
        )
    ),
)

schemathesis.openapi.format("phone-number", st.sampled_from(PHONES))
schemathesis.openapi.format("callback-url", CALLBACK)
schemathesis.openapi.format("future-date-time", FUTURE)


@schemathesis.hook
def filter_body(ctx: schemathesis.HookContext, body: object) -> bool:
    """Leave out message bodies whose text is too long for the gateway it would go to.

    The one rule of POST /v1/messages that JSON Schema cannot state: a text's limit
    is its gateway's (characters and GSM 03.38 / UCS-2 parts), and without `provider`
    the gateway is the default one, the first configured (the fuzzed web process has
    no SMSQ_ROUTES). The document says so in `text`'s description."""
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return True
    provider = body.get("provider")
    gateway = provider if provider in provider_names() else provider_names()[0]
    limits = limits_for(str(gateway))
    text = body["text"]
    return len(text) <= limits.max_text and analyse(text).segments <= limits.max_segments
