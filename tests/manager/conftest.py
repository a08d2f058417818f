"""Fixtures for the manager's tests: real manager processes on 127.0.0.1, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator

import pytest

from vmagent.manager import testing

pytest.importorskip("fastapi", reason="the manager's server needs vmagent[manager]")


class ExternalPostgres:
    """A PostgreSQL server given by $VMAGENT_TEST_PG_URL; each test database is created in it."""

    def __init__(self, url: str):
        self.base = url

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            self.base.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server for the session: $VMAGENT_TEST_PG_URL, else a private cluster of Debian's binaries."""
    if os.environ.get("VMAGENT_TEST_PG_URL"):
        yield ExternalPostgres(os.environ["VMAGENT_TEST_PG_URL"])
        return
    if testing.postgres_bin() is None:
        pytest.skip("no PostgreSQL: set VMAGENT_TEST_PG_URL or apt-get install postgresql")
    cluster = testing.PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db_kind(request: pytest.FixtureRequest) -> str:
    """The database behind the module's manager: SQLite, then PostgreSQL."""
    return str(request.param)


@pytest.fixture(scope="module")
def start(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    """Start managers (stopped at the end of the module): ``start(db_kind, *extra_args)``."""
    started = []

    def starter(
        kind: str = "sqlite",
        *extra: str,
        workers: int = 1,
        tls: bool = True,
        state_dir: Any = None,
        db: Any = None,
    ) -> testing.RunningManager:
        if db is None and kind == "postgres":
            db = request.getfixturevalue("postgres").create_database()
        directory = str(state_dir or tmp_path_factory.mktemp("manager"))
        manager = testing.start_manager(directory, db=db, workers=workers, tls=tls, extra=extra)
        manager.db = db  # type: ignore[attr-defined]
        started.append(manager)
        return manager

    yield starter
    for manager in started:
        manager.stop()


@pytest.fixture(scope="module")
def manager(start: Callable[..., Any], db_kind: str) -> testing.RunningManager:
    """One HTTPS manager per module and database kind, shared by the module's tests."""
    return start(db_kind)
