"""The engines that open an index: the indexer's and scripts' (``make_engine``, which makes
missing tables and upgrades an older explanations table), and the server's read-only one
(``make_read_engine``), with the checks that turn a bad URL, a missing driver or file, or
an index an older Spyglass wrote into one clear error."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from spyglass.storage.schema import metadata, models
from spyglass.storage.upgrade import upgrade_explanations

__all__ = [
    "DatabaseUnavailable",
    "OutdatedIndexError",
    "database_url",
    "make_engine",
    "make_read_engine",
    "display_url",
    "outdated",
    "SQLITE_READER_MMAP",
]


class DatabaseUnavailable(ValueError):
    """The database cannot be used: a bad URL, a missing driver, or no connection."""


class OutdatedIndexError(ValueError):
    """The database was written by an older Spyglass whose tables lack columns we read."""


def database_url(target: str) -> str:
    """A SQLAlchemy URL as is, except that ``postgresql://`` and ``postgres://`` get the
    psycopg 3 driver; anything else is a path to a SQLite file."""
    if "://" not in target:
        return f"sqlite:///{Path(target).expanduser()}"
    scheme, rest = target.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else target


def make_engine(target: str, *, create: bool = False, check: bool = True) -> Engine:
    """Engine for ``target`` (the indexer's, and scripts'); with ``create`` the tables are
    made if missing, and an older explanations table is upgraded in place, every row kept
    (``storage.upgrade``); ``check=False`` opens an outdated index all the same."""
    url = database_url(target)
    if url.startswith("sqlite:///") and not create:
        _sqlite_file(url)
    engine = _create(url, readonly=False)
    if create:
        try:
            upgrade_explanations(engine)
        except DBAPIError as exc:
            engine.dispose()
            where = display_url(url)
            raise DatabaseUnavailable(f"cannot upgrade {where}: {_reason(exc)}") from None
    if check:
        _check_schema(engine)
    if create:
        try:
            metadata.create_all(engine)
        except DBAPIError as exc:
            engine.dispose()
            where = engine.url.render_as_string(hide_password=True)
            raise DatabaseUnavailable(f"cannot create tables in {where}: {_reason(exc)}") from None
    return engine


def make_read_engine(target: str, *, pool_size: int = 5) -> Engine:
    """The server's engine, with ``pool_size`` connections and no overflow. It refuses
    writes (SQLite: ``PRAGMA query_only``; PostgreSQL:
    read-only transactions), and each connection reads one snapshot (SQLite: an explicit
    BEGIN; PostgreSQL: REPEATABLE READ), so a request never mixes an old index with a new
    one committed meanwhile. FileNotFoundError when there is no index to read."""
    url = database_url(target)
    if url.startswith("sqlite:///"):
        _sqlite_file(url)
    engine = _create(url, readonly=True, pool_size=pool_size)
    _check_schema(engine)
    if not inspect(engine).has_table(models.name):
        engine.dispose()
        raise FileNotFoundError(f"no Spyglass index in {display_url(url)}")
    return engine


def display_url(url: str) -> str:
    """``url`` with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _sqlite_file(url: str) -> None:
    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        raise FileNotFoundError(f"no index database at {path}")


def _create(url: str, *, readonly: bool, pool_size: int | None = None) -> Engine:
    kwargs: dict = {}
    if pool_size is not None:
        # A fixed pool: the server's reader runs at most pool_size calls at once, so a
        # caller never waits for a connection (see app/reader.py).
        kwargs |= dict(pool_size=pool_size, max_overflow=0)
    if url.startswith("sqlite"):
        # The server reads from a thread pool; SQLite connections may move between threads.
        kwargs["connect_args"] = {"check_same_thread": False}
    elif url.startswith("postgresql") and readonly:
        # Set per transaction (BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY), so it
        # holds through a connection pooler too.
        kwargs |= dict(
            isolation_level="REPEATABLE READ",
            execution_options={"postgresql_readonly": True},
            pool_pre_ping=True,  # the server outlives database restarts
        )
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        scheme = url.split("://", 1)[0]
        if scheme == "postgresql+psycopg":
            msg = f"{scheme} URLs need psycopg: pip install 'spyglass[postgres]'"
        else:
            msg = f"no database driver for {scheme} URLs: {exc}"
        raise DatabaseUnavailable(msg) from None
    except ArgumentError as exc:
        raise DatabaseUnavailable(
            f"not a usable database URL {display_url(url)!r}: {exc}"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if readonly:
            event.listen(engine, "connect", _sqlite_reader)
            event.listen(engine, "begin", _sqlite_begin)
    return engine


def _check_schema(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=True)
    try:
        problem = outdated(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseUnavailable(f"cannot open the database at {url}: {_reason(exc)}") from None
    if problem:
        engine.dispose()
        if "table explanations lacks" in problem:
            raise OutdatedIndexError(
                f"the index at {url} {problem}; `spyglass upgrade --db ...` upgrades it in "
                "place, keeping every label and explanation"
            )
        again = "a new file" if engine.dialect.name == "sqlite" else "a new database"
        raise OutdatedIndexError(
            f"the index at {url} {problem}; index again into {again} (`spyglass labels "
            "export` saves its labels first)"
        )


def _reason(exc: DBAPIError) -> str:
    """The driver's own message, first line only."""
    return (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]


def outdated(engine: Engine) -> str | None:
    """What an existing database lacks of the current schema; None if it has it all (or
    has no tables yet)."""
    tables = inspect(engine)
    for table in metadata.sorted_tables:
        if not tables.has_table(table.name):
            continue
        have = {c["name"] for c in tables.get_columns(table.name)}
        if missing := [c.name for c in table.columns if c.name not in have]:
            return f"was built by an older Spyglass (table {table.name} lacks {', '.join(missing)})"
    return None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


SQLITE_READER_MMAP = 1 << 34
"""Bytes of the index file a server connection maps (16 GiB: any demo or laptop index,
whole). Reads then come from the OS page cache shared by every connection, without a
read() per page: a cold unit page took about twice as long through reads."""


def _sqlite_reader(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA query_only=ON")
    dbapi_conn.execute(f"PRAGMA mmap_size={SQLITE_READER_MMAP}")
    # pysqlite begins no transaction before a SELECT, so each query would read the latest
    # commit; _sqlite_begin opens one per connection checkout instead.
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")
