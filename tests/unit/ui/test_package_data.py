"""Every template and static file of the dashboard is package data (the wheel and the
sdist carry it; checked once by building both, kept true here by the globs)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_every_dashboard_file_is_declared_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["worker"]
    ui = ROOT / "worker" / "ui"
    files = [p for d in ("templates", "static") for p in (ui / d).iterdir() if p.is_file()]
    assert len(files) >= 9
    for path in files:
        relative = str(path.relative_to(ROOT / "worker"))
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative


def test_jinja2_is_a_dependency_with_a_lower_bound() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("jinja2>=") for d in config["project"]["dependencies"])
    dev = config["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("playwright>=") for d in dev)
