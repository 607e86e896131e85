"""Real local receivers for balance alerts: a webhook HTTP server and an SMTP server.

Both listen on loopback from background threads; tests read what they got.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from worker.gateways.sandbox.server import free_port


class WebhookServer:
    """Answers each POST with the next queued status (200 when none is left)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses: deque[int] = deque(statuses or [])
        self.received: list[dict[str, Any]] = []  # every body, answered or not
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = outer.statuses.popleft() if outer.statuses else 200
                outer.received.append(json.loads(body))
                outer.answers.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies the server answered with a 2xx."""
        return [b for b, s in zip(self.received, self.answers, strict=True) if 200 <= s < 300]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class SmtpServer:
    """aiosmtpd on loopback, with AUTH (LOGIN/PLAIN) without TLS, for the test only."""

    username: str = "alerts"
    password: str = "smtp-secret-pass-4711"
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def start(self) -> SmtpServer:
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                outer.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                outer.messages.append(message_from_bytes(envelope.original_content))
                return "250 Message accepted for delivery"

        def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
            ok = isinstance(auth_data, LoginPassword) and (
                auth_data.login.decode() == outer.username
                and auth_data.password.decode() == outer.password
            )
            if ok:
                outer.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
