"""Delivery reports through the one state machine: pending, final, late, duplicate,
per-part, early pushes, and the web callback endpoint (forged, malformed, unknown).

A real SQLite store in a temp dir; the broker URL points nowhere, so metrics
and notification publishing fail fast and quietly (they never block a report).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from producer import db
from producer.models import Message, MessageEvent
from producer.settings import get_settings, reload_settings
from producer.status import TERMINAL, Status
from tests.unit.conftest import isolate, restore
from worker.gateways.base import StatusReport
from worker.tracking.callback_urls import callback_token
from worker.tracking.dlr import adopt_early_reports, apply_push
from worker.tracking.reports import apply_report, combined_status, part_states


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_CALLBACK_SECRET="unit-test-callback-secret",
        SMSQ_KECCEL_TOKEN="k",
        SMSQ_KINGSMS_API_KEY="a",
        SMSQ_KINGSMS_CLIENT_ID="1",
        SMSQ_KECCEL_DLR_MODE="push",
        SMSQ_KINGSMS_DLR_MODE="push",
        SMSQ_SMS1601_DLR_MODE="push",
    )
    yield
    restore(monkeypatch)


def make_row(provider: str = "keccel", pid: str = "555", segments: int = 1, status=Status.SENT):  # type: ignore[no-untyped-def]
    with db.session() as s:
        row = Message(
            to="243851234567",
            text="hello",
            provider=provider,
            status=status.value,
            provider_message_id=pid,
            segments=segments,
        )
        s.add(row)
        s.commit()
        s.refresh(row)
        return row.id


def load(mid: str) -> Message:
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        return row


def events(mid: str | None) -> list[MessageEvent]:
    with db.session() as s:
        return list(
            s.exec(
                select(MessageEvent).where(MessageEvent.message_id == mid).order_by(MessageEvent.id)  # type: ignore[arg-type]
            )
        )


def report(status: Status | None, pid: str = "555", **kw) -> StatusReport:  # type: ignore[no-untyped-def]
    raw = status.value.upper() if status else "PENDING"
    return StatusReport(
        provider_message_id=pid, status=status, raw_status=raw, raw={"s": raw}, **kw
    )


def apply(mid: str, rep: StatusReport, source: str = "poll") -> bool:
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        moved = apply_report(s, row, rep, source)
        s.commit()
        return moved


# --- whole-message reports ------------------------------------------------------


@pytest.mark.parametrize("final", sorted(TERMINAL - {Status.FAILED}))
def test_final_report_moves_a_sent_message_and_clears_its_poll(store, final: Status) -> None:
    mid = make_row()
    assert apply(mid, report(final))
    row = load(mid)
    assert row.status == final.value
    assert row.next_poll_at is None
    assert events(mid)[-1].new_status == final.value


def test_pending_report_is_kept_and_changes_nothing(store) -> None:
    mid = make_row()
    assert not apply(mid, report(None))
    assert not apply(mid, report(Status.SENT))
    assert load(mid).status == "sent"
    kept = events(mid)
    assert [e.applied for e in kept] == [False, False]
    assert all("pending" in (e.note or "") for e in kept)


@pytest.mark.parametrize(
    "late", [Status.SENT, Status.UNDELIVERED, Status.DELIVERED, Status.EXPIRED]
)
def test_late_or_duplicate_report_after_final_is_stored_and_ignored(store, late: Status) -> None:
    mid = make_row()
    apply(mid, report(Status.DELIVERED))
    before = len(events(mid))
    assert not apply(mid, report(late), source="push")
    assert load(mid).status == "delivered"
    after = events(mid)
    assert len(after) == before + 1
    assert after[-1].applied is False
    assert after[-1].source == "push"


# --- long messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "parts", "expected"),
    [
        ({}, 3, None),
        ({1: Status.DELIVERED}, 3, None),
        ({1: Status.DELIVERED, 2: Status.DELIVERED}, 3, None),
        ({1: Status.DELIVERED, 2: Status.DELIVERED, 3: Status.DELIVERED}, 3, Status.DELIVERED),
        ({2: Status.UNDELIVERED}, 3, Status.UNDELIVERED),
        ({1: Status.DELIVERED, 3: Status.EXPIRED}, 3, Status.EXPIRED),
        ({1: Status.REJECTED, 2: Status.EXPIRED}, 2, Status.REJECTED),
        ({1: Status.DELIVERED, 3: Status.DELIVERED}, 3, None),
    ],
)
def test_combined_status_of_parts(states, parts, expected) -> None:  # type: ignore[no-untyped-def]
    assert combined_status(states, parts) == expected


def test_long_message_is_delivered_only_when_every_part_is(store) -> None:
    mid = make_row(provider="kingsms", segments=3)
    assert not apply(mid, report(Status.DELIVERED, part=2, parts=3), "push")
    assert load(mid).status == "sent"
    assert not apply(mid, report(Status.DELIVERED, part=2, parts=3), "push")  # duplicate part
    assert not apply(mid, report(Status.DELIVERED, part=1, parts=3), "push")
    assert load(mid).status == "sent"
    assert part_states(load(mid)) == {1: Status.DELIVERED, 2: Status.DELIVERED}
    assert apply(mid, report(Status.DELIVERED, part=3, parts=3), "push")
    row = load(mid)
    assert row.status == "delivered"
    notes = [e.note or "" for e in events(mid)]
    assert sum("waiting for the rest" in n for n in notes) == 2
    assert any("not forward" in n for n in notes)  # the duplicate part 2
    assert "part 3/3" in notes[-1]


def test_one_failed_part_makes_the_long_message_undelivered(store) -> None:
    mid = make_row(provider="kingsms", segments=2)
    assert not apply(mid, report(Status.DELIVERED, part=1), "push")
    assert apply(mid, report(Status.UNDELIVERED, part=2), "push")
    assert load(mid).status == "undelivered"
    # a late "delivered" for the failed part changes nothing
    assert not apply(mid, report(Status.DELIVERED, part=2), "push")
    assert load(mid).status == "undelivered"


def test_part_report_for_a_single_part_message_counts_as_whole(store) -> None:
    mid = make_row(segments=1)
    assert apply(mid, report(Status.DELIVERED, part=1, parts=1))
    assert load(mid).status == "delivered"


# --- pushes -----------------------------------------------------------------------


def test_push_for_unknown_id_is_recorded_not_an_error(store) -> None:
    counts = apply_push("keccel", [report(Status.DELIVERED, pid="nope")])
    assert counts == {"applied": 0, "ignored": 0, "unknown": 1}
    orphan = events(None)
    assert len(orphan) == 1
    assert orphan[0].provider_message_id == "nope"
    assert orphan[0].new_status == "delivered"


def test_push_does_not_match_another_providers_message(store) -> None:
    mid = make_row(provider="kingsms", pid="777")
    counts = apply_push("keccel", [report(Status.DELIVERED, pid="777", ref=mid)])
    assert counts["unknown"] == 1
    assert load(mid).status == "sent"


def test_push_that_beat_the_send_answer_is_applied_once_the_id_is_stored(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_KECCEL_DLR_MODE", "both")  # pull mode expects no pushes
    reload_settings()
    apply_push("keccel", [report(Status.DELIVERED, pid="900")])
    mid = make_row(pid="900")
    with db.session() as s:
        row = s.get(Message, mid)
        assert row is not None
        assert adopt_early_reports(s, row) == 1
        s.commit()
    assert load(mid).status == "delivered"
    assert events(None) == []  # the orphan now belongs to the message
    assert any("matched once the send was stored" in (e.note or "") for e in events(mid))


# --- the web endpoint -------------------------------------------------------------


@pytest.fixture
def client(store) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from worker.web import app

    with TestClient(app) as c:
        yield c


def test_keccel_push_with_the_secret_delivers(client: TestClient) -> None:
    mid = make_row(pid="4242")
    url = f"/dlr/keccel/{callback_token('keccel')}"
    answer = client.get(url, params={"messageID": "4242", "status": "DELIVERED"})
    assert answer.status_code == 200
    assert answer.json()["applied"] == 1
    assert load(mid).status == "delivered"
    again = client.get(url, params={"messageID": "4242", "status": "DELIVERED"})
    assert again.status_code == 200 and again.json()["ignored"] == 1
    assert load(mid).status == "delivered"


@pytest.mark.parametrize(
    "token", ["forged", "", "x" * 40, callback_token.__name__, "../keccel"], ids=repr
)
def test_forged_callback_is_refused_and_changes_nothing(client: TestClient, token: str) -> None:
    mid = make_row(pid="4243")
    answer = client.get(f"/dlr/keccel/{token}", params={"messageID": "4243", "status": "DELIVERED"})
    assert answer.status_code in (403, 404, 405)
    assert load(mid).status == "sent"
    assert events(mid) == [] and events(None) == []


def test_token_of_another_provider_is_refused(client: TestClient) -> None:
    mid = make_row(pid="4244")
    answer = client.get(
        f"/dlr/keccel/{callback_token('sms1601')}",
        params={"messageID": "4244", "status": "DELIVERED"},
    )
    assert answer.status_code == 403
    assert load(mid).status == "sent"


@pytest.mark.parametrize(
    "params", [{}, {"status": "DELIVERED"}, {"messageID": "4245"}, {"messageID": "", "status": ""}]
)
def test_malformed_callback_is_400_and_changes_nothing(client: TestClient, params) -> None:  # type: ignore[no-untyped-def]
    mid = make_row(pid="4245")
    answer = client.get(f"/dlr/keccel/{callback_token('keccel')}", params=params)
    assert answer.status_code == 400
    assert load(mid).status == "sent"
    assert events(mid) == [] and events(None) == []


def test_garbage_body_is_400_not_500(client: TestClient) -> None:
    answer = client.post(
        f"/dlr/kingsms/{callback_token('kingsms')}",
        content=b"\xff\xfe{not json",
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400


def test_unknown_id_push_is_200_and_recorded(client: TestClient) -> None:
    answer = client.get(
        f"/dlr/keccel/{callback_token('keccel')}",
        params={"messageID": "99999", "status": "DELIVERED"},
    )
    assert answer.status_code == 200 and answer.json()["unknown"] == 1
    assert len(events(None)) == 1


def test_provider_without_push_has_no_callback_endpoint(client: TestClient) -> None:
    answer = client.get(f"/dlr/smsclub/{callback_token('smsclub')}")
    assert answer.status_code == 404


def push_as(client: TestClient, how: str, fields: dict[str, str]):  # type: ignore[no-untyped-def]
    """Keccel's push as its document shows it (a GET query string), or the same
    fields POSTed as a form or as JSON (its "requests are JSON")."""
    url = f"/dlr/keccel/{callback_token('keccel')}"
    if how == "query":
        return client.get(url, params=fields)
    if how == "form":  # httpx: application/x-www-form-urlencoded
        return client.post(url, data=fields)
    return client.post(url, json=fields)


def applied_events(mid: str) -> list[tuple]:
    return [(e.kind, e.source, e.new_status, e.applied, e.raw) for e in events(mid)]


def test_form_push_is_applied_exactly_as_a_query_or_json_push(client: TestClient) -> None:
    seen = {}
    for n, how in enumerate(["query", "form", "json"]):
        fields = {"messageID": f"43{n}", "status": "FAILED"}
        mid = make_row(pid=fields["messageID"])
        answer = push_as(client, how, fields)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ok": True, "applied": 1, "ignored": 0, "unknown": 0}
        assert load(mid).status == "undelivered"
        [event] = applied_events(mid)
        assert json.loads(event[-1]) == fields  # the gateway's words, kept as they came
        seen[how] = event[:-1]
    assert seen["form"] == seen["query"] == seen["json"] == ("status", "push", "undelivered", True)


def test_form_push_sent_as_multipart_is_applied_too(client: TestClient) -> None:
    mid = make_row(pid="4250")
    answer = client.post(
        f"/dlr/keccel/{callback_token('keccel')}",
        files={"messageID": (None, "4250"), "status": (None, "DELIVERED")},
    )
    assert answer.status_code == 200 and answer.json()["applied"] == 1
    assert load(mid).status == "delivered"


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/x-www-form-urlencoded", b"\xff\xfe%%%&&=="),
        ("application/x-www-form-urlencoded", b"messageID=&status="),
        ("application/x-www-form-urlencoded", b"status=DELIVERED"),
        ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(1500))),
        ("application/x-www-form-urlencoded", b"messageID=4251&status=" + b"D" * (1 << 21)),
        ("application/x-www-form-urlencoded; charset=hex", b"\x00\x01messageID"),
        ("multipart/form-data", b"messageID=4251&status=DELIVERED"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nbroken"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data\r\n\r\nx"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="messageID"; filename="id.txt"'
            b'\r\n\r\n4251\r\n--zz\r\nContent-Disposition: form-data; name="status"'
            b"\r\n\r\nDELIVERED\r\n--zz--\r\n",
        ),
    ],
    ids=[
        "binary",
        "empty fields",
        "no id",
        "1500 fields",
        "2 MiB field",
        "bad charset",
        "multipart without boundary",
        "broken multipart",
        "part without name",
        "id sent as a file",
    ],
)
def test_garbage_form_push_is_a_clear_400_and_changes_nothing(
    client: TestClient, ctype: str, body: bytes
) -> None:
    """A body over SMSQ_MAX_BODY_BYTES (the 2 MiB field) is a 413 instead."""
    mid = make_row(pid="4251")
    answer = client.post(
        f"/dlr/keccel/{callback_token('keccel')}", content=body, headers={"content-type": ctype}
    )
    if len(body) > get_settings().max_body_bytes:
        assert answer.status_code == 413, answer.text
        assert "SMSQ_MAX_BODY_BYTES" in answer.json()["error"]
    else:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith("malformed callback")
    assert load(mid).status == "sent"
    assert events(mid) == [] and events(None) == []


def test_rotated_secret_accepts_old_and_new_tokens_until_the_previous_is_unset(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.tracking import callback_urls

    old_token = callback_token("keccel")  # under unit-test-callback-secret
    monkeypatch.setenv("SMSQ_CALLBACK_SECRET", "the-new-callback-secret")
    monkeypatch.setenv("SMSQ_CALLBACK_SECRET_PREVIOUS", "unit-test-callback-secret")
    monkeypatch.setattr(callback_urls, "_warned_previous", set())
    reload_settings()
    new_token = callback_token("keccel")
    assert new_token != old_token
    first, second, third = make_row(pid="5001"), make_row(pid="5002"), make_row(pid="5003")
    with caplog.at_level("WARNING", logger="smsq.callbacks"):
        for token, pid in ((old_token, "5001"), (new_token, "5002"), (old_token, "5001")):
            answer = client.get(
                f"/dlr/keccel/{token}", params={"messageID": pid, "status": "DELIVERED"}
            )
            assert answer.status_code == 200
    assert load(first).status == load(second).status == "delivered"
    warned = [r for r in caplog.records if "previous callback secret" in r.getMessage()]
    assert len(warned) == 1 and "unit-test-callback-secret" not in warned[0].getMessage()
    monkeypatch.delenv("SMSQ_CALLBACK_SECRET_PREVIOUS")
    reload_settings()
    answer = client.get(
        f"/dlr/keccel/{old_token}", params={"messageID": "5003", "status": "DELIVERED"}
    )
    assert answer.status_code == 403 and load(third).status == "sent"


def test_the_app_callback_secret_does_not_make_delivery_report_tokens(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.tracking.callback_urls import token_for

    monkeypatch.setenv("SMSQ_APP_CALLBACK_SECRET", "app-secret-known-to-apps")
    reload_settings()
    mid = make_row(pid="5004")
    forged = token_for("app-secret-known-to-apps", "keccel")
    answer = client.get(
        f"/dlr/keccel/{forged}", params={"messageID": "5004", "status": "DELIVERED"}
    )
    assert answer.status_code == 403 and load(mid).status == "sent"


def test_push_to_a_provider_in_pull_mode_is_404_and_changes_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_KECCEL_DLR_MODE", "pull")
    reload_settings()
    mid = make_row(pid="5005")
    answer = client.get(
        f"/dlr/keccel/{callback_token('keccel')}",
        params={"messageID": "5005", "status": "DELIVERED"},
    )
    assert answer.status_code == 404 and "SMSQ_KECCEL_DLR_MODE=pull" in answer.json()["error"]
    assert load(mid).status == "sent" and events(mid) == [] and events(None) == []


# --- pushes change only messages handed to the gateway -----------------------------


@pytest.mark.parametrize("status", [Status.QUEUED, Status.SCHEDULED])
def test_push_naming_a_message_not_yet_sent_changes_nothing(store, status: Status) -> None:
    mid = make_row(provider="kingsms", pid=None, status=status)  # type: ignore[arg-type]
    counts = apply_push("kingsms", [report(Status.DELIVERED, pid="", ref=mid)])
    assert counts == {"applied": 0, "ignored": 1, "unknown": 0}
    assert load(mid).status == status.value
    (kept,) = events(mid)
    assert kept.applied is False and "not yet handed to the gateway" in (kept.note or "")


def test_push_through_the_web_for_a_queued_message_changes_nothing(client: TestClient) -> None:
    mid = make_row(provider="kingsms", pid=None, status=Status.QUEUED)  # type: ignore[arg-type]
    answer = client.post(
        f"/dlr/kingsms/{callback_token('kingsms')}",
        json={"messageId": "77", "ref": mid, "status": "DLV"},
    )
    assert answer.status_code == 200, answer.text
    assert load(mid).status == "queued"


def test_push_for_a_message_being_sent_waits_for_its_gateway_id(store) -> None:
    mid = make_row(provider="kingsms", pid=None, status=Status.SENDING)  # type: ignore[arg-type]
    counts = apply_push("kingsms", [report(Status.DELIVERED, pid="901", ref=mid)])
    assert counts["unknown"] == 1 and load(mid).status == "sending"
    with db.session() as s:  # the send's answer is stored: the report is adopted
        row = s.get(Message, mid)
        assert row is not None
        row.status, row.provider_message_id = Status.SENT.value, "901"
        s.add(row)
        s.commit()
    mid_sent = load(mid)
    with db.session() as s:
        row = s.get(Message, mid_sent.id)
        assert row is not None
        assert adopt_early_reports(s, row) == 1
        s.commit()
    assert load(mid).status == "delivered"


def test_push_matched_by_reference_with_another_gateway_id_changes_nothing(store) -> None:
    mid = make_row(provider="kingsms", pid="700")
    counts = apply_push("kingsms", [report(Status.UNDELIVERED, pid="999", ref=mid)])
    assert counts["ignored"] == 1 and load(mid).status == "sent"
    assert "differs" in (events(mid)[-1].note or "")


def test_unknown_id_reports_are_bounded_in_number(store, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.tracking import dlr

    monkeypatch.setattr(dlr, "UNKNOWN_REPORTS_MAX", 3)
    counts = apply_push("keccel", [report(Status.DELIVERED, pid=f"x{i}") for i in range(5)])
    assert counts == {"applied": 0, "ignored": 0, "unknown": 3, "dropped": 2}
    assert apply_push("keccel", [report(Status.DELIVERED, pid="x9")])["dropped"] == 1
    assert len(events(None)) == 3


def test_unknown_id_reports_expire_after_24_hours(store) -> None:
    from datetime import timedelta

    from producer.models import utcnow
    from worker.tracking.dlr import expire_unmatched_reports

    mid = make_row(pid="800")
    apply_push("keccel", [report(Status.DELIVERED, pid="old"), report(None, pid="800")])
    apply_push("keccel", [report(Status.DELIVERED, pid="new")])
    with db.session() as s:  # age the first call's events by 25 hours
        for e in s.exec(select(MessageEvent)):
            if e.provider_message_id in ("old", "800"):
                e.created_at = utcnow() - timedelta(hours=25)
                s.add(e)
        s.commit()
    assert expire_unmatched_reports() == 1
    assert [e.provider_message_id for e in events(None)] == ["new"]
    assert len(events(mid)) == 1  # a message's own history is never expired
