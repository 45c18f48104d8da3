"""Shared fixtures: a tiny random chat model (fast tier) and the embedded model (slow tier)."""

from __future__ import annotations

import pytest

import mechrefusal
from mechrefusal.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> mechrefusal.Model:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def embedded_model() -> mechrefusal.Model:
    return mechrefusal.load()


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A fresh, empty cache directory for tests that exercise fetching."""
    monkeypatch.setenv("MECHREFUSAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
