"""The embedded stack of `smsq dev` and `smsq demo`: Redis, SQLite, worker, beat, web, sandbox.

Every process is real (a Celery worker and beat as subprocesses, uvicorn for
web, the simulators over loopback); the stack points every provider at the
sandbox with the sandbox's credentials, so a demo never reaches a real gateway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from producer.embedded_redis import ensure_embedded_redis, running_url, stop_embedded_redis
from producer.queues import WORKER_QUEUES
from producer.settings import STACK_ENV, provider_names, reload_settings
from worker.gateways import registry
from worker.gateways.sandbox.server import RunningSandbox, free_port, start_in_thread

SANDBOX_SENDER = "SMSQ"


def reset_process_state() -> None:
    """This process's cached settings, broker URL, publisher and store engine follow
    the environment again (a new stack, or a test that changed SMSQ_*)."""
    from producer import db
    from producer.enqueue import reset_publisher
    from producer.queues import broker_url

    reload_settings()
    broker_url.cache_clear()
    reset_publisher()
    db.reset_engine()


def sandbox_env(sandbox_url: str, providers: list[str] | None = None) -> dict[str, str]:
    """SMSQ_* variables pointing `providers` at a sandbox with its credentials."""
    env: dict[str, str] = {}
    for name in providers or list(provider_names()):
        spec = registry.spec(name)
        env[f"SMSQ_{name.upper()}_BASE_URL"] = f"{sandbox_url}/{name}"
        env[f"SMSQ_{name.upper()}_SENDER"] = SANDBOX_SENDER
        for field_name, var in spec.credential_env().items():
            env[var] = spec.sandbox_credentials[field_name]
    return env


@dataclass(frozen=True)
class Placement:
    """A process run as if on another host: under a command prefix (the fault suite's
    `ip netns exec NS`), reaching this machine's services (Redis, the store, the
    sandbox) at `address` instead of loopback; web stays where gateways push to it."""

    prefix: tuple[str, ...]
    address: str

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {
            key: value.replace("127.0.0.1", self.address)
            if key.startswith("SMSQ_") and key != "SMSQ_PUBLIC_URL"
            else value
            for key, value in env.items()
        }


@dataclass
class Stack:
    """The processes of one smsq deployment on this machine.

    `workers=N` starts N worker processes named `w1`..`wN` (Celery node names
    `w1@host`.., as on N hosts), `beats=N` N beat processes `beat1`..; with one
    of each they are `worker` and `beat`. `kill`, `restart`, `stop_redis` and
    `start_redis` are the fault suite's handles. `placements` puts processes on other
    hosts (network namespaces); `listen`: the addresses besides loopback where the
    embedded Redis and the sandbox accept them.
    """

    data_dir: Path
    flower: bool = False
    delivery_seconds: float = 3.0
    worker_concurrency: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    web_port: int = 0
    workers: int = 1
    beats: int = 1
    web: bool = True
    app: str = "worker.celery_app"  # the Celery app module of workers (the benchmark adds a task)
    broker: str | None = None  # SMSQ_BROKER_URL of a Redis run elsewhere (a Sentinel group)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    sandbox: RunningSandbox | None = None
    started_redis: bool = False
    redis_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    exported: dict[str, str] = field(default_factory=dict)  # the SMSQ_* this stack set
    placements: dict[str, Placement] = field(default_factory=dict)
    listen: tuple[str, ...] = ()

    @property
    def worker_names(self) -> list[str]:
        return ["worker"] if self.workers == 1 else [f"w{n}" for n in range(1, self.workers + 1)]

    @property
    def beat_names(self) -> list[str]:
        return ["beat"] if self.beats == 1 else [f"beat{n}" for n in range(1, self.beats + 1)]

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, providers: list[str] | None = None) -> None:
        from producer.queues import expect_embedded_redis

        expect_embedded_redis()
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        broker = self.broker or os.environ.get("SMSQ_BROKER_URL")
        if not broker:
            self.started_redis = running_url(self.data_dir) is None
            broker = ensure_embedded_redis(self.data_dir, listen=self.listen)
        self.redis_port = (
            int(broker.rsplit(":", 1)[1].split("/")[0]) if self.started_redis else None
        )
        self.sandbox = start_in_thread(delivery_seconds=self.delivery_seconds, listen=self.listen)
        self.web_port = self.web_port or free_port()
        env = {
            "SMSQ_DATA_DIR": str(self.data_dir),
            "SMSQ_BROKER_URL": broker,
            "SMSQ_TICK_SECONDS": "1",
            "SMSQ_POLL_SCHEDULE": "1,1,2,3,5,10",
            "SMSQ_RETRY_BASE_SECONDS": "1",
            # The dev/demo/test stacks send many messages to a few sandbox numbers: the
            # per-number limit (default 10/hour) would refuse them. Production keeps it.
            "SMSQ_RECIPIENT_LIMIT": "off",
            # Gateways (the sandbox) reach this stack's web process for PUSH reports.
            "SMSQ_PUBLIC_URL": f"http://127.0.0.1:{self.web_port}",
            **sandbox_env(self.sandbox.url, providers),
            **self.extra_env,
        }
        os.environ.update(env)
        self.exported = env
        self.env = {**os.environ}
        reset_process_state()  # a second stack in one process gets its own Redis and store
        from producer import db

        db.get_engine()  # schema up to date before any process starts
        for name in self.worker_names:
            self._spawn(name, self.worker_command("smsq" if name == "worker" else name))
        for name in self.beat_names:
            self._spawn(name, self.beat_command())
        if not self.web:
            self.wait_ready()
            return
        self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "worker.web:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.web_port),
                "--log-level",
                "warning",
            ],
        )
        if self.flower:
            command = flower_command(port=5555)
            self.env["FLOWER_BASIC_AUTH"] = os.environ["FLOWER_BASIC_AUTH"]
            self._spawn("flower", command)
        self.wait_ready()

    def publish_env(self) -> Path:
        """Write `stack.env` under the data dir (`producer.settings.stack_env_file`):
        what a second shell's `smsq` or producer needs to reach this stack. Sandbox
        credentials only; readable by this user alone."""
        path = self.data_dir / STACK_ENV
        lines = [f"# smsq dev stack, pid {os.getpid()}"]
        lines += [f"{key}={value}" for key, value in sorted(self.exported.items())]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def worker_command(self, name: str = "smsq") -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-P",
            "threads",
            "-c",
            str(self.worker_concurrency),
            "-E",
            "-Q",
            WORKER_QUEUES,
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
        ]

    def beat_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "beat",
            "-S",
            "worker.beat.SmsqScheduler",
            "--loglevel",
            "INFO",
        ]

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.data_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (kept for the child)
        self.commands[name] = command
        env, placement = self.env, self.placements.get(name)
        if placement is not None:
            command, env = [*placement.prefix, *command], placement.env(env)
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child has its own descriptor

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process's group (SIGKILL: a crash, in-flight work and all) and reap it."""
        proc = self.processes[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start a stopped or killed process again with its first command."""
        proc = self.processes.get(name)
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._spawn(name, self.commands[name])

    def revive(self) -> dict[str, int]:
        """Restart every process that exited on its own, as a supervisor does (systemd's
        Restart=on-failure, compose's restart policy); {name: its exit code}."""
        exited = {
            name: proc.returncode
            for name, proc in self.processes.items()
            if proc.poll() is not None
        }
        for name in exited:
            self._spawn(name, self.commands[name])
        return exited

    def stop_redis(self) -> None:
        """Shut the embedded Redis down (SHUTDOWN, AOF flushed), keeping its port."""
        if self.redis_port is None:
            raise RuntimeError("this stack did not start the embedded Redis")
        stop_embedded_redis(self.data_dir)

    def start_redis(self) -> None:
        """Start the embedded Redis again on the same port; it reloads its AOF."""
        if self.redis_port is None:
            raise RuntimeError("this stack did not start the embedded Redis")
        ensure_embedded_redis(self.data_dir, port=self.redis_port, listen=self.listen)

    def log_tails(self, chars: int = 2000) -> str:
        """The end of every process's log, for a stack that did not come up."""
        return "\n".join(
            f"== {log.name}\n{log.read_text(errors='replace')[-chars:]}"
            for log in sorted((self.data_dir / "logs").glob("*.log"))
        )

    def pids(self, name: str) -> list[int]:
        """The pids of process `name` and its descendants (from /proc)."""
        root = self.processes[name].pid
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def peak_rss_mb(self, name: str) -> float:
        """Peak resident memory (VmHWM) of process `name` and its descendants, in MB."""
        total_kb = 0
        for pid in self.pids(name):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
            except OSError:
                continue
        return total_kb / 1024

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker answers a ping and web answers /healthz."""
        import httpx
        import redis
        from kombu.exceptions import OperationalError

        from producer.enqueue import publisher, reset_publisher

        deadline = time.monotonic() + timeout
        worker_ok = web_ok = False
        web_ok = not self.web
        while time.monotonic() < deadline and not (worker_ok and web_ok):
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; see {self.data_dir}/logs/{name}.log"
                    )
            if not worker_ok:
                try:
                    worker_ok = len(publisher().control.ping(timeout=0.5) or []) >= self.workers
                except (OSError, redis.RedisError, OperationalError):  # Redis just restarted:
                    reset_publisher()  # its pooled connections are dead; ask again
                    worker_ok = False
            if not web_ok:
                try:
                    web_ok = httpx.get(f"{self.web_url}/healthz", timeout=1).status_code < 500
                except httpx.HTTPError:
                    web_ok = False
            time.sleep(0.2)
        if not (worker_ok and web_ok):
            raise RuntimeError(
                f"the stack did not come up in {timeout:.0f}s; see {self.data_dir}/logs"
            )

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        if self.started_redis:
            stop_embedded_redis(self.data_dir)
            self.started_redis = False

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def flower_command(port: int = 5555) -> list[str]:
    """Flower with basic auth from SMSQ_FLOWER_BASIC_AUTH (required)."""
    auth = os.environ.get("SMSQ_FLOWER_BASIC_AUTH", "")
    if ":" not in auth:
        raise SystemExit(
            "smsq: error: SMSQ_FLOWER_BASIC_AUTH must be set to user:password to start Flower"
        )
    os.environ["FLOWER_BASIC_AUTH"] = auth  # by environment: never on a command line (ps)
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
    ]
