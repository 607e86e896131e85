"""GSM 03.38 / UCS-2 detection and segment counting.

A text that fits the GSM 7-bit default alphabet (with its extension table,
whose characters take two septets) is sent as GSM-7: 160 septets in one
part, 153 per part when concatenated. Anything else is UCS-2: 70 UTF-16 code
units in one part, 67 per part (an emoji takes two units).
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class TextInfo:
    encoding: str  # "gsm7" or "ucs2"
    units: int  # septets (gsm7) or UTF-16 code units (ucs2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def gsm7_septets(text: str) -> int:
    return sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)


def _gsm7_segments(text: str) -> int:
    """Parts of a GSM-7 text; an escape pair is never split across two parts."""
    total = gsm7_septets(text)
    if total <= GSM7_SINGLE:
        return 1
    parts, used = 1, 0
    for ch in text:
        width = 2 if ch in GSM7_EXTENSION else 1
        if used + width > GSM7_MULTI:
            parts += 1
            used = 0
        used += width
    return parts


def _ucs2_segments(text: str, units: int) -> int:
    """Parts of a UCS-2 text; a surrogate pair (an emoji) is never split across parts."""
    if units <= UCS2_SINGLE:
        return 1
    parts, used = 1, 0
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > UCS2_MULTI:
            parts += 1
            used = 0
        used += width
    return parts


def analyse(text: str) -> TextInfo:
    """Encoding, length in units and number of parts of `text`."""
    if is_gsm7(text):
        return TextInfo("gsm7", gsm7_septets(text), _gsm7_segments(text) if text else 1)
    units = len(text.encode("utf-16-le")) // 2
    return TextInfo("ucs2", units, _ucs2_segments(text, units))
