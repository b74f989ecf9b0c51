"""A Spyglass export loads into Neuronpedia's own database as Neuronpedia's import loads it.

The database is made by Neuronpedia's SQL migrations, vendored unchanged in
``neuronpedia_migrations/`` (see its README for the commit), with its seeded bot user; the
export is loaded by ``neuronpedia_load``, which re-enacts its import route step by step.
The load of a small index (two MLP layers and an SAE, explained, with a person's label)
succeeds, writes one row per line, and every activation row is self-consistent; a copy of
the export with one thing broken (a required key dropped, a type changed, a reference to
nothing, a config file deleted, an empty batch file, Spyglass's folder back where
Neuronpedia lists sources) fails to load.

The template database (and how it stands in for pgvector) is ``conftest.neuronpedia``.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from neuronpedia_load import (
    PrismaValidationError,
    import_all,
    list_models_and_sources,
)

from indexer.explain import run
from indexer.neuronpedia.export import export_index, side_folder
from indexer.neuronpedia.records import CONFIG_FILES
from indexer.pipeline import build_index
from spyglass import storage

pytestmark = pytest.mark.postgres

SLUG = "npschema"


@pytest.fixture(scope="module")
def export(tiny_index, tiny_sae_dir, tmp_path_factory) -> Path:
    """The tiny model's two MLP layers and a TopK SAE, explained, with a person's label,
    exported."""
    tmp = tmp_path_factory.mktemp("np-schema")
    db = str(tmp / "index.db")
    cfg = replace(tiny_index.config, name=SLUG, db=db, saes=(str(tiny_sae_dir),))
    assert build_index(cfg).sources == ["0-mlp", "1-mlp", "1-res-topk-48"]
    run.explain_index(db, SLUG, progress=False)
    engine = storage.make_engine(db)
    with engine.begin() as conn:
        m = storage.get_model(conn, SLUG)
        s = storage.list_sources(conn, m.id)[-1]
        label = {"unit": 3, "method": "human", "settings": "", "text": "a person's label",
                 "explainer": "ada"}  # fmt: skip
        storage.add_explanations(conn, s.id, [label])
    engine.dispose()
    out = tmp / "export"
    export_index(db, SLUG, out)
    return out


def _lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _count(root: Path, kind: str) -> int:
    return sum(len(_lines(p)) for p in root.glob(f"*/*/{kind}/*.jsonl.gz"))


def test_the_export_loads_with_neuronpedias_import(export, neuronpedia):
    assert list_models_and_sources(export) == {SLUG: ["0-mlp", "1-mlp", "1-res-topk-48"]}
    conn = neuronpedia()
    import_all(conn, export)

    def rows(table: str) -> int:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

    # ON CONFLICT DO NOTHING drops a duplicate silently: every line must be a row.
    assert rows("Neuron") == _count(export, "features") == 16 * 4 * 2 + 48
    assert rows("Activation") == _count(export, "activations") > rows("Neuron")
    assert rows("Explanation") == _count(export, "explanations") > 0
    assert (rows("Model"), rows("SourceSet"), rows("Source")) == (1, 2, 3)
    types = {r["name"] for r in _lines(export / "config" / "explanation_type.jsonl")}
    assert {r[0] for r in conn.execute('SELECT "typeName" FROM "Explanation"')} <= types
    labels = conn.execute('SELECT description, notes FROM "Explanation" '
                          """WHERE "typeName" = 'spyglass-human'""").fetchall()  # fmt: skip
    assert labels == [("a person's label", "by ada")]
    # As stored, each record is what Neuronpedia shows: its max at its index, its min.
    bad = conn.execute(
        'SELECT count(*) FROM "Activation" WHERE "maxValue" <> (SELECT max(v) FROM '
        'unnest("values") v) OR "minValue" <> (SELECT min(v) FROM unnest("values") v) '
        'OR "values"["maxValueTokenIndex" + 1] <> "maxValue" '
        'OR cardinality("values") <> cardinality(tokens)'
    ).fetchone()[0]
    assert bad == 0
    info = conn.execute('SELECT id, "saelensConfig" IS NULL FROM "Source" ORDER BY id').fetchall()
    assert info == [("0-mlp", True), ("1-mlp", True), ("1-res-topk-48", False)]


def _edit(root: Path, pattern: str, change) -> None:
    """Apply ``change`` to every line of the first file matching ``pattern``."""
    path = sorted(root.glob(pattern))[0]
    rows = [change(r) for r in _lines(path)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _drop(key: str):
    return lambda r: {k: v for k, v in r.items() if k != key}


def _set(key: str, value):
    return lambda r: {**r, key: value}


def _first_only(change):
    """``change`` on the first line alone (the importer's columns come from it)."""
    seen = []

    def apply(r):
        seen.append(1)
        return change(r) if len(seen) == 1 else r

    return apply


def _delete(name: str):
    return lambda root: (root / "config" / name).unlink()


def _old_layout(root: Path) -> None:
    shutil.move(side_folder(root, SLUG), root / SLUG / "spyglass")


def _empty_batch(root: Path) -> None:
    sorted(root.glob("*/*/activations/*.gz"))[0].write_bytes(gzip.compress(b""))


ACTS, FEATURES, EXPLAINED = "*/*/activations/*.gz", "*/*/features/*.gz", "*/*/explanations/*.gz"
NOT_NULL, TEXT = psycopg.errors.NotNullViolation, psycopg.errors.InvalidTextRepresentation
FOREIGN = psycopg.errors.ForeignKeyViolation
BREAKS = {
    # name: (the file to edit, or None for the whole export; the edit; the error; its text)
    # -- a required key dropped
    "activation without maxValue":
        (ACTS, _drop("maxValue"), NOT_NULL, '"maxValue" of relation "Activation"'),
    "first activation without maxValueTokenIndex":  # the columns are the first line's keys
        (ACTS, _first_only(_drop("maxValueTokenIndex")), NOT_NULL, '"maxValueTokenIndex"'),
    "feature without layer": (FEATURES, _drop("layer"), NOT_NULL, '"layer" of relation "Neuron"'),
    "explanation without description":
        (EXPLAINED, _drop("description"), NOT_NULL, '"description" of relation "Explanation"'),
    "model without layers":
        ("*/0-mlp/model.jsonl", _drop("layers"), NOT_NULL, '"layers" of relation "Model"'),
    "source without setName":
        ("*/0-mlp/source.jsonl", _drop("setName"), NOT_NULL, '"setName" of relation "Source"'),
    # -- a type changed
    "maxValueTokenIndex a string":
        (ACTS, _set("maxValueTokenIndex", "x"), TEXT, 'type integer: "x"'),
    "maxValueTokenIndex a fraction":
        (ACTS, _set("maxValueTokenIndex", 1.5), TEXT, 'type integer: "1.5"'),
    "values not a list": (ACTS, _set("values", "0.5"), TEXT, 'malformed array literal: "0.5"'),
    "hasVector a string": (FEATURES, _set("hasVector", "maybe"), TEXT, 'boolean: "maybe"'),
    "model layers a string": ("*/0-mlp/model.jsonl", _set("layers", "2"),
                              PrismaValidationError, "`layers`: expected int"),
    "visibility unknown": ("*/0-mlp/sourceset.jsonl", _set("visibility", "SECRET"), TEXT,
                           'enum "Visibility": "SECRET"'),
    "saelensConfig null": ("*/0-mlp/source.jsonl", _set("saelensConfig", None),
                           PrismaValidationError, "`saelensConfig`: null for a Json field"),
    "a key Prisma does not know": ("*/0-mlp/model.jsonl", _set("spyglass", 1),
                                   PrismaValidationError, "Unknown argument `spyglass`"),
    # -- a reference to nothing
    "explanation of an unknown type":
        (EXPLAINED, _set("typeName", "nope"), FOREIGN, "Explanation_typeName_fkey"),
    "activation of an unknown creator":
        (ACTS, _set("creatorId", "nobody"), FOREIGN, "Activation_creatorId_fkey"),
    # -- files
    **{f"no config/{name}": (None, _delete(name), FileNotFoundError, name)
       for name in CONFIG_FILES},
    "spyglass/ where sources are listed":
        (None, _old_layout, FileNotFoundError, "spyglass/model.jsonl"),
    "an empty activations batch": (None, _empty_batch, json.JSONDecodeError, "Expecting value"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_broken_export_fails_the_load(export, neuronpedia, tmp_path, name):
    pattern, change, error, text = BREAKS[name]
    broken = tmp_path / "export"
    shutil.copytree(export, broken)
    if pattern is None:
        change(broken)
    else:
        _edit(broken, pattern, change)
    with pytest.raises(error, match=re.escape(text)):
        import_all(neuronpedia(), broken)
