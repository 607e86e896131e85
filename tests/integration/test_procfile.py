"""`honcho start` with the repository's Procfile brings the whole stack up against
SMSQ_BROKER_URL, as on a Heroku-style platform: web, worker, beat and Flower.

Its own Redis, store and simulators (it does not touch the package's `stack`);
messages go in through the HTTP API, so this test process keeps its settings.
The same run checks the JSON log lines of every process (message id, provider
and attempt present; no configured secret anywhere) and that Flower refuses
requests without its basic-auth password.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis
from producer.settings import provider_names
from worker.gateways.sandbox.server import start_in_thread
from worker.ops.stack import sandbox_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "procfile-api-key-0123456789"
FLOWER_AUTH = "admin:procfile-flower-password"


def _free_base_port() -> int:
    """A port P with P, P+100, P+200 and P+300 free (honcho's spacing)."""
    for base in range(21000, 40000, 417):
        ok = True
        for port in (base, base + 100, base + 200, base + 300):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def _wait(predicate, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout}s")


def test_honcho_start_runs_the_procfile_stack(tmp_path: Path) -> None:
    redis_url = ensure_embedded_redis(tmp_path)
    sandbox = start_in_thread(delivery_seconds=0.5)
    base = _free_base_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "SMSQ_DATA_DIR": str(tmp_path),
            "SMSQ_BROKER_URL": redis_url,
            "SMSQ_API_KEYS": API_KEY,
            "SMSQ_FLOWER_BASIC_AUTH": FLOWER_AUTH,
            "SMSQ_CALLBACK_SECRET": "procfile-callback-secret",
            "SMSQ_PUBLIC_URL": f"http://127.0.0.1:{base}",
            "SMSQ_KINGSMS_DLR_MODE": "push",
            "SMSQ_POLL_SCHEDULE": "0.5,0.5,1,2",
            "SMSQ_TICK_SECONDS": "0.5",
            "SMSQ_LOG_JSON": "true",
            **sandbox_env(sandbox.url, list(provider_names())),
        }
    )
    secrets = [v for k, v in env.items() if k.startswith("SMSQ_") and _is_secret(k)]
    log_path = tmp_path / "honcho.log"
    with open(log_path, "wb") as out:
        honcho = subprocess.Popen(
            [str(Path(sys.executable).parent / "honcho"), "start", *_procfile_args(tmp_path, base)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    web = f"http://127.0.0.1:{base}"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        with httpx.Client(timeout=5) as http:
            _wait(lambda: http.get(f"{web}/healthz").status_code == 200, 60)
            flower = f"http://127.0.0.1:{base + 300}"
            user, password = FLOWER_AUTH.split(":")
            # Flower sees the tasks that run while it listens: wait for it first.
            _wait(lambda: http.get(f"{flower}/api/workers", auth=(user, password)).json(), 60)
            ids = {}
            for provider, number in (("keccel", "243851234561"), ("kingsms", "22890443671")):
                answer = http.post(
                    f"{web}/v1/messages",
                    json={"to": number, "text": "via honcho", "provider": provider},
                    headers=headers,
                )
                assert answer.status_code == 201, answer.text
                ids[provider] = answer.json()["id"]

            def delivered() -> bool:
                return all(
                    http.get(f"{web}/v1/messages/{mid}", headers=headers).json()["status"]
                    == "delivered"
                    for mid in ids.values()
                )

            _wait(delivered, 60)
            assert http.get(f"{flower}/").status_code == 401
            assert http.get(f"{flower}/api/tasks").status_code == 401
            assert http.get(f"{flower}/", auth=(user, password)).status_code == 200

            def sends_seen() -> dict:  # type: ignore[type-arg]
                tasks = http.get(f"{flower}/api/tasks", auth=(user, password)).json()
                names = {t.get("name") for t in tasks.values()}
                return tasks if {"smsq.send", "smsq.poll"} <= names else {}

            tasks = _wait(sends_seen, 60)
            # Beat ticked all along (its polls delivered the Keccel message), but
            # maintenance sends no task events: Flower's list is the sends and polls.
            names = {t.get("name") for t in tasks.values()}
            assert names.isdisjoint({"smsq.tick", "smsq.ui_rollup", "smsq.check_balances"})
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        sandbox.stop()
        stop_embedded_redis(tmp_path)
    # What Flower shows of each task: readable names, ids only in the arguments.
    shown = json.dumps([[t.get("name"), t.get("args"), t.get("kwargs")] for t in tasks.values()])
    for mid in ids.values():
        assert mid in shown
    for private in [*secrets, "via honcho", "243851234561", "22890443671"]:
        assert private not in shown, private
    output = log_path.read_text(errors="replace")
    for secret in secrets:
        assert secret not in output, f"a configured secret ({secret[:3]}…) is in the logs"
    assert "procfile-callback-secret" not in output
    started = {line.split("|")[0].split()[-1] for line in output.splitlines() if "|" in line}
    assert {"web.1", "worker.1", "beat.1", "flower.1"} <= started, started
    records = []
    for line in output.splitlines():
        if "|" not in line:
            continue
        payload = line.split("|", 1)[1].strip()
        if payload.startswith("{"):
            records.append(json.loads(payload))
    moves = [r for r in records if r.get("message_id") in ids.values()]
    assert moves, "no JSON log line names a message"
    assert all({"provider", "attempt", "status", "ts", "level"} <= set(r) for r in moves)
    assert {r["provider"] for r in moves} == {"keccel", "kingsms"}


def _is_secret(name: str) -> bool:
    return any(part in name for part in ("TOKEN", "PASSWORD", "API_KEY", "SECRET", "AUTH"))


def _procfile_args(app_root: Path, base_port: int) -> list[str]:
    return ["-f", str(ROOT / "Procfile"), "-d", str(app_root), "-p", str(base_port)]
