"""Shared fixtures: the repo's seeds, a clean environment, a state folder per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .pg import pg_url, postgres, store_url

__all__ = ["pg_url", "postgres", "store_url"]

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No NEWSLETTER_* leaks in from the developer's shell, and no newsletter.toml from the cwd."""
    for key in list(os.environ):
        if key.startswith("NEWSLETTER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def seeds() -> list[Path]:
    return sorted(SEEDS.glob("*.txt"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    from .helpers import make_env

    return make_env(tmp_path)
