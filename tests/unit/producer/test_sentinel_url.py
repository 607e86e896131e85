"""SMSQ_BROKER_URL in Celery's Sentinel form: parsed, checked (an error names the part and
the rule, never the URL), its passwords redacted, and turned into kombu's and
redbeat's options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from producer import sentinel
from producer.queues import broker_url, celery_config, sentinel_group
from producer.settings import Settings, all_secrets, reload_settings
from tests.unit.conftest import isolate, restore

URL = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2;sentinel://10.0.0.3:26380"


def test_the_group_its_nodes_database_and_the_masters_password() -> None:
    group = sentinel.parse(URL, "orders")
    assert group.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380))
    assert (group.master, group.db, group.password, group.username) == ("orders", 2, "s3cret", None)
    assert group.sentinel_kwargs(5, 2) == {"socket_timeout": 5, "socket_connect_timeout": 2}
    with_own = sentinel.parse(URL, "orders", "sentinel-pw")
    assert with_own.sentinel_kwargs(5, 2)["password"] == "sentinel-pw"
    assert sentinel.is_sentinel(URL) and not sentinel.is_sentinel("redis://h:6379/0")


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("sentinel://:pw@h1:26379;redis://:pw@h2:6379", "part 2: every part of a Sentinel URL"),
        ("sentinel://:pw@h1:notaport", "part 1: the port is not a number"),
        ("sentinel://:pw@:26379", "part 1: names no host"),
        ("sentinel://:pw@h1:26379/zero", "part 1: the database (/N) must be a number"),
        (";", "names no sentinel"),
    ],
)
def test_a_malformed_url_names_the_part_and_the_rule_not_the_password(url: str, rule: str) -> None:
    with pytest.raises(ValueError, match="SMSQ_BROKER_URL") as caught:
        sentinel.parse(url, "mymaster")
    assert rule in str(caught.value)
    assert "pw" not in str(caught.value)


def test_settings_refuse_a_malformed_sentinel_url_and_an_empty_master(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMSQ_BROKER_URL", "sentinel://:pw@h1:26379;redis://h2")
    with pytest.raises(ValidationError, match="broker_url") as caught:
        Settings()
    assert "pw@" not in str(caught.value)
    monkeypatch.setenv("SMSQ_BROKER_URL", URL)
    monkeypatch.setenv("SMSQ_REDIS_SENTINEL_MASTER", "  ")
    with pytest.raises(ValidationError, match="redis_sentinel_master"):
        Settings()


def test_kombu_gets_the_master_name_and_every_password_is_redacted(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_BROKER_URL=URL, SMSQ_REDIS_SENTINEL_PASSWORD="sent-pw")
    try:
        assert broker_url() == URL
        config = celery_config()
        assert config["broker_url"] == URL  # Celery's own Sentinel form, as given
        options = config["broker_transport_options"]
        assert options["master_name"] == "mymaster"  # the default
        assert options["sentinel_kwargs"]["password"] == "sent-pw"
        assert sentinel_group().nodes[2] == ("10.0.0.3", 26380)  # type: ignore[union-attr]
        assert {"s3cret", "sent-pw"} <= set(all_secrets())
    finally:
        restore(monkeypatch)


def test_a_single_server_url_is_not_a_group(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    isolate(monkeypatch, tmp_path, SMSQ_BROKER_URL="redis://:pw@10.0.0.9:6379/0")
    try:
        reload_settings()
        assert sentinel_group() is None
        assert "master_name" not in celery_config()["broker_transport_options"]
        assert "pw" in all_secrets()
    finally:
        restore(monkeypatch)
