"""Keccel (DR Congo): its spec here, its adapter and simulator beside it.

API document: tests/fixtures/keccel (from Keccel's "SMS API v2").
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from producer.limits import ProviderLimits
from producer.settings import ProviderSettings
from producer.status import Status
from worker.gateways.spec import GatewaySpec


class KeccelSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="SMSQ_KECCEL_", env_file=".env", extra="ignore")
    name: ClassVar[str] = "keccel"
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)
    base_url: str = "https://api.keccel.com/sms/v2"
    token: SecretStr | None = None


SPEC = GatewaySpec(
    name="keccel",
    title="Keccel",
    # Keccel documents no maximum; 5 concatenated GSM parts is what DRC networks carry.
    limits=ProviderLimits(
        max_text=765, max_segments=5, max_batch=1, max_status_batch=1, supports_push=True
    ),
    settings=KeccelSettings,
    adapter="worker.gateways.keccel.adapter:KeccelAdapter",
    simulator="worker.gateways.keccel.simulator:KeccelSim",
    sandbox_credentials={"token": "sandbox-keccel-token"},
    sample_number="24385123456",
    expired_reported_as=Status.UNDELIVERED,  # its report says FAILED for both
)
