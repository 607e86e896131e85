"""1601SMS (Netherlands): its spec here, its adapter and simulator beside it.

API document: tests/fixtures/sms1601 (the 1601SMS gateway's HTTP API).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from producer.limits import ProviderLimits
from producer.settings import ProviderSettings
from producer.status import Status
from worker.gateways.spec import GatewaySpec, ReportQuery


class Sms1601Settings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="SMSQ_SMS1601_", env_file=".env", extra="ignore")
    name: ClassVar[str] = "sms1601"
    secret_fields: ClassVar[tuple[str, ...]] = ("username", "password")
    base_url: str = "http://217.19.227.48/module"
    username: SecretStr | None = None
    password: SecretStr | None = None
    password_sha1: bool = False
    test_mode: bool = False
    # Hand messages with `send_at` to the gateway's outbox (`datum`) at once, instead of
    # holding them in smsq's store; `smsq cancel ID` then removes them from the outbox.
    outbox_scheduling: bool = False


SPEC = GatewaySpec(
    name="sms1601",
    title="1601SMS",
    # 160 characters, or up to 459 with type=long (3 parts of 153).
    limits=ProviderLimits(
        max_text=459,
        max_segments=3,
        max_batch=100,
        max_status_batch=1,
        max_sender=11,
        supports_push=True,
    ),
    settings=Sms1601Settings,
    adapter="worker.gateways.sms1601.adapter:Sms1601Adapter",
    simulator="worker.gateways.sms1601.simulator:Sms1601Sim",
    sandbox_credentials={"username": "sandbox", "password": "sandbox-1601-password"},
    report_query=ReportQuery.RECENT,
    outbox_setting="outbox_scheduling",
    sample_number="3161234567",
    expired_reported_as=Status.UNDELIVERED,  # its report says FAILED for both
)
