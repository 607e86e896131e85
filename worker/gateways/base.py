"""The common base of every gateway adapter.

Modelled on django-anymail's backends: the base owns the fixed sequence
(build request -> send over httpx -> map errors -> parse), and each provider
module fills in the hooks. An adapter is usable on its own, without Celery or
the store: build it with credentials and call `send`, `fetch_status`,
`fetch_balance`.

Errors split in two, in one place (`_request` and each adapter's
`_check_*`): `RetryableProviderError` (timeouts, connection errors, 5xx, 429
with `retry_after`) and `PermanentProviderError` (auth, invalid number, no
credit). Exception text never contains a secret or a URL with one.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import httpx

from producer.limits import ProviderLimits, limits_for
from producer.settings import ProviderSettings
from producer.status import Status

# httpx logs every request line at INFO, query string included (1601SMS would
# put its password there): keep it quiet.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


class ProviderError(Exception):
    """A gateway call did not succeed. `code` is the gateway's own code if any."""

    def __init__(self, message: str, *, code: str | None = None, raw: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.raw = raw


class RetryableProviderError(ProviderError):
    """Try again later: timeout, connection error, 5xx, 429, maintenance."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        raw: Any = None,
        retry_after: float | None = None,
        throttled: bool = False,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message, code=code, raw=raw)
        self.retry_after = retry_after
        self.throttled = throttled  # 429: back-pressure, not a failed attempt
        # The request reached the gateway but its answer was lost (read timeout,
        # connection dropped): a send may have gone out, so it is uncertain.
        self.maybe_sent = maybe_sent


class PermanentProviderError(ProviderError):
    """Never retry: bad credentials, invalid number, no credit, refused content."""


@dataclass(frozen=True)
class OutgoingMessage:
    """One message as an adapter sends it. `ref` is smsq's message id."""

    ref: str
    to: str  # international digits, no "+"
    text: str
    sender: str | None = None
    encoding: str = "gsm7"
    segments: int = 1
    flash: bool = False
    dlr_url: str | None = None  # where the gateway should push the delivery report
    send_at: datetime | None = None  # for gateways that schedule in their outbox


@dataclass
class SendResult:
    """The gateway's answer for one message of a send request."""

    ref: str
    status: Status  # SENT when accepted, REJECTED/FAILED when refused
    provider_message_id: str | None = None
    error: str | None = None
    raw: Any = None
    duplicate: bool = False  # the gateway says it already has this message

    @property
    def accepted(self) -> bool:
        return self.status in (Status.SENT, Status.DELIVERED)


@dataclass
class StatusReport:
    """A delivery status as the gateway reported it, normalised."""

    provider_message_id: str
    status: Status | None  # None: the raw status says nothing new (unknown or pending)
    raw_status: str
    raw: Any = None
    occurred_at: datetime | None = None
    ref: str | None = None  # our message id, when the gateway echoes it back
    to: str | None = None
    part: int | None = None  # 1-based part of a long message, when reported per part
    parts: int | None = None  # how many parts the gateway counts, if it says


LookupState = Literal["found", "not_found", "unknown"]


@dataclass
class LookupResult:
    """Does the gateway have a message we may or may not have sent? (`find_sent`)

    `found`: yes, with its gateway id when known; `not_found`: the gateway's
    record is complete and the message is not in it (a resend is safe);
    `unknown`: the gateway cannot tell, so smsq must not resend.
    """

    state: LookupState
    provider_message_id: str | None = None
    detail: str = ""
    raw: Any = None


@dataclass
class Balance:
    amount: float
    unit: str  # "credits", "UAH", "XOF", ...
    expires_at: datetime | None = None
    active: bool | None = None  # None: the gateway does not say
    raw: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderAdapter(ABC):
    """Base of every adapter. Subclasses set `name` and fill in the hooks."""

    name: ClassVar[str]
    status_map: ClassVar[Mapping[str, Status | None]] = {}
    # Seconds within which the gateway refuses the same message again as a
    # duplicate (SMSClub: 453 within 2 minutes): a resend in that time is safe.
    duplicate_window_seconds: ClassVar[float | None] = None

    def __init__(
        self,
        *,
        base_url: str,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None

    # -- declared limits -------------------------------------------------
    @classmethod
    def limits(cls) -> ProviderLimits:
        return limits_for(cls.name)

    @classmethod
    @abstractmethod
    def from_settings(
        cls, settings: ProviderSettings, client: httpx.Client | None = None
    ) -> ProviderAdapter:
        """An adapter from the gateway's SMSQ_<P>_* settings (`worker.gateways.registry`)."""

    @property
    def max_batch(self) -> int:
        return self.limits().max_batch

    @property
    def max_status_batch(self) -> int:
        return self.limits().max_status_batch

    @property
    def max_text(self) -> int:
        return self.limits().max_text

    @property
    def supports_push(self) -> bool:
        return self.limits().supports_push

    # -- the public operations ------------------------------------------
    @abstractmethod
    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send up to `max_batch` messages; one result per message, same order."""

    @abstractmethod
    def fetch_status(self, provider_ids: Sequence[str]) -> list[StatusReport]:
        """Ask the delivery status of up to `max_status_batch` messages."""

    @abstractmethod
    def fetch_balance(self) -> Balance:
        """Remaining credit, its unit, expiry and account state where reported."""

    def find_sent(self, ref: str, to: str, text: str, since: datetime) -> LookupResult:
        """Look for a message sent at or after `since` (uncertain sends), by our `ref`
        or by destination, text and time, where the gateway's API allows it.

        The default: the gateway offers no such lookup, so the answer is `unknown`.
        """
        return LookupResult("unknown", detail=f"{self.name} offers no lookup of a sent message")

    def parse_callback(self, params: Mapping[str, str], body: bytes = b"") -> list[StatusReport]:
        """Turn a delivery callback (query params and body) into reports."""
        raise PermanentProviderError(f"{self.name} sends no delivery callbacks")

    def map_status(self, raw: str | None) -> Status | None:
        """Map a raw status code, any letter case, to smsq's vocabulary."""
        if raw is None:
            return None
        return self.status_map.get(str(raw).strip().upper())

    # -- plumbing --------------------------------------------------------
    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ProviderAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one HTTP request; map transport errors, 5xx and 429 to retryable.

        Other 4xx answers are returned for the adapter to read, since several
        gateways put their own error code in the body.
        """
        what = f"{self.name} {method} {path}"
        try:
            response = self._client.request(method, self._url(path), **kwargs)
        except (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError) as exc:
            # Never reached the gateway: safe to send again.
            raise RetryableProviderError(
                f"{what}: could not connect ({type(exc).__name__})"
            ) from exc
        except httpx.TimeoutException as exc:
            raise RetryableProviderError(
                f"{what}: timed out waiting for the answer", maybe_sent=True
            ) from exc
        except httpx.TransportError as exc:
            raise RetryableProviderError(
                f"{what}: connection lost ({type(exc).__name__})", maybe_sent=True
            ) from exc
        try:
            response.text  # noqa: B018 - a charset no codec decodes with (hex, rot13) raises here
        except Exception:
            response.encoding = "utf-8"  # decoded with replacement characters instead
        if response.status_code == 429:
            raise RetryableProviderError(
                f"{what}: HTTP 429 too many requests",
                code="429",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                throttled=True,
            )
        if response.status_code >= 500:
            raise RetryableProviderError(
                f"{what}: HTTP {response.status_code}",
                code=str(response.status_code),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response

    def _secrets(self) -> tuple[str, ...]:
        """The credentials this adapter holds; `_scrub` keeps them out of errors and `raw`."""
        return ()

    def _scrub(self, text: str) -> str:
        """`text` with every credential (4 characters or more) replaced by `***`."""
        for secret in self._secrets():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _scrub_raw(self, data: Any) -> Any:
        """A copy of a decoded answer with credentials scrubbed from every string in it."""
        if isinstance(data, dict):
            return {k: self._scrub_raw(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self._scrub_raw(v) for v in data]
        return self._scrub(data) if isinstance(data, str) else data

    def _json(self, response: httpx.Response) -> Any:
        """Decode a JSON body or raise a retryable error (an HTML error page, say)."""
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            snippet = self._scrub(response.text[:80].replace("\n", " ")) if response.content else ""
            raise RetryableProviderError(
                f"{self.name}: answer is not JSON (HTTP {response.status_code}): {snippet!r}"
            ) from exc


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return min(seconds, 24 * 3600.0)


def to_float(value: Any) -> float | None:
    """Numbers arrive as numbers or strings ("8111.1700", " 645 "); tolerate both."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    try:
        number = (
            float(value)
            if isinstance(value, int | float)
            else float(str(value).strip().replace(",", "."))
        )
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
