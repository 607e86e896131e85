"""Run the sandbox: in the foreground (`smsq sandbox`) or in a thread (tests, demo)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn

from producer.embedded_redis import free_port
from worker.gateways.sandbox.app import Sandbox


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def base_url(self, provider: str) -> str:
        return f"{self.url}/{provider}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(
    port: int = 0,
    delivery_seconds: float = 2.0,
    host: str = "127.0.0.1",
    listen: Sequence[str] = (),
) -> RunningSandbox:
    """Serve the simulators over real HTTP on loopback from a background thread;
    `listen`: more addresses to serve on, on the same port (the fault suite's hosts
    in network namespaces reach it over their veth pairs)."""
    port = port or free_port()
    sandbox = Sandbox(delivery_seconds=delivery_seconds)
    config = uvicorn.Config(
        sandbox.app, host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    sockets = [_bound(address, port) for address in (host, *listen)] if listen else None
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": sockets}, name="smsq-sandbox", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox could not listen on {host}:{port}")
        time.sleep(0.02)
    return RunningSandbox(sandbox, server, thread, f"http://{host}:{port}")


def _bound(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock


def serve(port: int = 8025, delivery_seconds: float = 2.0, host: str = "127.0.0.1") -> None:
    """Serve the simulators in the foreground until Ctrl-C."""
    sandbox = Sandbox(delivery_seconds=delivery_seconds)
    uvicorn.run(sandbox.app, host=host, port=port, log_level="warning")
