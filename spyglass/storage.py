"""Storage: the schema, the engine, and every query. The indexer writes, the app reads.

Any SQLAlchemy URL works; a plain path means SQLite, and ``postgresql://`` URLs use
psycopg 3 (``pip install 'spyglass[postgres]'``). The indexer writes a whole index in one
transaction, so readers keep seeing the last complete index until it commits: SQLite in
WAL mode, PostgreSQL by MVCC. The server's engine (`make_read_engine`) refuses writes
and reads each request from one snapshot, so no page mixes an old index with a new one.
Arrays (token ids, activation windows) are stored as little-endian blobs.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import (
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
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

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

_CHILDREN = (examples, samples, units)  # keyed by source_id
_MODEL_CHILDREN = (vocab, sequences)  # keyed by model_id
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RESERVED = {"api", "static", "docs", "redoc", "openapi.json", "sequences", "healthz"}


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


def make_engine(target: str, *, create: bool = False) -> Engine:
    """Engine for ``target`` (the indexer's, and scripts'); with ``create`` the tables are
    made if missing."""
    url = database_url(target)
    if url.startswith("sqlite:///") and not create:
        _sqlite_file(url)
    engine = _create(url, readonly=False)
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
        again = "a new file" if engine.dialect.name == "sqlite" else "a new database"
        raise OutdatedIndexError(f"the index at {url} {problem}; index again into {again}")


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


# ---- records ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    id: int
    slug: str
    """URL name of the indexed model."""
    spec: str
    """What `load_model` needs to load it again for live requests."""
    corpus: str
    n_layers: int
    d_model: int
    d_vocab: int
    seq_len: int
    """Most tokens a sequence holds: a document's last sequence may hold fewer."""
    n_sequences: int
    n_tokens: int
    """Real tokens of the sequences (BOS included; a short sequence's padding was never
    part of the index)."""
    skip_first: int
    """Positions at the start of each sequence left out of unit statistics."""
    top_k: int
    seconds: float
    """Wall time of the indexing run."""
    created: str
    options: dict | None = None
    """TransformerLens loading options of the indexed model (its SAEs' training options)."""

    @property
    def unit_tokens(self) -> int:
        """Tokens each unit's statistics were taken over: the real tokens less the first
        ``skip_first`` of each sequence (every sequence holds at least one token)."""
        return self.n_tokens - self.n_sequences * self.skip_first


@dataclass(frozen=True)
class SourceRow:
    id: int
    model_id: int
    name: str
    """URL name, e.g. ``5-mlp``."""
    kind: str
    layer: int
    hook: str
    """TransformerLens hook point the units are read from."""
    n_units: int
    sae: str | None = None
    """For SAE latents: the folder the SAE was loaded from."""
    info: dict | None = None
    """For SAE latents: the SAE's config and metrics (training and eval)."""


@dataclass(frozen=True)
class UnitRow:
    source_id: int
    idx: int
    max_act: float
    density: float
    logits: dict
    """``{"top": [[token_id, value], ...], "bottom": [...]}`` of direction @ W_U."""
    stats: dict | None = None
    """Histograms, intervals and neighbours (see indexer.pipeline.unit_stats)."""


@dataclass(frozen=True)
class ExampleRow:
    rank: int
    sequence_id: int
    position: int
    """Position of the max token within its sequence."""
    value: float
    window_start: int
    """Sequence position of ``acts[0]``."""
    acts: list[float]


@dataclass(frozen=True)
class SequenceRow:
    id: int
    document: str
    offset: int
    """Index of this sequence's first document token in the document."""
    tokens: list[int]
    """Its real tokens, BOS first when the model uses one: ``seq_len`` of them, or fewer in
    a document's last sequence (never padding)."""


# ---- writing (indexer) -------------------------------------------------------------


def check_slug(slug: str) -> None:
    if not SLUG.match(slug) or slug in RESERVED or slug.endswith(".json"):
        raise ValueError(
            f"invalid model name {slug!r}: use letters, digits, '.', '_' or '-' "
            f"(not one of {sorted(RESERVED)})"
        )


def replace_model(conn: Connection, slug: str, **fields) -> int:
    """Delete any earlier index called ``slug`` and insert a fresh model row.

    Runs inside the caller's transaction: readers see the old index until commit.
    """
    check_slug(slug)
    old = conn.execute(select(models.c.id).where(models.c.slug == slug)).scalar()
    if old is not None:
        source_ids = select(sources.c.id).where(sources.c.model_id == old)
        for table in _CHILDREN:
            conn.execute(delete(table).where(table.c.source_id.in_(source_ids)))
        conn.execute(delete(sources).where(sources.c.model_id == old))
        for table in _MODEL_CHILDREN:
            conn.execute(delete(table).where(table.c.model_id == old))
        conn.execute(delete(models).where(models.c.id == old))
    fields.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    fields.setdefault("seconds", 0.0)
    fields.setdefault("n_sequences", 0)
    fields.setdefault("n_tokens", 0)
    return conn.execute(insert(models).values(slug=slug, **fields)).inserted_primary_key[0]


def finish_model(
    conn: Connection,
    model_id: int,
    *,
    n_sequences: int,
    seconds: float,
    n_tokens: int | None = None,
) -> None:
    """Record the finished run's counts (``n_tokens``: real tokens; kept as is if None)."""
    counts = {"n_sequences": n_sequences, "seconds": seconds}
    if n_tokens is not None:
        counts["n_tokens"] = n_tokens
    conn.execute(models.update().where(models.c.id == model_id).values(**counts))


def _bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    """Rows straight to the driver: SQLAlchemy's per-row parameter processing costs more
    than the database's own insert for the million example rows of an index. PostgreSQL
    through psycopg gets COPY (3x an executemany there); others, executemany."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        rows = _pg_free_text(conn, table, columns, rows)
        if conn.dialect.driver == "psycopg":
            _copy(conn, table, columns, rows)
            return
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
    if conn.dialect.positional:
        order = [columns.index(name) for name in compiled.positiontup]
        if order == list(range(len(columns))):
            params = rows
        else:
            pick = operator.itemgetter(*order)
            params = [pick(r) for r in rows]
    else:
        params = [dict(zip(columns, r, strict=True)) for r in rows]
    conn.exec_driver_sql(str(compiled), params)


def _pg_free_text(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]
) -> list[tuple]:
    """``rows`` with NUL escaped in `FreeText` columns, as the type does on other paths."""
    free = {
        i
        for i, c in enumerate(columns)
        if isinstance(table.c[c].type.dialect_impl(conn.dialect), _PgText)
    }
    if not free:
        return rows
    return [tuple(_pg_escape(v) if i in free else v for i, v in enumerate(row)) for row in rows]


def _copy(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(c) for c in columns)
    sql = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
    dbapi = conn.dialect.loaded_dbapi
    try:
        # The transaction's own connection: COPY joins the index's one transaction.
        with conn.connection.dbapi_connection.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as exc:  # raised as SQLAlchemy raises the other paths' errors
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, dialect=conn.dialect) from exc


def add_sequences(conn: Connection, model_id: int, rows: Sequence[tuple[int, str, int, list[int]]]):
    """Insert ``(id, document, offset, tokens)`` rows."""
    _bulk_insert(
        conn,
        sequences,
        ("model_id", "id", "document", "offset", "tokens"),
        [(model_id, i, d, o, int_blob(t)) for i, d, o, t in rows],
    )


def add_vocab(conn: Connection, model_id: int, texts: Sequence[str]) -> None:
    _bulk_insert(
        conn,
        vocab,
        ("model_id", "token_id", "text"),
        [(model_id, i, t) for i, t in enumerate(texts)],
    )


def add_source(conn: Connection, model_id: int, *, info: dict | None = None, **fields) -> int:
    info_json = json.dumps(info) if info is not None else None
    q = insert(sources).values(model_id=model_id, info=info_json, **fields)
    return conn.execute(q).inserted_primary_key[0]


def add_units(
    conn: Connection,
    source_id: int,
    max_act: np.ndarray,
    density: np.ndarray,
    logits: Sequence[dict],
    stats: Sequence[dict | None] | None = None,
    *,
    first: int = 0,
) -> None:
    """One row per unit ``first .. first + n - 1``; ``logits[u]`` is
    ``{"top": [[id, value], ...], "bottom": ...}``."""
    stats = stats if stats is not None else [None] * len(logits)
    _bulk_insert(
        conn,
        units,
        ("source_id", "idx", "max_act", "density", "logits", "stats"),
        [
            (source_id, u, float(m), float(d), json.dumps(lg), json.dumps(st) if st else None)
            for u, (m, d, lg, st) in enumerate(
                zip(max_act, density, logits, stats, strict=True), start=first
            )
        ],
    )


@dataclass(frozen=True)
class ExampleColumns:
    """Top examples of many units, column-wise (one entry per example)."""

    unit: np.ndarray
    rank: np.ndarray
    sequence_id: np.ndarray
    position: np.ndarray
    value: np.ndarray
    windows: np.ndarray
    """[n, W] float32 values around each example, NaN off its sequence."""
    first: np.ndarray
    """[n] the first position of each window inside the sequence (its ``window_start``
    relative to the window's own start)."""
    last: np.ndarray
    """[n] one past the last inside."""
    before: int
    """Positions in a window before its example."""


def add_examples(
    conn: Connection, source_id: int, ex: ExampleColumns, interval: np.ndarray | None = None
) -> None:
    """Top examples; or, with ``interval`` (one entry per example), interval samples,
    whose windows are float16 (as the indexer keeps them). One row per unit; each window
    is stored from ``first`` to ``last``, the part inside its sequence. Units come in
    ascending order, and a unit's examples in the order they are read back."""
    table = examples if interval is None else samples
    _bulk_insert(conn, table, EXAMPLE_COLUMNS, pack_examples(source_id, ex, interval))


EXAMPLE_COLUMNS = ("source_id", "unit", "n", "fields", "vals", "acts")


def pack_examples(
    source_id: int, ex: ExampleColumns, interval: np.ndarray | None = None
) -> list[tuple]:
    """``add_examples``' rows (``EXAMPLE_COLUMNS``), one per unit."""
    dtype = "<f4" if interval is None else "<f2"
    n = ex.unit.shape[0]
    if not n:
        return []
    unit = np.asarray(ex.unit)
    if (np.diff(unit) < 0).any():
        raise ValueError("examples must come unit by unit, in ascending order")
    length = np.asarray(ex.last) - np.asarray(ex.first)
    fields = np.stack(
        [
            np.zeros(n, np.int64) if interval is None else np.asarray(interval),
            ex.rank,
            ex.sequence_id,
            ex.position,
            ex.position - ex.before + ex.first,
            length,
        ],
        axis=1,
    )
    fields_blob = to_blob(fields, "i4")
    vals_blob = to_blob(np.asarray(ex.value), "f4")
    cols = np.arange(ex.windows.shape[1])
    inside = (cols >= np.asarray(ex.first)[:, None]) & (cols < np.asarray(ex.last)[:, None])
    acts_blob = to_blob(ex.windows[inside], dtype)  # row-major: each window's part in turn
    units_at, starts = np.unique(unit, return_index=True)
    ends = np.append(starts[1:], n)
    act_at = np.concatenate([[0], np.cumsum(length)]) * np.dtype(dtype).itemsize
    return [
        (source_id, u, b - a, fields_blob[a * 24 : b * 24], vals_blob[a * 4 : b * 4],
         acts_blob[act_at[a] : act_at[b]])
        for u, a, b in zip(units_at.tolist(), starts.tolist(), ends.tolist(), strict=True)
    ]  # fmt: skip


# ---- reading (app) -------------------------------------------------------------------


def ping(engine: Engine) -> None:
    """Raises if the database cannot answer a query (for health checks)."""
    with engine.connect() as conn:
        ping_conn(conn)


def ping_conn(conn: Connection) -> None:
    conn.execute(select(1)).scalar()


def list_models(conn: Connection) -> list[ModelRow]:
    return [_model(r) for r in conn.execute(select(models).order_by(models.c.slug))]


def index_identity(conn: Connection) -> str:
    """A token that changes whenever a model is indexed, replaced or removed: the key under
    which the server may keep pages rendered from this index. Every write to an index goes
    through :func:`replace_model` (a fresh row, a new ``created``) in one transaction, so the
    model rows alone tell one index from the next."""
    return _identity(conn.exec_driver_sql(_IDENTITY_SQL).all())


_IDENTITY_SQL = "SELECT id, slug, created, seconds FROM models ORDER BY id"


def _identity(rows) -> str:
    return hashlib.blake2b(repr([tuple(r) for r in rows]).encode(), digest_size=12).hexdigest()


def sqlite_identity(conn: sqlite3.Connection) -> str:
    """:func:`index_identity` read through a plain sqlite3 connection."""
    return _identity(conn.execute(_IDENTITY_SQL).fetchall())


def sqlite_watch(engine: Engine) -> sqlite3.Connection | None:
    """For an SQLite index, a read-only autocommit connection of its own whose ``PRAGMA
    data_version`` changes whenever another connection commits; None for other databases."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    path = Path(engine.url.database).resolve()
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.isolation_level = None
    return conn


def get_model(conn: Connection, slug: str) -> ModelRow | None:
    row = conn.execute(select(models).where(models.c.slug == slug)).first()
    return _model(row) if row else None


def _model(row) -> ModelRow:
    m = dict(row._mapping)
    m["options"] = json.loads(m["options"]) if m["options"] else None
    return ModelRow(**m)


def list_sources(conn: Connection, model_id: int) -> list[SourceRow]:
    q = (
        select(sources)
        .where(sources.c.model_id == model_id)
        .order_by(sources.c.layer, sources.c.id)
    )
    return [_source(r) for r in conn.execute(q)]


def get_source(conn: Connection, model_id: int, name: str) -> SourceRow | None:
    q = select(sources).where(sources.c.model_id == model_id, sources.c.name == name)
    row = conn.execute(q).first()
    return _source(row) if row else None


def _source(row) -> SourceRow:
    m = dict(row._mapping)
    m["info"] = json.loads(m["info"]) if m["info"] else None
    return SourceRow(**m)


@dataclass(frozen=True)
class SourceSummary:
    mean_density: float
    dead: int
    """Units never positive over the corpus."""
    max_act: float


def source_summaries(conn: Connection, model_id: int) -> dict[int, SourceSummary]:
    q = (
        select(
            units.c.source_id,
            func.avg(units.c.density),
            func.sum((units.c.density == 0).cast(Integer)),
            func.max(units.c.max_act),
        )
        .join(sources, sources.c.id == units.c.source_id)
        .where(sources.c.model_id == model_id)
        .group_by(units.c.source_id)
    )
    return {
        sid: SourceSummary(mean or 0.0, dead or 0, mx) for sid, mean, dead, mx in conn.execute(q)
    }


SORTS = {
    "index": units.c.idx,
    "max_act": units.c.max_act,
    "density": units.c.density,
    # A latent's share of the SAE's L0 is its density over the sum of densities: the same
    # order as density, shown as a share.
    "l0": units.c.density,
}


def list_units(
    conn: Connection, source_id: int, *, sort: str, descending: bool, offset: int, limit: int
) -> list[UnitRow]:
    col = SORTS[sort]
    order = (col.desc() if descending else col.asc(), units.c.idx.asc())
    q = select(units).where(units.c.source_id == source_id).order_by(*order)
    return [_unit(r) for r in conn.execute(q.offset(offset).limit(limit))]


def get_unit(conn: Connection, source_id: int, idx: int) -> UnitRow | None:
    q = select(units).where(units.c.source_id == source_id, units.c.idx == idx)
    row = conn.execute(q).first()
    return _unit(row) if row else None


def _unit(row) -> UnitRow:
    m = dict(row._mapping)
    m["logits"] = json.loads(m["logits"])
    m["stats"] = json.loads(m["stats"]) if m["stats"] else None
    return UnitRow(**m)


def get_examples(conn: Connection, source_id: int, unit: int) -> list[ExampleRow]:
    return [e for _, e in _examples_of(conn, examples, source_id, unit, "<f4")]


def get_samples(conn: Connection, source_id: int, unit: int) -> dict[int, list[ExampleRow]]:
    """Interval samples by interval, in sampling order."""
    out: dict[int, list[ExampleRow]] = {}
    for interval, e in _examples_of(conn, samples, source_id, unit, "<f2"):
        out.setdefault(interval, []).append(e)
    return out


def _examples_of(conn: Connection, table: Table, source_id: int, unit: int, dtype: str):
    """(interval, example) pairs of one unit's packed row, in their stored order."""
    q = select(table).where(table.c.source_id == source_id, table.c.unit == unit)
    row = conn.execute(q).first()
    if row is None:
        return []
    fields = np.frombuffer(row.fields, dtype="<i4").reshape(row.n, 6).tolist()
    values = np.frombuffer(row.vals, dtype="<f4").astype(np.float64).tolist()
    acts = np.frombuffer(row.acts, dtype=dtype).astype(np.float64)
    at = np.concatenate([[0], np.cumsum([f[5] for f in fields])]).tolist()
    return [
        (interval, ExampleRow(rank, seq, pos, value, start, acts[at[i] : at[i + 1]].tolist()))
        for i, ((interval, rank, seq, pos, start, _), value) in enumerate(
            zip(fields, values, strict=True)
        )
    ]


def get_sequences(conn: Connection, model_id: int, ids: Iterable[int]) -> dict[int, SequenceRow]:
    q = select(sequences).where(sequences.c.model_id == model_id, sequences.c.id.in_(set(ids)))
    return {
        r.id: SequenceRow(r.id, r.document, r.offset, from_int_blob(r.tokens))
        for r in conn.execute(q)
    }


def token_texts(conn: Connection, model_id: int, ids: Iterable[int]) -> dict[int, str]:
    q = select(vocab.c.token_id, vocab.c.text).where(
        vocab.c.model_id == model_id, vocab.c.token_id.in_(set(ids))
    )
    return dict(conn.execute(q).all())


def all_token_texts(conn: Connection, model_id: int) -> dict[int, str]:
    """The whole vocabulary of a model's index, id -> display text."""
    q = select(vocab.c.token_id, vocab.c.text).where(vocab.c.model_id == model_id)
    return dict(conn.execute(q).all())


def unit_max_acts(conn: Connection, source_id: int) -> list[float]:
    """Each unit's max activation over the corpus, by index."""
    q = select(units.c.max_act).where(units.c.source_id == source_id).order_by(units.c.idx)
    return list(conn.execute(q).scalars())


def unit_densities(conn: Connection, source_id: int) -> list[float]:
    """Each unit's density, by index."""
    q = select(units.c.density).where(units.c.source_id == source_id).order_by(units.c.idx)
    return list(conn.execute(q).scalars())
