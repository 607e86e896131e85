"""Raw payloads made safe to show: credentials out, numbers masked unless asked.

Stored payloads should hold no secret already (smsq never stores one); this is
the second line. Every configured secret is replaced by `***` (the log
redaction of `worker.ops.logs`), and so is the value of any field whose name
says it is a credential, whatever its value.
"""

from __future__ import annotations

import json
import re
from typing import Any

from worker.ops.logs import RedactSecrets

_CREDENTIAL = re.compile(
    r"(token|passw|secret|api[_-]?key|apikey|authori[sz]ation|client[_-]?id|clientid|signature)",
    re.I,
)
HIDDEN = "***"


def mask_number(number: str | None) -> str:
    """`24385*****67`: enough to tell numbers apart, not to dial one."""
    if not number:
        return ""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:5] + "*" * (len(number) - 7) + number[-2:]


def scrub(value: Any) -> Any:
    """`value` with every credential-named field's value replaced (dicts and lists, deep)."""
    if isinstance(value, dict):
        return {
            k: HIDDEN if _CREDENTIAL.search(str(k)) and v not in (None, "") else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def show(
    raw: Any, numbers: tuple[str, ...] = (), reveal: bool = False, indent: int | None = 2
) -> str:
    """`raw` as JSON text to display: scrubbed, secrets redacted, `numbers` masked
    unless `reveal`."""
    if raw is None:
        return ""
    text = json.dumps(scrub(raw), indent=indent, ensure_ascii=False, default=str)
    text = RedactSecrets().redact(text)
    if not reveal:
        for number in sorted({n for n in numbers if n and len(n) > 6}, key=len, reverse=True):
            text = text.replace(number, mask_number(number))
    return text
