"""Runs last in the package: no configured secret appears in any process's log."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from producer.settings import provider_names
from worker.gateways.sandbox.base import sandbox_credentials

pytestmark = pytest.mark.integration


def test_no_secret_in_any_log_line(stack) -> None:  # type: ignore[no-untyped-def]
    logs = sorted((stack.data_dir / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"worker", "beat", "web"}
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert "smsq.send" in text  # the worker did log its tasks
    secrets = [
        v
        for creds in map(sandbox_credentials, provider_names())
        for v in creds.values()
        if len(v) > 3
    ]
    broker_password = urlsplit(stack.exported["SMSQ_BROKER_URL"]).password
    assert broker_password  # the embedded Redis has a password of its own
    secrets.append(broker_password)
    leaked = [s for s in secrets if s in text]
    assert leaked == []
