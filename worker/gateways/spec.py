"""What a gateway declares about itself, as data: the one description every other
part of smsq reads (the producer's checks, the send path, polls, the CLI, the
sandbox and the local stack), so that none of them names a gateway.

A spec imports no adapter or simulator code: the producer reads specs in web
apps, and the adapter (`httpx`) and simulator (`starlette`) are imported only
where a worker or the sandbox first needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from producer.limits import ProviderLimits
from producer.settings import ProviderSettings
from producer.status import Status

if TYPE_CHECKING:
    from datetime import date

    from worker.gateways.base import ProviderAdapter, StatusReport
    from worker.gateways.sandbox.base import ProviderSim


class ReportQuery(StrEnum):
    """How a gateway's past delivery reports can be read (`smsq report`)."""

    NONE = "none"
    RECENT = "recent"  # the last N reports: `fetch_report(count)`
    DATE_RANGE = "date_range"  # reports between two days: `fetch_reports(start, end)`


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway: its name, limits, settings (credentials among them), where its
    adapter and simulator live, and the abilities the rest of smsq asks about."""

    name: str
    title: str
    limits: ProviderLimits
    settings: type[ProviderSettings]
    adapter: str  # "package.module:Class"
    simulator: str | None = None  # "package.module:Class", served by `smsq sandbox`
    # What the simulator accepts, by settings field (the sandbox's "credentials").
    sandbox_credentials: Mapping[str, str] = field(default_factory=dict)
    # The gateway takes a delivery-report URL with each message (else: per account).
    per_message_dlr_url: bool = False
    report_query: ReportQuery = ReportQuery.NONE
    sender_list: bool = False  # `smsq senders` can list the account's senders
    # The boolean setting that, when on, hands scheduled messages to the gateway's
    # own outbox (and `smsq cancel` removes them from it); None: no outbox.
    outbox_setting: str | None = None
    # A valid number of the gateway's country but its last digit (demos, examples).
    sample_number: str = ""
    # The smsq status the simulator's "expired" outcome ends in, as the gateway reports it.
    expired_reported_as: Status = Status.EXPIRED

    def schedules_in_outbox(self, settings: ProviderSettings) -> bool:
        return bool(self.outbox_setting and getattr(settings, self.outbox_setting, False))

    def credential_env(self) -> dict[str, str]:
        """Settings field -> environment variable, for each credential."""
        prefix = str(self.settings.model_config.get("env_prefix", ""))
        return {f: f"{prefix}{f}".upper() for f in self.settings.secret_fields}

    def adapter_class(self) -> type[ProviderAdapter]:
        return _load(self.adapter)

    def simulator_class(self) -> type[ProviderSim] | None:
        return _load(self.simulator) if self.simulator else None


def _load(where: str) -> Any:
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


# Optional abilities of an adapter, checked with isinstance() where they are used.


@runtime_checkable
class CancelsScheduled(Protocol):
    def cancel_scheduled(self, provider_message_id: str) -> bool: ...


@runtime_checkable
class ListsSenders(Protocol):
    def fetch_senders(self) -> list[str]: ...


@runtime_checkable
class ReportsRecent(Protocol):
    def fetch_report(self, count: int) -> list[StatusReport]: ...


@runtime_checkable
class ReportsByDate(Protocol):
    def fetch_reports(self, start: date, end: date) -> list[StatusReport]: ...
