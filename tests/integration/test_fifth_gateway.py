"""A fifth gateway added through the registry alone sends, polls and checks its
balance through the real worker path (issue 14: one registry of gateways).

`tests.fifth_gateway` declares TinySMS (spec, adapter, simulator) and nothing
else in smsq names it: `SMSQ_GATEWAY_PLUGINS` makes the worker, beat and web
processes import it, and `registry.register` makes this process (the producer
and the sandbox) know it before the stack starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from producer import db, get_status, send_sms
from producer.models import BalanceSnapshot
from producer.queues import BALANCE_TASK
from producer.settings import provider_names, provider_settings
from producer.status import Status
from tests.fifth_gateway import SPEC
from tests.integration.conftest import TEST_ENV, book, running_stack, wait_for, wait_status
from worker.gateways import registry
from worker.gateways.registry import PLUGINS_VARIABLE
from worker.ops.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    registry.register(SPEC)
    os.environ[PLUGINS_VARIABLE] = "tests.fifth_gateway"
    try:
        with running_stack(
            tmp_path_factory.mktemp("tiny"),
            delivery_seconds=0.5,
            worker_concurrency=2,
            extra_env={**TEST_ENV, PLUGINS_VARIABLE: "tests.fifth_gateway"},
        ) as running:
            yield running
    finally:
        os.environ.pop(PLUGINS_VARIABLE, None)
        registry.unregister("tinysms")


def test_the_registry_alone_makes_a_gateway_known_everywhere(tiny_stack: Stack) -> None:
    assert "tinysms" in provider_names()
    assert provider_settings("tinysms").configured  # the sandbox's key, from its spec
    assert tiny_stack.sandbox is not None and "tinysms" in tiny_stack.sandbox.sandbox.sims


def test_a_fifth_gateway_sends_and_polls_through_the_worker(tiny_stack: Stack) -> None:
    mid = send_sms("4915123456781", "hello from gateway five", provider="tinysms")
    st = wait_status(mid, Status.DELIVERED, timeout=30)
    assert st.provider == "tinysms" and st.provider_message_id
    assert st.attempts == 1
    assert book(tiny_stack, "tinysms", ["hello from gateway five"])["hello from gateway five"] == 1
    undelivered = send_sms("4915123456789", "this one fails", provider="tinysms")
    assert wait_status(undelivered, Status.UNDELIVERED, timeout=30).status == "undelivered"


def test_a_fifth_gateway_balance_is_checked_by_the_worker(tiny_stack: Stack) -> None:
    from producer.enqueue import publisher

    assert tiny_stack.sandbox is not None
    tiny_stack.sandbox.sandbox.sims["tinysms"].update_account({"balance": 4321})
    publisher().send_task(BALANCE_TASK)  # what beat does every SMSQ_BALANCE_CHECK_SECONDS

    def snapshot() -> BalanceSnapshot | None:
        with db.session() as s:
            rows = s.exec(
                select(BalanceSnapshot).where(
                    BalanceSnapshot.provider == "tinysms", BalanceSnapshot.amount == 4321
                )
            ).all()
        return rows[0] if rows else None

    snap = wait_for(snapshot, timeout=30)
    assert isinstance(snap, BalanceSnapshot) and snap.unit == "credits"
    assert get_status("no-such-id") is None


def test_an_unknown_gateway_is_refused_by_name(tmp_path: Path) -> None:
    from producer import InvalidMessage

    with pytest.raises(InvalidMessage) as caught:
        send_sms("4915123456781", "hi", provider="sixthsms")
    assert caught.value.field == "provider" and "tinysms" in str(caught.value)
