"""A throw-away self-signed certificate for loopback TLS servers in tests (openssl CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, san: str) -> tuple[Path, Path]:
    """(key, certificate) for `san`, e.g. `DNS:app.test` or `IP:127.0.0.1`; one day valid."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=smsq-test"]
    subprocess.run([*command, "-addext", f"subjectAltName={san}"], check=True, capture_output=True)
    return key, cert
