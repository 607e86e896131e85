"""Logging for every smsq process: secrets redacted, JSON lines on request (SMSQ_LOG_JSON)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from producer.settings import all_secrets, get_settings

_EXTRA_KEYS = ("message_id", "message_ids", "provider", "attempt", "status", "task_id")
# The secret part of a delivery-callback path, as access logs would print it.
_CALLBACK_PATH = re.compile(r"(/dlr/[A-Za-z0-9_-]+/)[^/\s?\"']+")
# The password of any Redis URL (`redis://:pw@host`, `rediss://user:pw@host`), even one
# no setting names: an embedded Redis started after this process set up its logging.
_URL_PASSWORD = re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+@")


class RedactSecrets(logging.Filter):
    """Replace any configured secret in a record's text with `***`."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = sorted({s for s in all_secrets() if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        clean = _URL_PASSWORD.sub(r"\1***@", _CALLBACK_PATH.sub(r"\1***", text))
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        return clean

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = self.redact(text)
        if clean != text:
            if isinstance(record.args, tuple) and record.args:
                # Formatters such as uvicorn's access log read the args: redact them in place.
                record.args = tuple(
                    self.redact(a) if isinstance(a, str) else a for a in record.args
                )
                record.msg = self.redact(str(record.msg))
            else:
                record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_text or record.exc_info:
            data["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(data, default=str)


def install(logger: logging.Logger | None = None) -> None:
    """Add redaction (and the JSON format when asked) to every handler of `logger`."""
    settings = get_settings()
    target = logger or logging.getLogger()
    if not target.handlers:
        logging.basicConfig(level=settings.log_level.upper())
    redactor = RedactSecrets()
    for handler in target.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(redactor)
        if settings.log_json:
            handler.setFormatter(JsonFormatter())
