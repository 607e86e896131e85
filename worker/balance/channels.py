"""The channels a balance alert goes out on: a webhook (POST JSON) and e-mail (SMTP).

Each send either returns (delivered) or raises `ChannelError` with a short
reason that never holds a secret: no URL (a webhook URL may carry a token), no
password, only an HTTP status or an exception's class and SMTP code.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import httpx

from producer.settings import Settings, all_secrets
from worker.gateways.base import parse_retry_after

WEBHOOK, EMAIL = "webhook", "email"
TIMEOUT_SECONDS = 10.0


class ChannelError(Exception):
    """The channel did not take the alert; `retry_after` when it said when to come back."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(scrub(reason))
        self.retry_after = retry_after


def scrub(text: str) -> str:
    for secret in all_secrets():
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def configured(channel: str, settings: Settings) -> bool:
    if channel == WEBHOOK:
        return bool(settings.alert_webhook_url)
    if channel == EMAIL:
        return bool(settings.smtp_host and recipients(settings))
    return False


def recipients(settings: Settings) -> list[str]:
    return [a.strip() for a in (settings.alert_email_to or "").split(",") if a.strip()]


def post_webhook(payload: dict[str, Any], settings: Settings) -> None:
    """POST the alert as JSON; any 2xx is delivered, anything else is retried."""
    url = settings.alert_webhook_url or ""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "smsq"}
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
            answer = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ChannelError(f"webhook: {type(exc).__name__}") from None
    if not 200 <= answer.status_code < 300:
        raise ChannelError(
            f"webhook: HTTP {answer.status_code}",
            retry_after=parse_retry_after(answer.headers.get("Retry-After")),
        )


def email_message(payload: dict[str, Any], settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[smsq] {payload['provider']} {payload['kind']}: {payload['message']}"
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(recipients(settings))
    details = "\n".join(f"{k}: {v}" for k, v in payload.items() if k != "message")
    msg.set_content(f"{payload['message']}\n\n{details}\n")
    return msg


def smtp_plan(settings: Settings) -> tuple[bool, int, bool]:
    """(implicit TLS, port, STARTTLS) for the configured server. Raises ChannelError,
    before connecting, when the password would cross the network without TLS."""
    implicit = settings.smtp_ssl
    port = settings.smtp_port or (465 if implicit else 25)
    starttls = settings.smtp_starttls and not implicit
    if settings.smtp_username and not (implicit or starttls) and not settings.smtp_allow_plaintext:
        raise ChannelError(
            "email: refusing to log in without TLS: set SMSQ_SMTP_STARTTLS=true or "
            "SMSQ_SMTP_SSL=true (or SMSQ_SMTP_ALLOW_PLAINTEXT=true to send the password in clear)"
        )
    return implicit, port, starttls


def _connect(settings: Settings, implicit: bool, port: int) -> smtplib.SMTP:
    host = settings.smtp_host or ""
    if implicit:
        return smtplib.SMTP_SSL(
            host, port, timeout=TIMEOUT_SECONDS, context=ssl.create_default_context()
        )
    return smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS)


def send_email(payload: dict[str, Any], settings: Settings) -> None:
    """Send the alert over SMTP: implicit TLS or STARTTLS, then login when configured."""
    implicit, port, starttls = smtp_plan(settings)
    try:
        with _connect(settings, implicit, port) as smtp:
            if starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password
                smtp.login(settings.smtp_username, password.get_secret_value() if password else "")
            smtp.send_message(email_message(payload, settings))
    except smtplib.SMTPResponseException as exc:
        raise ChannelError(f"email: SMTP {exc.smtp_code} ({type(exc).__name__})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"email: {type(exc).__name__}") from None


SENDERS = {WEBHOOK: post_webhook, EMAIL: send_email}
