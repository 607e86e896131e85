"""TinySMS's adapter: the smallest complete one (send, status, balance)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from producer.settings import ProviderSettings
from producer.status import Status
from worker.gateways.base import (
    Balance,
    OutgoingMessage,
    PermanentProviderError,
    ProviderAdapter,
    SendResult,
    StatusReport,
    to_float,
)


class TinySmsAdapter(ProviderAdapter):
    name = "tinysms"
    status_map = {"QUEUED": None, "DELIVERED": Status.DELIVERED, "FAILED": Status.UNDELIVERED}

    def __init__(self, *, key: str, base_url: str, timeout: float = 10.0, client=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(base_url=base_url, timeout=timeout, client=client)
        self._key = key

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, client: httpx.Client | None = None
    ) -> TinySmsAdapter:
        return cls(
            key=settings.secret("key"),
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            client=client,
        )

    def _secrets(self) -> tuple[str, ...]:
        return (self._key,)

    def _checked(self, response: httpx.Response) -> dict[str, object]:
        if response.status_code == 401:
            raise PermanentProviderError("tinysms: wrong key", code="401")
        data = self._json(response)
        if response.status_code >= 400 or not isinstance(data, dict):
            raise PermanentProviderError(f"tinysms: HTTP {response.status_code}", raw=data)
        return data

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        results = []
        for msg in batch:
            body = {"key": self._key, "to": msg.to, "text": msg.text, "ref": msg.ref}
            data = self._checked(self._request("POST", "/send", json=body))
            results.append(SendResult(msg.ref, Status.SENT, str(data["id"]), raw=data))
        return results

    def fetch_status(self, provider_ids: Sequence[str]) -> list[StatusReport]:
        reports = []
        for pid in provider_ids:
            data = self._checked(
                self._request("GET", "/status", params={"key": self._key, "id": pid})
            )
            raw = str(data.get("state", ""))
            reports.append(StatusReport(pid, self.map_status(raw), raw, raw=data))
        return reports

    def fetch_balance(self) -> Balance:
        data = self._checked(self._request("GET", "/balance", params={"key": self._key}))
        amount = to_float(data.get("credits"))
        if amount is None:
            raise PermanentProviderError("tinysms: no balance in the answer", raw=data)
        return Balance(amount=amount, unit="credits", raw=data)
