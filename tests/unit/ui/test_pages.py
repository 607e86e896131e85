"""The dashboard through the real ASGI app: auth before anything, CSRF on every act,
numbers masked unless asked, credentials never shown, acts recorded with the user."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from producer import api as producer_api
from producer import db, get_status, is_suppressed, send_sms
from producer.models import MessageEvent, UiAction
from producer.settings import get_settings
from tests.unit.conftest import isolate, restore
from worker.store.transitions import record_event
from worker.ui import auth

USER, PASSWORD = "ops", "dash-Secret-77"
NUMBER = "243851234567"


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    isolate(
        monkeypatch,
        tmp_path,
        SMSQ_KECCEL_TOKEN="keccel-token-value",
        SMSQ_UI_BASIC_AUTH=f"{USER}:{PASSWORD}",
        SMSQ_RECIPIENT_LIMIT="off",
        SMSQ_KECCEL_LOW_BALANCE="100",
    )
    monkeypatch.setattr(producer_api, "publish_send", lambda *args, **kwargs: None)
    from worker.web import app

    with TestClient(app, base_url="http://dash.test") as c:
        yield c
    restore(monkeypatch)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the form"
    return found.group(1)


PAGES = ["/ui", "/ui?window=hour", "/ui?window=week", "/ui/balances", "/ui/messages",
         "/ui/suppressions", "/ui/static/ui.css"]  # fmt: skip


def test_off_without_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_KECCEL_TOKEN="k")
    from worker.web import app

    with TestClient(app) as c:
        for path in PAGES:
            answer = c.get(path, headers=basic())
            assert answer.status_code == 404, path
            assert answer.json() == c.get("/no-such-page").json()  # as if nothing were there
    restore(monkeypatch)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(password="wrong"),
        basic(user="ops2"),
        basic(user="", password=""),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Basic " + base64.b64encode("ops:dash-Secret-77é".encode()).decode()},
        {"Authorization": b"Basic \xff\xfe"},  # not even ASCII: 401, never a 500
    ],
)
def test_wrong_or_missing_credentials_get_401_asking_for_them(
    client: TestClient, headers: dict[str, str | bytes]
) -> None:
    for path in PAGES:
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert PASSWORD not in answer.text


def test_auth_comes_before_the_body(client: TestClient) -> None:
    """A POST without credentials gets its 401 however big its body claims to be."""
    limit = get_settings().max_body_bytes
    answer = client.post(
        "/ui/suppressions",
        content=b"x" * (limit + 10),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 401


def test_every_page_renders_with_the_security_headers(client: TestClient) -> None:
    mid = send_sms(NUMBER, "hello", provider="keccel")
    for path in [*PAGES[:-1], f"/ui/messages?q={NUMBER}", f"/ui/messages/{mid}"]:
        answer = client.get(path, headers=basic())
        assert answer.status_code == 200, (path, answer.text[:500])
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        assert '<script src="/ui/static/ui.js"' in answer.text
        assert "style=" not in answer.text  # the CSP allows no inline style
        assert "<script>" not in answer.text
    overview = client.get("/ui", headers=basic()).text
    assert overview.count("<svg") >= 2 and 'data-provider="keccel"' in overview
    assert "/ui" not in client.get("/openapi.json").text


def test_find_masks_numbers_unless_asked(client: TestClient) -> None:
    mid = send_sms(NUMBER, "hello", provider="keccel", idempotency_key="order-9")
    for q, by in [(NUMBER, "auto"), ("+243 85 123 4567", "number"), ("order-9", "auto"),
                  (mid, "auto"), ("order-9", "key")]:  # fmt: skip
        page = client.get("/ui/messages", params={"q": q, "by": by}, headers=basic()).text
        results = page.split('id="results"')[1]  # the search box keeps what was typed
        assert mid in results, (q, by)
        assert NUMBER not in results and "24385*****67" in results
    by_gateway = client.get(
        "/ui/messages", params={"q": "order-9", "by": "gateway"}, headers=basic()
    )
    assert mid not in by_gateway.text  # a key is no gateway id
    shown = client.get("/ui/messages", params={"q": mid, "reveal": "true"}, headers=basic())
    assert NUMBER in shown.text.split('id="results"')[1]
    nothing = client.get("/ui/messages", params={"q": "no-such"}, headers=basic()).text
    assert "No message matches" in nothing


def test_timeline_hides_credentials_and_masks_the_number(client: TestClient) -> None:
    mid = send_sms(NUMBER, "hello", provider="keccel")
    with db.session() as s:
        record_event(
            s,
            mid,
            source="push",
            kind="report",
            provider="keccel",
            applied=False,
            raw={"to": NUMBER, "apikey": "k-123456", "echo": "keccel-token-value", "ok": 1},
        )
        s.commit()
    page = client.get(f"/ui/messages/{mid}", headers=basic()).text
    assert "k-123456" not in page and "keccel-token-value" not in page
    assert "&#34;apikey&#34;: &#34;***&#34;" in page or '"apikey": "***"' in page
    assert NUMBER not in page and "not applied" in page
    revealed = client.get(f"/ui/messages/{mid}?reveal=true", headers=basic()).text
    assert NUMBER in revealed and "keccel-token-value" not in revealed


def test_cancel_needs_the_token_and_a_same_origin_post(client: TestClient) -> None:
    mid = send_sms(NUMBER, "later", provider="keccel")
    page = client.get(f"/ui/messages/{mid}", headers=basic()).text
    token = csrf_of(page)
    url = f"/ui/messages/{mid}/cancel"
    refused = [
        client.post(url, data={}, headers=basic()),
        client.post(url, data={"csrf": "1.abc"}, headers=basic()),
        client.post(url, data={"csrf": token}, headers={**basic(), "Sec-Fetch-Site": "cross-site"}),
        client.post(
            url, data={"csrf": token}, headers={**basic(), "Origin": "https://evil.example"}
        ),
        client.post(url, data={"csrf": auth.csrf_token(get_settings(), "other")}, headers=basic()),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert get_status(mid).status == "queued"  # type: ignore[union-attr]

    done = client.post(
        url,
        data={"csrf": token},
        headers={**basic(), "Origin": "http://dash.test", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"].endswith("notice=cancelled")
    assert get_status(mid).status == "failed"  # type: ignore[union-attr]
    with db.session() as s:
        event = s.exec(select(MessageEvent).where(MessageEvent.message_id == mid,
                       MessageEvent.new_status == "failed")).one()  # fmt: skip
        action = s.exec(select(UiAction)).one()
    assert event.source == "ui" and event.note == f"cancelled in the dashboard by {USER}"
    assert (action.username, action.action, action.target) == (USER, "cancel", mid)
    again = client.post(url, data={"csrf": token}, headers=basic())
    assert again.status_code == 409 and "only scheduled or queued" in again.text
    shown = client.get(done.headers["location"], headers=basic()).text
    assert "Cancelled" in shown and 'id="cancel"' not in shown


def test_suppress_and_unsuppress_are_recorded_with_the_user(client: TestClient) -> None:
    token = csrf_of(client.get("/ui/suppressions", headers=basic()).text)
    added = client.post(
        "/ui/suppressions",
        data={
            "number": "+243 851 234 567",
            "reason": "replied STOP",
            "scope": "bulk",
            "csrf": token,
        },
        headers=basic(),
        follow_redirects=False,
    )
    assert added.status_code == 303 and is_suppressed(NUMBER)
    listed = client.get("/ui/suppressions", headers=basic()).text
    assert "24385*****67" in listed and "replied STOP" in listed and "ui.ops" in listed
    bad = client.post("/ui/suppressions", data={"number": "12", "csrf": token}, headers=basic())
    assert bad.status_code == 422 and "number" in bad.text
    removed = client.post(
        "/ui/suppressions/remove", data={"number": NUMBER, "csrf": token}, headers=basic(),
        follow_redirects=False,
    )  # fmt: skip
    assert removed.status_code == 303 and not is_suppressed(NUMBER)
    missing = client.post(
        "/ui/suppressions/remove", data={"number": NUMBER, "csrf": token}, headers=basic()
    )
    assert missing.status_code == 404
    with db.session() as s:
        rows = s.exec(select(UiAction).order_by(UiAction.id)).all()  # type: ignore[arg-type]
        acts = [(a.username, a.action, a.target) for a in rows]
    assert acts == [(USER, "suppress", NUMBER), (USER, "unsuppress", NUMBER)]
    forged = client.post("/ui/suppressions", data={"number": NUMBER}, headers=basic())
    assert forged.status_code == 403 and not is_suppressed(NUMBER)


def test_csrf_tokens_expire_and_bind_to_the_user() -> None:
    from producer.settings import Settings

    settings = Settings(ui_basic_auth="a:b")  # type: ignore[arg-type]
    token = auth.csrf_token(settings, "a", now=1000)
    assert auth.csrf_ok(settings, "a", token, now=1000 + 3600)
    assert not auth.csrf_ok(settings, "a", token, now=1000 + auth.TOKEN_SECONDS + 1)
    assert not auth.csrf_ok(settings, "b", token, now=1001)
    other = Settings(ui_basic_auth="a:c")  # type: ignore[arg-type]
    assert not auth.csrf_ok(other, "a", token, now=1001)  # a new password: old tokens die
    for junk in (None, "", ".", "x.y", "1000.", "-5.abc"):
        assert not auth.csrf_ok(settings, "a", junk, now=1000)


@pytest.mark.parametrize("value", ["nopassword", ":pw", "user:", "user"])
def test_a_broken_setting_is_refused_naming_it(value: str) -> None:
    from pydantic import ValidationError

    from producer.settings import Settings

    with pytest.raises(ValidationError, match="SMSQ_UI_BASIC_AUTH must be user:password"):
        Settings(ui_basic_auth=value)  # type: ignore[arg-type]


def test_the_password_is_a_redacted_secret(client: TestClient) -> None:
    from producer.settings import all_secrets

    assert PASSWORD in all_secrets()
