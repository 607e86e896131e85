"""The one warning at start for a gateway whose credentials would go over plain http."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.unit.conftest import isolate, restore
from worker.gateways.keccel import KeccelSettings
from worker.gateways.sms1601 import Sms1601Settings
from worker.gateways.smsclub import SmsClubSettings
from worker.ops import startup_checks
from worker.ops.startup_checks import plaintext_gateways


def test_only_configured_gateways_over_plain_http_to_another_host() -> None:
    configured = {
        "sms1601": Sms1601Settings(username="u", password="p"),  # default http://217.19...
        "keccel": KeccelSettings(token="t"),  # https by default
        "smsclub": SmsClubSettings(base_url="http://im.smsclub.mobi"),  # no credentials
    }
    assert plaintext_gateways(configured) == ["sms1601"]
    local = {
        "sms1601": Sms1601Settings(username="u", password="p", base_url="http://127.0.0.1:8025/x"),
        "keccel": KeccelSettings(token="t", base_url="HTTP://localhost:9/k"),
    }
    assert plaintext_gateways(local) == []


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_SMS1601_USERNAME="u", SMSQ_SMS1601_PASSWORD="pw-0815")
    monkeypatch.setattr(startup_checks, "_warned", False)
    yield monkeypatch
    restore(monkeypatch)


def test_warns_once_per_process_without_the_secret(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="smsq.startup"):
        assert startup_checks.warn_once() == ["sms1601"]
        assert startup_checks.warn_once() == []
    (record,) = caplog.records
    assert "SMSQ_SMS1601_BASE_URL" in record.getMessage()
    assert "pw-0815" not in record.getMessage()
