"""Retention through the real stack: a delivered message backdated past
SMSQ_RETENTION_DAYS is masked by the `smsq.retention` task, run by a real worker from
the maintenance queue (beat sends it every 30 s; here it is published at once), and
a recent one is left whole. The same on PostgreSQL in test_postgres_stack.py."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from producer import db, get_status, send_sms
from producer.enqueue import publisher
from producer.models import Message, MessageEvent
from producer.queues import RETENTION_TASK
from producer.status import Status
from tests.integration.conftest import wait_for, wait_status
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration


def check_retention(stack: Stack, number: str = "243851234567") -> None:
    tag = uuid.uuid4().hex[:6]
    old, recent = (send_sms(number, f"retention {n} {tag}", provider="keccel") for n in "ab")
    for mid in (old, recent):
        wait_status(mid, Status.DELIVERED, timeout=30)
    with db.session() as s:
        st = get_status(old)
        assert st is not None
        s.execute(
            update(Message)
            .where(Message.id == old)  # type: ignore[arg-type]
            .values(updated_at=st.updated_at - timedelta(days=91))
        )
        s.commit()
        assert any(
            e.raw for e in s.exec(select(MessageEvent).where(MessageEvent.message_id == old))
        )
    publisher().send_task(RETENTION_TASK)

    def redacted() -> bool:
        st = get_status(old)
        return st is not None and st.redacted_at is not None

    wait_for(redacted, timeout=20)
    st, kept = get_status(old), get_status(recent)
    assert st is not None and kept is not None
    assert (st.to, st.text, st.status, st.segments) == ("2438512****67", "", "delivered", 1)
    assert (kept.to, kept.redacted_at) == (number, None) and kept.text.startswith("retention b")
    with db.session() as s:
        events = s.exec(select(MessageEvent).where(MessageEvent.message_id == old)).all()
    assert len(events) >= 3 and all(e.raw is None for e in events)
    assert {e.new_status for e in events} >= {"sending", "sent", "delivered"}


def test_retention_masks_an_old_final_message_through_the_worker(stack: Stack) -> None:
    check_retention(stack)
