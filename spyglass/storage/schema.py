"""The index's tables, the engines that open it, and the blobs its arrays are stored as."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sqlalchemy.dialects.postgresql  # noqa: F401 - registers to_tsvector & co. for func
from sqlalchemy import (
    DDL,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    inspect,
    literal_column,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

__all__ = [
    "FreeText",
    "metadata",
    "models",
    "sources",
    "sequences",
    "vocab",
    "units",
    "examples",
    "samples",
    "explanations",
    "explain_failures",
    "token_units",
    "unit_key",
    "TOKEN_BLOCK",
    "SLUG",
    "RESERVED",
    "DatabaseUnavailable",
    "OutdatedIndexError",
    "database_url",
    "make_engine",
    "make_read_engine",
    "display_url",
    "outdated",
    "SQLITE_READER_MMAP",
    "to_blob",
    "int_blob",
    "from_int_blob",
]

# PostgreSQL text cannot hold NUL, which corpus text may and a byte-level tokenizer's token
# for byte 0 does. There NUL is stored as ESC "0" and ESC as ESC ESC (ESC: U+FFFF, a
# noncharacter), undone on reading; SQLite stores text as given.
_ESC = "\uffff"
_UNESCAPE = re.compile(_ESC + "(.)", re.DOTALL)


def _pg_escape(text: str) -> str:
    if "\x00" not in text and _ESC not in text:
        return text
    return text.replace(_ESC, _ESC + _ESC).replace("\x00", _ESC + "0")


def _pg_unescape(text: str) -> str:
    if _ESC not in text:
        return text
    return _UNESCAPE.sub(lambda m: "\x00" if m[1] == "0" else _ESC, text)


class _PgText(TypeDecorator):
    """TEXT on PostgreSQL with NUL escaped (see `_pg_escape`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else _pg_escape(value)

    def process_result_value(self, value, dialect):
        return None if value is None else _pg_unescape(value)


FreeText = Text().with_variant(_PgText(), "postgresql")
"""Text from the corpus or the tokenizer, which may hold any character."""

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(200), unique=True, nullable=False),
    Column("spec", Text, nullable=False),
    Column("corpus", Text, nullable=False),
    Column("n_layers", Integer, nullable=False),
    Column("d_model", Integer, nullable=False),
    Column("d_vocab", Integer, nullable=False),
    Column("seq_len", Integer, nullable=False),
    Column("n_sequences", Integer, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("skip_first", Integer, nullable=False),
    Column("top_k", Integer, nullable=False),
    Column("options", Text),
    Column("seconds", Float, nullable=False),
    Column("created", String(40), nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", ForeignKey("models.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("layer", Integer, nullable=False),
    Column("hook", String(200), nullable=False),
    Column("n_units", Integer, nullable=False),
    Column("sae", Text),
    Column("info", Text),
)

sequences = Table(
    "sequences",
    metadata,
    Column("model_id", ForeignKey("models.id"), primary_key=True),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("document", FreeText, nullable=False),
    Column("offset", Integer, nullable=False),
    Column("tokens", LargeBinary, nullable=False),
)

vocab = Table(
    "vocab",
    metadata,
    Column("model_id", ForeignKey("models.id"), primary_key=True),
    Column("token_id", Integer, primary_key=True, autoincrement=False),
    Column("text", FreeText, nullable=False),
)

units = Table(
    "units",
    metadata,
    Column("source_id", ForeignKey("sources.id"), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("max_act", Float, nullable=False),
    Column("density", Float, nullable=False),
    Column("logits", Text, nullable=False),
    Column("stats", Text),
    Index("units_by_max", "source_id", "max_act"),
    Index("units_by_density", "source_id", "density"),
)


def _example_table(name: str) -> Table:
    """A table of example windows, one row per unit holding all of its examples packed:
    the top examples, or the interval samples. A row is what a unit page reads, and an
    index writes 70 examples per unit: packed, a write is one row per unit, not 70
    (``bench/insert.py``: SQLite took 200,000 rows a second, whatever their size)."""
    return Table(
        name,
        metadata,
        Column("source_id", ForeignKey("sources.id"), primary_key=True),
        Column("unit", Integer, primary_key=True, autoincrement=False),
        Column("n", Integer, nullable=False),
        # int32 [n, 6], little-endian: interval (0 for top examples), rank, sequence_id,
        # position, window_start, window length; the examples in order.
        Column("fields", LargeBinary, nullable=False),
        Column("vals", LargeBinary, nullable=False),  # float32 [n]: the values
        # The windows one after another: float32 for top examples, float16 for samples.
        Column("acts", LargeBinary, nullable=False),
    )


examples = _example_table("examples")
samples = _example_table("samples")

explanations = Table(
    "explanations",
    metadata,
    Column("id", Integer, primary_key=True),
    # The source it is shown on now. NULL while no source of its model with its name and
    # unit key is indexed: a re-index detaches a model's explanations and attaches each to
    # the new source that is the same thing (storage.kept), so no re-index ever
    # deletes one; an explanation made on a source that is gone waits for it to come back.
    Column("source_id", ForeignKey("sources.id"), nullable=True),
    Column("model", String(200), nullable=False),  # its model's slug
    Column("source", String(200), nullable=False),  # its source's name
    # What the units are (`unit_key`: the model's spec, the source's kind and hook, its
    # SAE): a re-index of another model or SAE under the same names gets none of these.
    Column("unit_key", String(32), nullable=False),
    Column("unit", Integer, nullable=False),
    Column("method", String(40), nullable=False),  # token-pattern, llm or human
    # A hash of what made it (explainer, its model, prompt version, scorers): a run with
    # the same settings skips the units that have one.
    Column("settings", String(64), nullable=False),
    Column("text", FreeText, nullable=False),
    Column("evidence", Text),  # JSON: what the explanation was made from
    Column("scores", Text),  # JSON: {scorer: {"value", "lo", "hi", "n"}}
    Column("explainer", Text),  # the LLM's name, or a label's author
    Column("created", String(40), nullable=False),
    # The `created` of the index it was made on, and of the one its scores were measured
    # on (`spyglass explain --rescore` measures them again on a newer index).
    Column("indexed", String(40), nullable=False),
    Column("scored", String(40)),
    Index("explanations_by_unit", "source_id", "unit"),
    Index("explanations_by_name", "model", "source", "unit"),
)
# Full-text search over the text, in the database: FTS5 on SQLite (an external-content
# table kept in step by triggers), a GIN index on the English tsvector on PostgreSQL.
_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5("
    "text, content='explanations', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS explanations_fts_insert AFTER INSERT ON explanations BEGIN "
    "INSERT INTO explanations_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS explanations_fts_delete AFTER DELETE ON explanations BEGIN "
    "INSERT INTO explanations_fts(explanations_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS explanations_fts_update AFTER UPDATE ON explanations BEGIN "
    "INSERT INTO explanations_fts(explanations_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO explanations_fts(rowid, text) VALUES (new.id, new.text); END",
]
for _statement in _SQLITE_FTS:
    event.listen(explanations, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
TSVECTOR = func.to_tsvector(literal_column("'english'"), explanations.c.text)
Index("explanations_text", TSVECTOR, postgresql_using="gin").ddl_if(dialect="postgresql")

explain_failures = Table(
    "explain_failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", ForeignKey("sources.id"), nullable=False, index=True),
    Column("unit", Integer, nullable=False),
    Column("method", String(40), nullable=False),
    Column("settings", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("created", String(40), nullable=False),
)

token_units = Table(
    "token_units",
    metadata,
    Column("source_id", ForeignKey("sources.id"), primary_key=True),
    Column("effect", String(20), primary_key=True),  # fires, promotes or suppresses
    Column("block", Integer, primary_key=True, autoincrement=False),  # token_id // TOKEN_BLOCK
    # Sorted by token: int32 token ids, int32 units, float32 weights (indexer.token_index).
    Column("tokens", LargeBinary, nullable=False),
    Column("units", LargeBinary, nullable=False),
    Column("weights", LargeBinary, nullable=False),
)
TOKEN_BLOCK = 1024

_CHILDREN = (explain_failures, token_units, examples, samples, units)
"""Deleted with their sources on a re-index; explanations are detached instead."""
_MODEL_CHILDREN = (vocab, sequences)  # keyed by model_id
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RESERVED = {"api", "static", "docs", "redoc", "openapi.json", "sequences", "healthz"}


def unit_key(spec: str, kind: str, hook: str, sae: str | None) -> str:
    """What a source's units are, as a short stable text: two indexes' sources with the same
    key hold the same units, whatever the corpus (an explanation made on one is one of the
    other's)."""
    what = "\x1f".join((spec, kind, hook, sae or ""))
    return hashlib.blake2b(what.encode(), digest_size=8).hexdigest()


# ---- engine ---------------------------------------------------------------------


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
        from spyglass.storage.upgrade import upgrade_explanations

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


def to_blob(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def int_blob(values: Iterable[int]) -> bytes:
    return to_blob(np.fromiter(values, dtype=np.int64), "i4")


def from_int_blob(blob: bytes) -> list[int]:
    return np.frombuffer(blob, dtype="<i4").tolist()
