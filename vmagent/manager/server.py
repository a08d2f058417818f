"""``vmagent manager serve``: bind, write ``<state_dir>/url`` once listening, run uvicorn workers."""

from __future__ import annotations

import logging
import os
import socket
import ssl as ssl_module
from typing import Optional

from uvicorn import config as uvicorn_config

from ..errors import UsageError
from . import auth, db
from .settings import ENV_VAR, Settings

log = logging.getLogger("vmagent.manager")
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def admin_hash(state_dir: str) -> str:
    path = os.path.join(state_dir, "admin.token")
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror}",
            hint=f"run 'vmagent manager init --state-dir {state_dir}' first",
        ) from None
    if not token:
        raise UsageError(f"{path} is empty", hint="delete it and run 'vmagent manager init' again")
    return auth.digest(token)


def serve(settings: Settings, host: str, port: int, workers: int, tls: bool) -> None:
    """Serve until stopped; ``port`` 0 picks a free one. The bound URL goes to ``<state_dir>/url``."""
    import uvicorn

    state_dir = settings.state_dir or "."
    ssl = {}
    if tls:
        ssl = {
            "ssl_certfile": os.path.join(state_dir, "server.pem"),
            "ssl_keyfile": os.path.join(state_dir, "server.key"),
        }
        for path in ssl.values():
            if not os.path.exists(path):
                raise UsageError(
                    f"{path} is missing",
                    hint=f"run 'vmagent manager init --state-dir {state_dir}' "
                    "or pass --insecure-http for plain HTTP on a trusted network",
                )
    _prepare_database(settings.db_url)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{bound}"
    settings = Settings(**{**settings.__dict__, "url": url})
    os.environ[ENV_VAR] = settings.to_env()
    # VMs keep idle keep-alive connections open; do not wait on them for more than a few seconds.
    config = HardenedConfig(
        "vmagent.manager.app:factory",
        factory=True,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,
        backlog=2048,
        timeout_graceful_shutdown=3,
        **ssl,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    _announce(state_dir, url)
    log.info(
        "manager listening on %s (%d worker%s, database %s)",
        url,
        workers,
        "s" * (workers > 1),
        db.make_engine(settings.db_url).url.render_as_string(hide_password=True),
    )
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
        else:
            config.load()
            server.run(sockets=[sock])
    finally:
        _withdraw(state_dir, url)


def harden(context: ssl_module.SSLContext) -> ssl_module.SSLContext:
    """TLS 1.2 or later with forward-secret AEAD ciphers only (TLS 1.3's suites all are)."""
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    return context


class HardenedConfig(uvicorn_config.Config):
    """uvicorn's configuration, its TLS context hardened once built (in every worker process)."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            harden(self.ssl)


def _prepare_database(url: str) -> None:
    """Create the tables before any worker starts (no race on CREATE TABLE); a bad URL is a usage error."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        engine = db.make_engine(url, pool_size=1)
        db.create_all(engine)
        engine.dispose()
    except (ArgumentError, ImportError, ValueError) as exc:
        raise UsageError(
            f"--db {url!r} is not a usable database URL: {exc}",
            hint="use sqlite:////abs/path.db or postgresql://user:password@host/dbname",
        ) from None
    except SQLAlchemyError as exc:
        raise UsageError(
            f"cannot open the database {url!r}: {getattr(exc, 'orig', None) or exc}",
            hint="check that the database server runs and accepts this user",
        ) from None


def _announce(state_dir: str, url: str) -> None:
    """The socket already listens: connections queue until the workers accept them."""
    from ..core.files import write_atomic

    write_atomic(os.path.join(state_dir, "url"), url + "\n", 0o644)


def _withdraw(state_dir: str, url: str) -> None:
    path = os.path.join(state_dir, "url")
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read().strip() == url:
                os.unlink(path)
    except OSError:
        pass


def default_db(state_dir: str, url: Optional[str]) -> str:
    return url or f"sqlite:///{os.path.abspath(os.path.join(state_dir, 'manager.db'))}"
