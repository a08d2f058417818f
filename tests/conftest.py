"""Shared pytest set-up for vmagent's tests."""

from __future__ import annotations

import pytest

from vmagent.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at a fixed time; ``sleep`` advances it instantly."""
    return FakeClock()
