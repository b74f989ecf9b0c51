"""Neuronpedia's import, re-enacted in Python against its own tables.

Neuronpedia (hijohnnylin/neuronpedia) imports one source of one model with
``apps/webapp/app/api/admin/import/route.ts``, calling ``importConfigFromS3`` and
``importJsonlString`` of ``apps/webapp/lib/db/import.ts``; its admin panel lists the models
and sources it offers with ``getS3ModelsToSources`` (``apps/webapp/lib/utils/s3.ts``). Here
an export folder stands in for its bucket's ``v1/`` prefix, and each step does what those
do, in their order, to a database made by Neuronpedia's own migrations:

0. the five ``config/`` files, each required (a missing one ends the import before
   anything is written), every line upserted by ``name`` through Prisma;
1. ``release.jsonl`` when present; then ``model.jsonl``, ``sourceset.jsonl`` and
   ``source.jsonl``, each required, every line created through Prisma unless a row with
   its key exists (the source set and source looked up under the model being imported);
2. ``features/``, ``activations/`` (not its subfolders) and ``explanations/`` batch files,
   in S3's listing order, each through ``importJsonlString``: the columns are the first
   line's keys that name a column of the table, typed from ``information_schema``, and
   ``INSERT ... SELECT ... FROM jsonb_to_recordset($1::jsonb) ... ON CONFLICT DO NOTHING``;
   explanations go in batches of 10,000 lines across files.

Prisma's ``create`` is the one step not done by the database alone: ``prisma_create``
checks what Prisma's client checks before it sends anything (no key that is not a column,
each value of its field's type, no null for a required field, nor for a ``Json`` one), then
inserts the fields as given, so NOT NULL, the column types, enums and foreign keys are the
database's to refuse. Inference hosts (``inference_hosts*.jsonl``, optional there) are left
out: no Spyglass export has them.
"""

from __future__ import annotations

import gzip
import json
import math
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

CONFIG = ("explanation_model_type", "explanation_type", "explanation_score_model",
          "explanation_score_type", "eval_type")  # fmt: skip
"""``importConfigFromS3``'s files, in its order."""
CONFIG_TABLES = ("ExplanationModelType", "ExplanationType", "ExplanationScoreModel",
                 "ExplanationScoreType", "EvalType")  # fmt: skip
EXPLANATION_BATCH = 10_000
"""Explanation lines per ``importJsonlString`` in the route."""
CHUNK = 65_000
"""Lines per INSERT in ``importJsonlString``."""


class PrismaValidationError(ValueError):
    """What Prisma's client refuses before it sends a query."""


def list_models_and_sources(root: Path) -> dict[str, list[str]]:
    """What Neuronpedia's admin panel offers: every folder of ``v1/`` but ``config`` is a
    model, and every folder of a model's one of its sources."""
    return {
        m.name: sorted(s.name for s in m.iterdir() if s.is_dir())
        for m in sorted(root.iterdir())
        if m.is_dir() and m.name != "config"
    }


def import_all(conn: psycopg.Connection, root: Path) -> None:
    """Every source the admin panel offers, imported as its import button would."""
    for model, sources in list_models_and_sources(root).items():
        for source in sources:
            import_source(conn, root, model, source)


def import_source(conn: psycopg.Connection, root: Path, model: str, source: str) -> None:
    """The route's import of ``model``/``source`` (explanations included)."""
    for name, table in zip(CONFIG, CONFIG_TABLES, strict=True):
        for line in _jsonl(root / "config" / f"{name}.jsonl"):
            prisma_upsert(conn, table, line, key=("name",))
    path = root / model / source
    if (path / "release.jsonl").is_file():
        for line in _jsonl(path / "release.jsonl"):
            if not _exists(conn, "SourceRelease", {"name": line.get("name")}):
                prisma_create(conn, "SourceRelease", line)
    for line in _jsonl(path / "model.jsonl"):
        if not _exists(conn, "Model", {"id": line.get("id")}):
            prisma_create(conn, "Model", line)
    for line in _jsonl(path / "sourceset.jsonl"):
        if not _exists(conn, "SourceSet", {"modelId": model, "name": line.get("name")}):
            prisma_create(conn, "SourceSet", {**line, "urls": line.get("urls") or []})
    for line in _jsonl(path / "source.jsonl"):
        if not _exists(conn, "Source", {"modelId": model, "id": line.get("id")}):
            if not line.get("inferenceHosts"):
                line.pop("inferenceHosts", None)
            prisma_create(conn, "Source", line)
    for f in _listed(path, "features", subfolders=True):
        import_jsonl_string(conn, "Neuron", _gunzip(f))
    for f in _listed(path, "activations", subfolders=False):
        import_jsonl_string(conn, "Activation", _gunzip(f))
    pending: list[str] = []
    for f in _listed(path, "explanations/", subfolders=True):
        for line in _gunzip(f).strip().split("\n"):
            if line.strip():
                pending.append(line)
            if len(pending) >= EXPLANATION_BATCH:
                import_jsonl_string(conn, "Explanation", "\n".join(pending))
                pending = []
    if pending:
        import_jsonl_string(conn, "Explanation", "\n".join(pending))


def import_jsonl_string(conn: psycopg.Connection, table: str, text: str) -> None:
    """``importJsonlString``: the first line's keys name the columns."""
    text = text.replace("\\u0000", " ")
    if table == "Activation":
        text = "\n".join(_split_z(line) for line in text.strip().split("\n") if line.strip())
    lines = text.strip().split("\n")
    keys = list(json.loads(lines[0]))  # an empty file fails here, as JSON.parse('') does
    columns = conn.execute(
        """SELECT column_name,
                  CASE WHEN data_type = 'ARRAY' THEN udt_name::regtype::text || '[]'
                       WHEN data_type = 'USER-DEFINED' THEN udt_name::text
                       ELSE data_type END
           FROM information_schema.columns
           WHERE table_name = %s AND column_name = ANY(%s)
           ORDER BY ordinal_position""",
        (table, keys),
    ).fetchall()
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
    defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns
    )
    query = sql.SQL(
        "INSERT INTO {table} ({names}) SELECT {names} FROM jsonb_to_recordset(%s::jsonb) "
        "AS t({defs}) ON CONFLICT DO NOTHING"
    ).format(table=sql.Identifier(table), names=names, defs=defs)
    for i in range(0, len(lines), CHUNK):
        conn.execute(query, ("[" + ",".join(lines[i : i + CHUNK]) + "]",))


def prisma_create(conn: psycopg.Connection, table: str, data: dict) -> None:
    """``prisma.<table>.create({data})``: Prisma's own checks, then a plain INSERT of the
    fields given (the others take the database's defaults)."""
    columns = _columns(conn, table)
    for key, value in data.items():
        if key not in columns:
            raise PrismaValidationError(f"{table}.create: Unknown argument `{key}`")
        _check(table, key, value, *columns[key])
    names = sql.SQL(", ").join(sql.Identifier(k) for k in data)
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} ({names}) SELECT {names} FROM jsonb_populate_record(NULL::{t}, %s)"
        ).format(t=sql.Identifier(table), names=names),
        (json.dumps(data),),
    )


def prisma_upsert(conn: psycopg.Connection, table: str, data: dict, key: tuple[str, ...]) -> None:
    """``upsert({where: key, update: data, create: data})``."""
    where = {k: data.get(k) for k in key}
    if not _exists(conn, table, where):
        prisma_create(conn, table, data)
        return
    columns = _columns(conn, table)
    for k, value in data.items():
        if k not in columns:
            raise PrismaValidationError(f"{table}.upsert: Unknown argument `{k}`")
        _check(table, k, value, *columns[k])
    conn.execute(
        sql.SQL(
            "UPDATE {t} SET ({names}) = (SELECT {names} FROM jsonb_populate_record("
            "NULL::{t}, %s)) WHERE {cond}"
        ).format(  # fmt: skip
            t=sql.Identifier(table),
            names=sql.SQL(", ").join(sql.Identifier(k) for k in data),
            cond=sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where),
        ),
        (json.dumps(data), *where.values()),
    )


# ---- Prisma's checks --------------------------------------------------------------------


def _columns(conn, table: str) -> dict[str, tuple[str, str, bool]]:
    """Column -> (data_type, udt_name, nullable)."""
    rows = conn.execute(
        "SELECT column_name, data_type, udt_name, is_nullable = 'YES' "
        "FROM information_schema.columns WHERE table_name = %s",
        (table,),
    ).fetchall()
    return {name: (kind, udt, nullable) for name, kind, udt, nullable in rows}


_SCALARS = {
    "text": "string", "integer": "int", "double precision": "number", "boolean": "bool",
    "timestamp without time zone": "date", "jsonb": "json", "USER-DEFINED": "string",
    "_text": "string", "_int4": "int", "_float8": "number", "_float4": "number",
}  # fmt: skip


def _check(table: str, key: str, value, kind: str, udt: str, nullable: bool) -> None:
    where = f"{table}.create: argument `{key}`"
    if value is None:
        if kind == "jsonb":
            raise PrismaValidationError(f"{where}: null for a Json field (Prisma.DbNull)")
        if not nullable:
            raise PrismaValidationError(f"{where} must not be null")
        return
    if kind == "ARRAY":
        if not isinstance(value, list):
            raise PrismaValidationError(f"{where}: expected a list, got {value!r}")
        for v in value:
            _scalar(where, _SCALARS[udt], v)
        return
    _scalar(where, _SCALARS[kind], value)


def _scalar(where: str, want: str, v) -> None:
    ok = {
        "string": isinstance(v, str),
        "bool": isinstance(v, bool),
        # JSON.parse reads 2.0 as the integer 2
        "int": isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer(),
        "number": isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        "date": isinstance(v, str) and _is_date(v),
        "json": True,
    }[want]
    if not ok:
        raise PrismaValidationError(f"{where}: expected {want}, got {v!r}")


def _is_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# ---- the bucket -------------------------------------------------------------------------


def _exists(conn, table: str, where: dict) -> bool:
    cond = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where)
    query = sql.SQL("SELECT 1 FROM {} WHERE {}").format(sql.Identifier(table), cond)
    return conn.execute(query, tuple(where.values())).fetchone() is not None


def _jsonl(path: Path) -> list[dict]:
    """``downloadFileJsonlParsedLines``: FileNotFoundError for a missing file, as S3's
    GetObject fails; blank lines skipped."""
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def _listed(folder: Path, prefix: str, *, subfolders: bool) -> list[Path]:
    """``getFilesInPath(folder/prefix, '.jsonl.gz', subfolders)``: the files whose key
    starts with the prefix, in S3's order (by key, byte-wise)."""
    found = []
    for f in folder.rglob("*"):
        rel = f.relative_to(folder).as_posix()
        if not (f.is_file() and rel.startswith(prefix) and rel.endswith(".jsonl.gz")):
            continue
        if not subfolders and "/" in rel[len(prefix) :].lstrip("/"):
            continue
        found.append((rel.encode(), f))
    return [f for _, f in sorted(found)]


def _gunzip(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode()


def _split_z(line: str) -> str:
    """The importer's activation rewrite: ``zIndices`` [[k...], [q...]] become
    ``zKIndices`` and ``zQIndices``."""
    row = json.loads(line)
    z = row.get("zIndices")
    if isinstance(z, list):
        for name, part in zip(("zKIndices", "zQIndices"), z, strict=False):
            if isinstance(part, list) and all(isinstance(x, int | float) for x in part):
                row[name] = part
    return json.dumps(row)
