"""Alert e-mail never sends the SMTP password without TLS unless told to, and speaks
implicit TLS (SMSQ_SMTP_SSL, port 465 by default). Real aiosmtpd servers on loopback:
one plain, one wrapped in TLS with a throw-away certificate the client trusts."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from producer.settings import Settings
from tests.alert_helpers import SmtpServer
from tests.tls_helpers import self_signed
from worker.balance import channels
from worker.balance.channels import ChannelError, send_email, smtp_plan
from worker.gateways.sandbox.server import free_port

PAYLOAD = {"kind": "inactive", "provider": "keccel", "message": "keccel is inactive"}


def settings(**fields: object) -> Settings:
    base: dict[str, object] = {"smtp_host": "127.0.0.1", "alert_email_to": "ops@example.com"}
    return Settings(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "plan"),
    [
        ({}, (False, 25, False)),
        ({"smtp_ssl": True}, (True, 465, False)),
        ({"smtp_ssl": True, "smtp_port": 2465}, (True, 2465, False)),
        ({"smtp_starttls": True, "smtp_username": "u"}, (False, 25, True)),
        ({"smtp_ssl": True, "smtp_starttls": True, "smtp_username": "u"}, (True, 465, False)),
        ({"smtp_username": "u", "smtp_allow_plaintext": True}, (False, 25, False)),
    ],
)
def test_smtp_plan(fields: dict[str, object], plan: tuple[bool, int, bool]) -> None:
    assert smtp_plan(settings(**fields)) == plan


@pytest.fixture
def plain_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_login_without_tls_is_refused_before_connecting(plain_server: SmtpServer) -> None:
    config = settings(
        smtp_port=plain_server.port,
        smtp_username=plain_server.username,
        smtp_password=plain_server.password,
    )
    with pytest.raises(ChannelError, match="without TLS") as info:
        send_email(PAYLOAD, config)
    assert plain_server.password not in str(info.value)
    assert plain_server.logins == [] and plain_server.messages == []
    allowed = config.model_copy(update={"smtp_allow_plaintext": True})
    send_email(PAYLOAD, allowed)
    assert plain_server.logins == [plain_server.username] and len(plain_server.messages) == 1


def test_implicit_tls_logs_in_and_sends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = self_signed(tmp_path, "IP:127.0.0.1")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    got: list[str] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            got.append(envelope.content.decode(errors="replace"))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"tls-pass-8812"
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        ssl_context=server_tls,
        authenticator=authenticator,
        auth_require_tls=False,  # aiosmtpd counts only STARTTLS as TLS; this one is implicit
    )
    controller.start()
    trusted = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(channels.ssl, "create_default_context", lambda: trusted)
    try:
        config = settings(
            smtp_ssl=True, smtp_port=port, smtp_username="alerts", smtp_password="tls-pass-8812"
        )
        send_email(PAYLOAD, config)
    finally:
        controller.stop()
    assert len(got) == 1 and "keccel is inactive" in got[0]
