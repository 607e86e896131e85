"""SMSClub (Ukraine): its spec here, its adapter and simulator beside it.

API document: tests/fixtures/smsclub (SMSClub's JSON API).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from producer.limits import ProviderLimits
from producer.settings import ProviderSettings
from worker.gateways.spec import GatewaySpec


class SmsClubSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="SMSQ_SMSCLUB_", env_file=".env", extra="ignore")
    name: ClassVar[str] = "smsclub"
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)
    base_url: str = "https://im.smsclub.mobi"
    token: SecretStr | None = None


SPEC = GatewaySpec(
    name="smsclub",
    title="SMSClub",
    # 100 numbers per send, 100 ids per status request.
    limits=ProviderLimits(max_text=1000, max_segments=10, max_batch=100, max_status_batch=100),
    settings=SmsClubSettings,
    adapter="worker.gateways.smsclub.adapter:SmsClubAdapter",
    simulator="worker.gateways.smsclub.simulator:SmsClubSim",
    sandbox_credentials={"token": "sandbox-smsclub-token"},
    sender_list=True,
    sample_number="38098936113",
)
