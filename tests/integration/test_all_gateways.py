"""Every gateway through the real worker: a delivered and a rejected message each,
and the provider-specific CLI commands against the sandbox."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from producer import get_status, send_sms
from producer.status import Status
from tests.integration.conftest import wait_status
from worker.ops import cli

pytestmark = pytest.mark.integration

NUMBERS = {
    "keccel": "24385123456",
    "smsclub": "38098936113",
    "kingsms": "2289044367",
    "sms1601": "3161234567",
}


@pytest.mark.parametrize("provider", sorted(NUMBERS))
def test_each_gateway_delivers_and_rejects(stack, sims, provider: str) -> None:  # type: ignore[no-untyped-def]
    text = f"{provider} {uuid.uuid4().hex[:8]}"
    ok = send_sms(NUMBERS[provider] + "7", text, provider=provider)
    bad = send_sms(NUMBERS[provider] + "0", text + " r", provider=provider)
    delivered = wait_status(ok, Status.DELIVERED)
    wait_status(bad, Status.REJECTED)
    assert delivered.provider_message_id
    sim_ids = {m.id for m in sims[provider].messages.values() if m.text == text}
    assert sim_ids == {delivered.provider_message_id}


def test_kingsms_flash_reaches_the_gateway_as_type_1(stack, sims) -> None:  # type: ignore[no-untyped-def]
    text = f"flash {uuid.uuid4().hex[:8]}"
    mid = send_sms("22890443671", text, provider="kingsms", flash=True)
    wait_status(mid, Status.DELIVERED)
    [msg] = [m for m in sims["kingsms"].messages.values() if m.text == text]
    assert str(msg.extra.get("type")) == "1"


def test_routes_pick_the_provider_by_prefix(stack, sims, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from producer.settings import reload_settings

    monkeypatch.setenv("SMSQ_ROUTES", "243=keccel|sms1601,380=smsclub,*=sms1601")
    reload_settings()
    try:
        kin = send_sms("243851234561", "routed", sender="SMSQ")
        kyiv = send_sms("380989361131", "routed", sender="SMSQ")
        ams = send_sms("31612345671", "routed", sender="SMSQ")
        assert [get_status(m).provider for m in (kin, kyiv, ams)] == [  # type: ignore[union-attr]
            "keccel",
            "smsclub",
            "sms1601",
        ]
    finally:
        monkeypatch.delenv("SMSQ_ROUTES")
        reload_settings()


def test_cli_cancel_of_a_scheduled_message(stack, sims, capsys) -> None:  # type: ignore[no-untyped-def]
    when = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    text = f"cancel {uuid.uuid4().hex[:8]}"
    assert cli.main(["send", "--to", "243851234561", "--text", text, "--at", when]) == 0
    mid = capsys.readouterr().out.strip()
    assert cli.main(["cancel", mid]) == 0
    assert get_status(mid).status == "failed"  # type: ignore[union-attr]
    assert cli.main(["cancel", mid]) == 2  # already final
    import time

    time.sleep(5)
    assert [m for m in sims["keccel"].messages.values() if m.text == text] == []


def test_cli_senders_and_reports(stack, sims, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["senders", "smsclub"]) == 0
    assert "SMSQ" in capsys.readouterr().out.split()
    mid = send_sms("22890443672", "report me", provider="kingsms")
    wait_status(mid, Status.DELIVERED)
    today = date.today().isoformat()
    assert cli.main(["report", "kingsms", "--from", today, "--to", today, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert get_status(mid).provider_message_id in {r["provider_message_id"] for r in rows}  # type: ignore[union-attr]
    assert cli.main(["report", "kingsms", "--from", today, "--to", "2000-01-01"]) == 2


def test_cli_balance_json_lists_every_configured_provider(stack, sims, capsys) -> None:  # type: ignore[no-untyped-def]
    sims["keccel"].update_account({"balance": 42, "expires_in_days": 3})
    try:
        assert cli.main(["balance", "--json"]) == 0
        rows = {r["provider"]: r for r in json.loads(capsys.readouterr().out)}
    finally:
        sims["keccel"].update_account({"balance": 100000, "expires_at": None})
    assert set(rows) == set(NUMBERS)
    assert rows["keccel"]["balance"] == 42.0
    assert rows["keccel"]["expires_at"] is not None
    assert rows["smsclub"]["unit"] == "UAH"


def test_sms1601_outbox_scheduling_and_cancel(stack, sims, capsys) -> None:  # type: ignore[no-untyped-def]
    """With SMSQ_SMS1601_OUTBOX_SCHEDULING, a later send goes to the gateway's outbox at
    once (`datum`, outbox id kept); `smsq cancel` removes it from that outbox."""
    outbox = sims["sms1601"].outbox
    when = datetime.now(UTC) + timedelta(hours=2)
    mid = send_sms(
        "31612345671", f"outbox {uuid.uuid4().hex[:8]}", provider="sms1601", send_at=when
    )
    st = wait_status(mid, Status.SENT)
    assert st.provider_message_id in outbox
    assert "outbox" in (st.note or "")
    assert cli.main(["cancel", mid]) == 0
    after = get_status(mid)
    assert after is not None and after.status == "failed"
    assert "removed from the sms1601 outbox" in (after.error or "")
    assert st.provider_message_id not in outbox
    assert cli.main(["cancel", mid]) == 2  # nothing left to cancel
