"""canonc's own tables next to the Optuna study: budget-slot claims and the metric cache.

They live in the study's database (the SQLite file, or the PostgreSQL server every
worker shares), so whatever the workers share they share through one URL.
"""

from __future__ import annotations

import importlib.util

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..errors import InputError

SQLITE_TIMEOUT_S = 120
"""How long a SQLite writer waits for another process's lock before failing."""

METADATA = sa.MetaData()

CLAIMS = sa.Table(
    "canonc_search_claims", METADATA,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("trial", sa.Integer, nullable=False),
)
"""One row per claim of a budget slot by a trial; a slot is re-claimed (next attempt) when its trial failed."""

CACHE = sa.Table(
    "canonc_search_cache", METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
)
"""Per-sample metric values keyed by a hash of model, data, settings, configuration and sample (NULL: NaN)."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def tune_sqlite(engine: sa.Engine) -> sa.Engine:
    """Write-ahead log for a SQLite engine: readers never block the writer, and a commit needs no fsync.

    A killed process loses nothing committed (the log is in the OS's cache); only a power
    cut may lose the last commits. Connections already open are closed, so every
    connection gets the settings. Other databases are returned as they are.
    """
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        engine.dispose()
    return engine


def database_url(url: str) -> str:
    """``url`` with a driver SQLAlchemy can load: a bare ``postgresql://`` uses psycopg2 when psycopg 3 is missing.

    (SQLAlchemy 2.1 defaults ``postgresql://`` to psycopg 3; canonc's ``postgres`` extra installs psycopg2.)
    """
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def engine_kwargs(url: str) -> dict[str, object]:
    """SQLAlchemy engine options for ``url`` (SQLite: wait for locks held by other workers)."""
    return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def connect(url: str) -> sa.Engine:
    """An engine for ``url`` with canonc's tables created (several processes may race to create them)."""
    try:
        engine = tune_sqlite(sa.create_engine(url, **engine_kwargs(url)))
        try:
            METADATA.create_all(engine)
        except sa_exc.DBAPIError:  # another worker created them between the check and the CREATE: check again
            METADATA.create_all(engine)
    except sa_exc.ArgumentError as exc:
        raise InputError(f"--storage {url!r} is not a database URL; use sqlite:///study.db or postgresql://...") from exc
    except sa_exc.OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise InputError(f"cannot open --storage {redact(url)}: {first}") from exc
    except ImportError as exc:
        raise InputError(f"--storage {redact(url)} needs a database driver: {exc}; pip install 'canonc[postgres]'") from exc
    return engine


def redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return url
