"""Small readers the adapters share for what gateways send back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def lower_keys(data: Any) -> dict[str, Any]:
    """A JSON object's keys trimmed and lower-cased (gateways vary their case); {} for
    anything that is not an object."""
    return {str(k).strip().lower(): v for k, v in data.items()} if isinstance(data, dict) else {}


def digits(number: Any) -> str:
    """A number's digits only, to compare numbers a gateway wrote with "+" or spaces."""
    return "".join(ch for ch in str(number) if ch.isdigit())


def naive_utc(when: datetime) -> datetime:
    """Aware or naive-UTC `when` as naive UTC, the form report dates are read in."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
