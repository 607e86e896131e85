"""KING SMS PRO (Togo): its spec here, its adapter and simulator beside it.

API document: tests/fixtures/kingsms (KING SMS PRO's API).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from producer.limits import ProviderLimits
from producer.settings import ProviderSettings
from worker.gateways.spec import GatewaySpec, ReportQuery


class KingSmsSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="SMSQ_KINGSMS_", env_file=".env", extra="ignore")
    name: ClassVar[str] = "kingsms"
    secret_fields: ClassVar[tuple[str, ...]] = ("api_key", "client_id")
    base_url: str = "https://edok-api.kingsmspro.org/api/v1"
    api_key: SecretStr | None = None
    client_id: SecretStr | None = None


SPEC = GatewaySpec(
    name="kingsms",
    title="KING SMS PRO",
    # Sender at most 11 characters; text or flash.
    limits=ProviderLimits(
        max_text=765,
        max_segments=5,
        max_batch=1,
        max_status_batch=1,
        supports_push=True,
        supports_flash=True,
    ),
    settings=KingSmsSettings,
    adapter="worker.gateways.kingsms.adapter:KingSmsAdapter",
    simulator="worker.gateways.kingsms.simulator:KingSmsSim",
    sandbox_credentials={"api_key": "sandbox-kingsms-apikey", "client_id": "1"},
    per_message_dlr_url=True,
    report_query=ReportQuery.DATE_RANGE,
    sample_number="2289044367",
)
