"""`keep_freed_memory`: glibc's thresholds set once per process, the environment's settings respected, and
the hardware record saying which."""

import sys

import pytest

from mechrefusal.core import memory
from mechrefusal.core.precision import hardware


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not set the thresholds yet (they stay set after the test: they are harmless)."""
    monkeypatch.setattr(memory, "_kept", False)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)


def test_the_thresholds_are_set_on_linux_and_recorded_beside_timings(fresh):
    assert hardware()["keeps_freed_memory"] is False
    kept = memory.keep_freed_memory()
    assert kept is (sys.platform == "linux")  # glibc's mallopt; nothing to set elsewhere
    assert memory.freed_memory_kept() is kept
    assert hardware()["keeps_freed_memory"] is kept
    assert memory.keep_freed_memory() is kept  # a second call changes nothing


@pytest.mark.parametrize("variable", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"])
def test_a_threshold_set_in_the_environment_is_left_to_it(fresh, monkeypatch, variable):
    monkeypatch.setenv(variable, "131072")
    assert memory.keep_freed_memory() is False
    assert hardware()["keeps_freed_memory"] is False
