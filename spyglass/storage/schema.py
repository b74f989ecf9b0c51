"""The index's tables and the blobs its arrays are stored as (``engine`` opens them)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np
import sqlalchemy.dialects.postgresql  # noqa: F401 - registers to_tsvector & co. for func
from sqlalchemy import (
    DDL,
    Column,
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
    event,
    func,
    literal_column,
)

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


def to_blob(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def int_blob(values: Iterable[int]) -> bytes:
    return to_blob(np.fromiter(values, dtype=np.int64), "i4")


def from_int_blob(blob: bytes) -> list[int]:
    return np.frombuffer(blob, dtype="<i4").tolist()
