"""TinySMS: a made-up fifth gateway, registered through the registry alone.

It proves that a gateway lives in one place: this package declares its spec
(limits, settings, credentials, abilities), its adapter and its simulator, and
`SMSQ_GATEWAY_PLUGINS=tests.fifth_gateway` makes every process of a stack know
it. Its API: `POST /send` {key, to, text, ref} -> {id}; `GET /status?key&id` ->
{id, state}; `GET /balance?key` -> {credits}; a wrong key is HTTP 401.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from producer.limits import ProviderLimits
from producer.settings import ProviderSettings
from worker.gateways.spec import GatewaySpec


class TinySmsSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="SMSQ_TINYSMS_", env_file=".env", extra="ignore")
    name: ClassVar[str] = "tinysms"
    secret_fields: ClassVar[tuple[str, ...]] = ("key",)
    base_url: str = "https://tinysms.invalid/api"
    key: SecretStr | None = None


SPEC = GatewaySpec(
    name="tinysms",
    title="TinySMS",
    limits=ProviderLimits(max_text=160, max_segments=1, max_batch=1, max_status_batch=1),
    settings=TinySmsSettings,
    adapter="tests.fifth_gateway.adapter:TinySmsAdapter",
    simulator="tests.fifth_gateway.simulator:TinySmsSim",
    sandbox_credentials={"key": "sandbox-tinysms-key"},
    sample_number="4915123456",
)
