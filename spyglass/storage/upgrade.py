"""Upgrading an index written by an older Spyglass without losing what people made.

An explanations table from before explanations outlived re-indexing (no ``model``,
``source``, ``unit_key``, ``indexed``) is rebuilt in the current form, every row kept with
its id: each row's model, source and unit key come from the source it was attached to.
``make_engine(create=True)`` does this before checking the schema, so every command that
writes (index, explain, labels import, ``spyglass upgrade``) upgrades such an index in
place. An index whose other tables are outdated is rebuilt by indexing again; its
explanations table can be kept through that (``drop_all_but_explanations``).
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text, update

from spyglass.storage.schema import explanations, metadata, unit_key

__all__ = ["upgrade_explanations", "drop_all_but_explanations"]

_NEW = ("model", "source", "unit_key", "indexed", "scored")
_OLD = ("id", "unit", "method", "settings", "text", "evidence", "scores", "explainer", "created")
_CHUNK = 10_000


def upgrade_explanations(engine: Engine) -> int | None:
    """Rebuild an older explanations table in the current form, in one transaction; the
    number of rows kept, or None when there was nothing to upgrade."""
    tables = inspect(engine)
    if not tables.has_table(explanations.name):
        return None
    have = {c["name"] for c in tables.get_columns(explanations.name)}
    if set(_NEW) <= have:
        return None
    old_cols = ", ".join(f"e.{c}" for c in _OLD)
    read = text(
        f"SELECT {old_cols}, e.source_id, s.name, s.kind, s.hook, s.sae, m.slug, m.spec, "
        "m.created AS indexed FROM explanations e JOIN sources s ON s.id = e.source_id "
        "JOIN models m ON m.id = s.model_id ORDER BY e.id"
    )
    with engine.begin() as conn:
        rows = []
        for r in conn.execute(read).mappings():
            row = {c: r[c] for c in _OLD}
            rows.append(
                row
                | {
                    "source_id": r["source_id"],
                    "model": r["slug"],
                    "source": r["name"],
                    "unit_key": unit_key(r["spec"], r["kind"], r["hook"], r["sae"]),
                    "indexed": r["indexed"],
                    "scored": r["indexed"] if r["scores"] else None,
                }
            )
        if conn.dialect.name == "sqlite":
            for statement in (
                "DROP TRIGGER IF EXISTS explanations_fts_insert",
                "DROP TRIGGER IF EXISTS explanations_fts_delete",
                "DROP TRIGGER IF EXISTS explanations_fts_update",
                "DROP TABLE IF EXISTS explanations_fts",
                "DROP TABLE explanations",
            ):
                conn.exec_driver_sql(statement)
        else:
            conn.exec_driver_sql("DROP TABLE explanations CASCADE")
        explanations.create(conn)  # with its full-text index (schema's DDL events)
        for i in range(0, len(rows), _CHUNK):
            conn.execute(explanations.insert(), rows[i : i + _CHUNK])
        if conn.dialect.name == "postgresql" and rows:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('explanations', 'id'), "
                "(SELECT max(id) FROM explanations))"
            )
    return len(rows)


def drop_all_but_explanations(engine: Engine) -> None:
    """Drop every table of the index but explanations (detached first), in one
    transaction: indexing again then rebuilds the rest, and each source takes back its
    explanations and labels."""
    with engine.begin() as conn:
        names = set(inspect(conn).get_table_names())
        if explanations.name in names:
            conn.execute(update(explanations).values(source_id=None))
        for table in reversed(metadata.sorted_tables):
            if table is not explanations and table.name in names:
                table.drop(conn)
