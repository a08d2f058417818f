"""The manager's tables (SQLAlchemy Core) and the engine: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

metadata = MetaData()
# Counters are BIGINT: the API accepts any integer up to 2**63 - 1 (see web.read_body), and an
# INTEGER column would turn a large but valid number into a PostgreSQL error.
ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

vms = Table(
    "vms",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("instance_id", String(128), nullable=False),
    Column("hostname", String(256), nullable=False, default=""),
    Column("ip", String(64), nullable=False, default=""),
    Column("site", String(256), nullable=False, default=""),
    Column("ce", String(256), nullable=False, default=""),
    Column("image", String(256), nullable=False, default=""),
    Column("running_pod", String(256), nullable=False, default=""),
    Column("vo", String(256), nullable=False, default=""),
    Column("vmagent_version", String(64), nullable=False, default=""),
    Column("total_cores", BigInteger, nullable=False, default=0),
    Column("total_memory_mb", BigInteger, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("state_reason", Text, nullable=False, default=""),
    Column("state_since", Float, nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("last_heartbeat", Float),
    Column("seq", BigInteger),
    Column("load1", Float),
    Column("uptime", Float),
    Column("free_cores", BigInteger),
    Column("payloads_running", BigInteger, nullable=False, default=0),
    Column("payloads_done", BigInteger, nullable=False, default=0),
    Column("payloads_failed", BigInteger, nullable=False, default=0),
    Column("error_code", String(64)),
    Column("vacuum_code", BigInteger),
    Column("halt_message", Text),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token_expires_at", Float),
    Column("revoked_at", Float),
    Index("ix_vms_state", "state"),
    Index("ix_vms_registered", "registered_at"),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("vm_id", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Index("ix_transitions_vm", "vm_id", "id"),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("vm_id", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("load1", Float),
    Column("cpu_percent", Float),
    Column("free_cores", BigInteger),
    Column("total_cores", BigInteger),
    Column("running", BigInteger),
    Index("ix_heartbeats_vm", "vm_id", "id"),
    Index("ix_heartbeats_at", "at"),
)

instructions = Table(
    "instructions",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("vm_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("shutdown_at", Float),
    Column("reason", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("acked_at", Float),
    Index("ix_instructions_pending", "vm_id", "acked_at"),
)

payloads = Table(
    "payloads",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("doc", Text, nullable=False),
    Column("cores", BigInteger, nullable=False),
    Column("whole_node", Boolean, nullable=False, default=False),
    Column("memory_mb", BigInteger, nullable=False, default=0),
    Column("wall_seconds", Float),
    Column("running_pod", String(256), nullable=False, default=""),
    Column("vo", String(256), nullable=False, default=""),
    Column("priority", BigInteger, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("vm_id", String(64)),
    Column("leased_at", Float),
    Column("lease_expires_at", Float),
    Column("attempts", BigInteger, nullable=False, default=0),
    Column("outcome", String(16)),
    Column("finished_at", Float),
    Index("ix_payloads_queue", "state", "priority", "submitted_at"),
    Index("ix_payloads_vm", "vm_id", "state"),
)

results = Table(
    "results",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("payload_id", String(128), nullable=False),
    Column("vm_id", String(64), nullable=False),
    Column("attempt", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("cores", BigInteger, nullable=False),
    Column("wall_seconds", Float, nullable=False, default=0.0),
    Column("cpu_seconds", Float),
    Column("finished_at", Float, nullable=False),
    Column("doc", Text, nullable=False),
    Index("ix_results_payload", "payload_id", "attempt", unique=True),
    Index("ix_results_finished", "finished_at"),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("site", String(256), nullable=False, default=""),
    Column("ce", String(256), nullable=False, default=""),
    Column("image", String(256), nullable=False, default=""),
    Column("running_pod", String(256), nullable=False, default=""),
    Column("vo", String(256), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float),  # the latest registration
    Column("vm_id", String(64)),  # the VM it registered
    # added after the first release: ``create_all`` adds them to an existing database
    Column("max_uses", BigInteger, nullable=False, default=1, server_default=text("1")),
    Column("uses", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("revoked_at", Float),
)
# Columns added to a table after the first release, with what fills them in for existing rows.
ADDED = {
    "enrolments": {
        "max_uses": "BIGINT NOT NULL DEFAULT 1",
        "uses": "BIGINT NOT NULL DEFAULT 0",
        "revoked_at": "DOUBLE PRECISION",
    }
}
BACKFILL = {("enrolments", "uses"): "UPDATE enrolments SET uses = 1 WHERE used_at IS NOT NULL"}


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and ``synchronous=NORMAL``.

    WAL with NORMAL keeps every committed transaction across a crash of the manager process
    (only an operating-system crash may lose the last few), at a fraction of the fsync cost.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Take the write lock at BEGIN: a deferred transaction that reads, then writes, fails with
        # "database is locked" when another process committed in between; IMMEDIATE waits instead.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # Enough pooled connections for the request thread pool (40 threads): an overflow connection
    # is closed on return, and a new PostgreSQL connection costs a server process fork.
    return create_engine(url, pool_size=max(pool_size, 32), max_overflow=8, pool_recycle=3600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_all(engine: Engine) -> None:
    """Create missing tables and add missing columns (idempotent; several processes may race).

    There is no migration framework: the few columns added since the first release are added
    here by ``ALTER TABLE ... ADD COLUMN`` with a default, so an existing database keeps working
    with no step of the operator's.
    """
    metadata.create_all(engine, checkfirst=True)
    for table, columns in ADDED.items():
        for name, ddl in columns.items():
            _add_column(engine, table, name, ddl)


def _add_column(engine: Engine, table: str, name: str, ddl: str) -> None:
    if name in {c["name"] for c in inspect(engine).get_columns(table)}:
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")
            if (table, name) in BACKFILL:
                conn.exec_driver_sql(BACKFILL[(table, name)])
    except DBAPIError:
        # another manager process added it meanwhile; anything else shows when it is missing
        if name not in {c["name"] for c in inspect(engine).get_columns(table)}:
            raise
