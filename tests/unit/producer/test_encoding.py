"""GSM 03.38 / UCS-2 detection and segment counting (producer.encoding)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.encoding import GSM7_BASIC, GSM7_EXTENSION, analyse, gsm7_septets, is_gsm7

# GSM 03.38 default alphabet, written out from the standard (ESC 0x1B excluded).
STANDARD_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
STANDARD_EXTENSION = "\f^{}\\[~]|€"


def test_basic_table_matches_gsm_0338() -> None:
    assert len(STANDARD_BASIC) == 127
    assert set(STANDARD_BASIC) == GSM7_BASIC


def test_extension_table_matches_gsm_0338() -> None:
    assert set(STANDARD_EXTENSION) == GSM7_EXTENSION
    assert not (GSM7_BASIC & GSM7_EXTENSION)


@pytest.mark.parametrize("ch", list(STANDARD_BASIC))
def test_every_basic_char_is_gsm7_one_septet(ch: str) -> None:
    info = analyse(ch)
    assert is_gsm7(ch)
    assert (info.encoding, info.units, info.segments) == ("gsm7", 1, 1)


@pytest.mark.parametrize("ch", list(STANDARD_EXTENSION))
def test_every_extension_char_is_gsm7_two_septets(ch: str) -> None:
    info = analyse(ch)
    assert (info.encoding, info.units, info.segments) == ("gsm7", 2, 1)
    assert gsm7_septets("a" + ch + "b") == 4


@pytest.mark.parametrize(
    "text",
    [
        "ç",  # lower-case c cedilla is not in the table (only Ç is)
        "á",
        "ê",
        "Привет",
        "你好",
        "`",
        "😀",
        "\t",
        "Hello ш",
    ],
)
def test_non_gsm_chars_switch_to_ucs2(text: str) -> None:
    assert not is_gsm7(text)
    assert analyse(text).encoding == "ucs2"


def test_plain_ascii_text_is_gsm7() -> None:
    info = analyse("Hello World, your code is 1234.")
    assert info.encoding == "gsm7"
    assert info.units == 31
    assert info.segments == 1


def test_empty_text() -> None:
    info = analyse("")
    assert info.encoding == "gsm7"
    assert info.units == 0
    assert info.segments == 1


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (153, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (765, 5)],
)
def test_gsm7_segment_boundaries(length: int, segments: int) -> None:
    info = analyse("a" * length)
    assert info.encoding == "gsm7"
    assert info.units == length
    assert info.segments == segments


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (67, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_segment_boundaries(length: int, segments: int) -> None:
    info = analyse("ж" * length)
    assert info.encoding == "ucs2"
    assert info.units == length
    assert info.segments == segments


def test_emoji_counts_two_utf16_units() -> None:
    assert analyse("😀").units == 2
    assert analyse("a😀").units == 3
    # 35 emoji = 70 units fit one part; one more unit needs two parts
    assert analyse("😀" * 35).segments == 1
    assert analyse("😀" * 35 + "a").units == 71
    assert analyse("😀" * 35 + "a").segments == 2


def test_extension_chars_count_two_septets_against_the_limits() -> None:
    # 80 euro signs = 160 septets: one part; 81 = 162: two parts
    assert analyse("€" * 80).units == 160
    assert analyse("€" * 80).segments == 1
    assert analyse("€" * 80 + "a").segments == 2
    assert analyse("a" * 159 + "€").segments == 2  # 161 septets


def test_extension_char_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets: a naive count says 2 parts, but the euro
    # sign cannot straddle parts 1 and 2, so it opens part 2 and one 'a' spills
    # into part 3.
    text = "a" * 152 + "€" + "a" * 152
    assert gsm7_septets(text) == 306
    assert analyse(text).segments == 3
    # Same total with the escape pair aligned to a boundary: two parts.
    aligned = "a" * 151 + "€" + "a" * 153
    assert gsm7_septets(aligned) == 306
    assert analyse(aligned).segments == 2


def test_mixed_text_with_one_non_gsm_char_is_ucs2_counted_in_utf16_units() -> None:
    text = "a" * 69 + "ш"
    assert analyse(text).encoding == "ucs2"
    assert analyse(text).segments == 1
    assert analyse(text + "a").segments == 2


GSM_CHARS = st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION))
UCS2_ONLY = st.sampled_from(list("жшщ你好ç😀🎉áê"))


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(GSM_CHARS, max_size=500), GSM_CHARS)
def test_gsm7_segments_positive_and_monotonic(chars: list[str], extra: str) -> None:
    text = "".join(chars)
    before = analyse(text)
    after = analyse(text + extra)
    assert before.encoding == after.encoding == "gsm7"
    assert before.segments >= 1
    assert after.segments >= before.segments
    assert after.units == before.units + (2 if extra in GSM7_EXTENSION else 1)


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.one_of(GSM_CHARS, UCS2_ONLY), max_size=300), UCS2_ONLY)
def test_ucs2_segments_positive_and_monotonic(chars: list[str], extra: str) -> None:
    text = "".join(chars) + extra  # at least one non-GSM char: UCS-2
    before = analyse(text)
    after = analyse(text + extra)
    assert before.encoding == after.encoding == "ucs2"
    assert before.segments >= 1
    assert after.segments >= before.segments
    assert after.units == before.units + len(extra.encode("utf-16-le")) // 2
