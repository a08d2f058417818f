"""A manager worker's settings travel from 'manager serve' to its workers through the environment."""

from __future__ import annotations

import pytest

from vmagent.errors import UsageError
from vmagent.manager.settings import ENV_VAR, Settings


def test_settings_survive_the_trip_through_the_environment(monkeypatch):
    """What serve puts in the environment is what a worker reads back, field for field."""
    sent = Settings(db_url="sqlite:///x.db", admin_token_hash="ab" * 32, lease_seconds=12.5)
    monkeypatch.setenv(ENV_VAR, sent.to_env())
    assert Settings.from_env() == sent


def test_a_worker_started_by_hand_is_a_usage_error(monkeypatch):
    """Without its settings a worker refuses with vmagent's usage error and says how to start."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(UsageError) as refused:
        Settings.from_env()
    assert ENV_VAR in refused.value.message
    assert "vmagent manager serve" in (refused.value.hint or "")
