"""Hosts on one machine: Linux network namespaces joined to this one by veth pairs.

Each `Host` is a network namespace with its own address, reaching this machine's
services (Redis, PostgreSQL, the gateway simulators) only over its veth pair: a
worker started in it (`Host.wrap`) is on another host as far as the network
goes. `cut` brings the pair's outer end down, so every packet between the host
and the rest is dropped silently, both ways, as when a switch or a link fails
(no reset, no error: the other side just stops answering); `heal` brings it up.

Everything is made by `Hosts` and removed by `Hosts.remove` (also on failure, as
a context manager): the namespaces, their veth pairs and addresses (deleting a
namespace deletes its veth, and that its peer). The addresses are a /24 of
10.213.0.0/16 that no interface or route of this machine uses, a /30 per host,
and traffic goes only to them. Names carry the creating process's pid, so a run
killed before it could clean up is cleaned up by the next one.

Needs root and iproute2 (`ip`); no kernel module beyond veth.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field

PREFIX = "smsq-h"  # namespace names: smsq-h<pid>-<n>
RANGE = "10.213"


class HostsUnavailable(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def why_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "no `ip` command: install iproute2 (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@dataclass
class Host:
    """One namespace: `inner` is its address, `outer` this machine's end of its pair."""

    name: str  # the namespace
    index: int
    outer_dev: str
    inner_dev: str
    outer: str
    inner: str
    cut_at: float | None = None

    def wrap(self, command: list[str]) -> list[str]:
        """`command` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def cut(self) -> None:
        """Partition: the link down, every packet to and from the host dropped."""
        _ip("link", "set", self.outer_dev, "down")
        self.cut_at = time.monotonic()

    def heal(self) -> float:
        """The link up again; how long it was down (s)."""
        _ip("link", "set", self.outer_dev, "up")
        down = time.monotonic() - (self.cut_at or time.monotonic())
        self.cut_at = None
        return down


@dataclass
class Hosts:
    """`count` hosts in a /24 of 10.213.0.0/16 that this machine does not use."""

    count: int
    hosts: list[Host] = field(default_factory=list)
    subnet: str = ""

    def __post_init__(self) -> None:
        reason = why_unavailable()
        if reason:
            raise HostsUnavailable(reason)
        remove_leftovers()
        self.subnet = _free_subnet()
        tag = f"{os.getpid() % 100000:05d}{random.randrange(100):02d}"
        try:
            for n in range(1, self.count + 1):
                self._add(n, tag)
        except BaseException:
            self.remove()
            raise

    def _add(self, n: int, tag: str) -> None:
        host = Host(
            name=f"{PREFIX}{os.getpid()}-{n}",
            index=n,
            outer_dev=f"sq{tag}o{n}"[:15],
            inner_dev=f"sq{tag}i{n}"[:15],
            outer=f"{self.subnet}.{4 * n + 1}",
            inner=f"{self.subnet}.{4 * n + 2}",
        )
        _ip("netns", "add", host.name)
        self.hosts.append(host)  # removed with the others if what follows fails
        _ip("link", "add", host.outer_dev, "type", "veth", "peer", "name", host.inner_dev)
        _ip("link", "set", host.inner_dev, "netns", host.name)
        _ip("addr", "add", f"{host.outer}/30", "dev", host.outer_dev)
        _ip("link", "set", host.outer_dev, "up")
        inside = ["-n", host.name]
        _ip(*inside, "addr", "add", f"{host.inner}/30", "dev", host.inner_dev)
        _ip(*inside, "link", "set", host.inner_dev, "up")
        _ip(*inside, "link", "set", "lo", "up")

    @property
    def outer_addresses(self) -> list[str]:
        """This machine's ends: where its services must listen for the hosts."""
        return [h.outer for h in self.hosts]

    def __getitem__(self, n: int) -> Host:
        return self.hosts[n - 1]

    def remove(self) -> None:
        """Delete every namespace made (with its veth pair and addresses)."""
        for host in self.hosts:
            _ip("netns", "delete", host.name, check=False)
            _ip("link", "delete", host.outer_dev, check=False)  # gone with its peer already
        self.hosts.clear()

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _used_addresses() -> str:
    return _ip("-o", "addr").stdout + _ip("-o", "route", "show", "table", "all").stdout


def _free_subnet() -> str:
    """A 10.213.N prefix no address or route of this machine mentions."""
    used = _used_addresses()
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    candidates.insert(0, os.getpid() % 254 + 1)  # two runs at once: most likely apart
    for n in candidates:
        prefix = f"{RANGE}.{n}"
        if f"{prefix}." not in used and f"{prefix}.0/" not in used:
            return prefix
    raise HostsUnavailable(f"no free /24 in {RANGE}.0.0/16")


def remove_leftovers() -> None:
    """Namespaces of ours whose creating process is gone (a run killed mid-way)."""
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "delete", name, check=False)


def ours() -> list[str]:
    """The namespaces this process made and has not removed."""
    mine = f"{PREFIX}{os.getpid()}-"
    return [
        line.split()[0]
        for line in _ip("netns", "list").stdout.splitlines()
        if line.startswith(mine)
    ]
