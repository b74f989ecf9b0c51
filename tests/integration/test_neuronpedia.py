"""``spyglass export --format neuronpedia`` and ``spyglass import``: every record passes
the schema of Neuronpedia's tables with the importer's rules, every activation record is
self-consistent, and export then import serves the same pages (every unit's JSON twin,
source pages, sequences, search). An export without Spyglass's own folder (as Neuronpedia
publishes them) imports too, and so does one in the older layout (format 1).
``tests/postgres/test_neuronpedia_schema.py`` loads the export into Neuronpedia's own
tables."""

from __future__ import annotations

import gzip
import json
import shutil

import jsonschema
import pytest
from db_dump import dump
from index_checks import copy_index
from sqlalchemy import select

from cli.parser import main as cli_main
from indexer.explain import run
from indexer.neuronpedia import records
from indexer.neuronpedia.export import side_folder
from spyglass import storage


@pytest.fixture(scope="module")
def exported(tiny_index, tmp_path_factory):
    """The tiny index, explained and with a person's label, exported."""
    tmp = tmp_path_factory.mktemp("np")
    db = copy_index(tiny_index.db, tmp)
    run.explain_index(db, tiny_index.slug, progress=False)
    engine = storage.make_engine(db)
    with engine.begin() as conn:
        m = storage.get_model(conn, tiny_index.slug)
        s = storage.list_sources(conn, m.id)[0]
        label = {"unit": 3, "method": "human", "settings": "", "text": "a person's label",
                 "explainer": "ada"}  # fmt: skip
        storage.add_explanations(conn, s.id, [label])
    engine.dispose()
    out = tmp / "export"
    assert cli_main(["export", "--db", db, "--model", tiny_index.slug, "--out", str(out)]) == 0
    return db, out


def _lines(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_every_record_fits_neuronpedias_schema(exported, tiny_index):
    _, out = exported
    checked = {}
    for path in sorted(out.rglob("*.jsonl*")):
        rel = path.relative_to(out)
        if rel.parts[:2] == ("config", "spyglass"):
            continue
        kind = rel.parts[-2] if rel.parts[-2] in records.FILES else rel.name
        schema = records.FILES[kind]
        rows = _lines(path)
        for row in rows:
            jsonschema.validate(row, schema, format_checker=jsonschema.FormatChecker())
        # The importer takes its columns from the first line: every line has its keys.
        assert all(row.keys() == rows[0].keys() for row in rows), path
        checked[kind] = checked.get(kind, 0) + len(rows)
    assert set(checked) == set(records.FILES)
    # Neuronpedia's import reads all five config files first, and stops at a missing one.
    assert all((out / "config" / name).is_file() for name in records.CONFIG_FILES)
    # Its admin panel offers every folder of a model's as a source: all have features.
    assert all((p / "features").is_dir() for p in (out / tiny_index.slug).iterdir())
    assert checked["features"] == sum(s.n_units for s in _sources(exported[0], tiny_index.slug))
    assert checked["activations"] > checked["features"] and checked["explanations"] > 0


def test_every_activation_record_is_self_consistent(exported, tiny_index):
    """``maxValue`` is ``max(values)`` at ``maxValueTokenIndex`` (its first index),
    ``minValue`` is ``min(values)``, and the first tokens, which no statistic counts,
    read 0.0; the qualifying token is a counted one."""
    db, out = exported
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        skip = storage.get_model(conn, tiny_index.slug).skip_first
    engine.dispose()
    assert skip == 1
    starts = 0
    for path in out.glob("*/*/activations/*.gz"):
        for r in _lines(path):
            v = r["values"]
            assert len(v) == len(r["tokens"]) and all(x == x for x in v)  # no NaN
            assert r["maxValue"] == max(v) and r["minValue"] == min(v)
            assert r["maxValueTokenIndex"] == v.index(max(v))
            start = int(r["dataIndex"].split(":")[1])
            assert all(x == 0.0 for x in v[: max(0, skip - start)])
            starts += start < skip
            assert start + r["qualifyingTokenIndex"] >= skip
    assert starts > 0  # some windows hold a first token


def test_the_schema_refuses_what_neuronpedias_importer_would(exported):
    _, out = exported
    path = next(out.glob("*/*/activations/batch-0.jsonl.gz"))
    row = _lines(path)[0]
    for broken in ({k: v for k, v in row.items() if k != "id"}, {**row, "maxValue": None},
                   {**row, "zIndices": [[0], [1]]}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, records.ACTIVATION)


def test_explanations_reference_their_types_and_models(exported):
    _, out = exported
    types = {r["name"] for r in _lines(out / "config" / "explanation_type.jsonl")}
    models = {r["name"] for r in _lines(out / "config" / "explanation_model_type.jsonl")}
    rows = [r for p in out.glob("*/*/explanations/*.gz") for r in _lines(p)]
    assert {r["typeName"] for r in rows} <= types
    assert {r["explanationModelName"] for r in rows} <= models
    assert len({r["id"] for r in rows}) == len(rows)


def _sources(db, slug):
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        out = storage.list_sources(conn, storage.get_model(conn, slug).id)
    engine.dispose()
    return out


def _pages(db, slug) -> dict:
    """Every JSON twin of the model's index that reads stored data."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    out = {}
    with TestClient(create_app(Settings(db=db))) as client:

        def get(url):
            r = client.get(url)
            assert r.status_code == 200, (url, r.text)
            out[url] = r.json()

        get(f"/{slug}.json")
        for s in _sources(db, slug):
            get(f"/{slug}/{s.name}.json")
            get(f"/{slug}/{s.name}.json?sort=density&page=2")
            for u in range(s.n_units):
                get(f"/{slug}/{s.name}/{u}.json")
        for seq in range(3):
            get(f"/{slug}/sequences/{seq}.json")
        get(f"/{slug}/search.json?q=label")
        get(f"/{slug}/search.json?q=after")
        get(f"/{slug}/search.json?token=the&effect=fires")
    return out


def test_export_then_import_serves_the_same_pages(exported, tiny_index, tmp_path):
    db, out = exported
    new = str(tmp_path / "imported.db")
    assert cli_main(["import", str(out), "--db", new]) == 0
    before, after = _pages(db, tiny_index.slug), _pages(new, tiny_index.slug)
    assert before.keys() == after.keys()
    for url in before:
        assert after[url] == before[url], url


def test_an_import_never_replaces_an_index_unasked(exported, tiny_index, tmp_path, capsys):
    db, out = exported
    assert cli_main(["import", str(out), "--db", db]) == 2
    assert "already" in capsys.readouterr().err
    assert cli_main(["import", str(out), "--db", db, "--as", "copy"]) == 0
    first = _explanation_texts(db, "copy")
    assert first
    assert cli_main(["import", str(out), "--db", db, "--as", "copy", "--replace"]) == 0
    # The replaced index kept its explanations (storage.kept); the export's own are not
    # added a second time.
    assert _explanation_texts(db, "copy") == first


def _explanation_texts(db: str, slug: str) -> list[tuple]:
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            e = storage.explanations.c
            q = select(e.source, e.unit, e.method, e.text).where(e.model == slug)
            return sorted(conn.execute(q).all())
    finally:
        engine.dispose()


def test_neuronpedias_own_records_import_without_spyglass_folder(exported, tiny_index, tmp_path):
    """Neuronpedia's exports have no spyglass/ folder: each activation record becomes a
    sequence of its own, and the pages show the same examples and explanations."""
    db, out = exported
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("spyglass"))
    assert not list(bare.rglob("index.json"))
    new = str(tmp_path / "bare.db")
    assert cli_main(["import", str(bare), "--db", new]) == 0
    slug = tiny_index.slug
    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    old, new_app = create_app(Settings(db=db)), create_app(Settings(db=new))
    with TestClient(old) as a, TestClient(new_app) as b:
        for s in _sources(db, slug):
            for u in range(s.n_units):
                x = a.get(f"/{slug}/{s.name}/{u}.json").json()
                y = b.get(f"/{slug}/{s.name}/{u}.json").json()
                assert y["max_act"] == x["max_act"] and y["density"] == x["density"]
                for side in ("logits_top", "logits_bottom"):  # the same strings, other ids
                    assert [(t["token"], t["value"]) for t in y[side]] == [
                        (t["token"], t["value"]) for t in x[side]
                    ]
                assert {e["text"] for e in y["explanations"]} == {
                    e["text"] for e in x["explanations"]
                }
                # The records write the first token (in no statistic) as 0.0.
                assert [(e["value"], e["tokens"], e["acts"]) for e in y["examples"]] == [
                    (e["value"], e["tokens"], _zero_first(e, 1)) for e in x["examples"]
                ]
                assert [e["index"] for e in y["correlated"]] == [
                    e["index"] for e in x["correlated"]
                ]


def _zero_first(example: dict, skip: int) -> list[float]:
    first = max(0, skip - example["window_start"])
    return [0.0] * min(first, len(example["acts"])) + example["acts"][first:]


def test_an_export_in_the_older_layout_imports_the_same(exported, tmp_path):
    """Format 1 had Spyglass's folder in the model's folder and the first tokens' true
    values in the records: such an export imports as the new one does."""
    _, out = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    slug = next(p.name for p in old.iterdir() if p.name != "config")
    side = old / slug / "spyglass"
    shutil.move(side_folder(old, slug), side)
    shutil.rmtree(old / "config" / "spyglass")
    index = json.loads((side / "index.json").read_text())
    (side / "index.json").write_text(json.dumps({**index, "format": 1}))
    for part in side.glob("*/batch-*.jsonl.gz"):
        lines = _lines(part)
        records = old / slug / part.parent.name / "activations" / part.name
        acts = _lines(records)
        by_unit: dict[int, list] = {}
        for a in acts:
            by_unit.setdefault(a["index"], []).append(a)
        for x in lines:
            for k, head in x.pop("skipped"):
                by_unit[x["index"]][k]["values"][: len(head)] = head
        _write(records, acts)
        _write(part, lines)
    a, b = str(tmp_path / "new.db"), str(tmp_path / "old.db")
    assert cli_main(["import", str(out), "--db", a]) == 0
    assert cli_main(["import", str(old), "--db", b]) == 0
    assert dump(a) == dump(b)


def _write(path, rows) -> None:
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))


def test_an_export_newer_than_spyglass_reads_is_refused(exported, tmp_path, capsys):
    _, out = exported
    new = tmp_path / "newer"
    shutil.copytree(out, new)
    index = next(new.rglob("index.json"))
    index.write_text(json.dumps({**json.loads(index.read_text()), "format": 99}))
    assert cli_main(["import", str(new), "--db", str(tmp_path / "x.db")]) == 2
    assert "newer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{nonempty}"], "not an empty folder"),
        (["--out", "{new}", "--model", "nope"], "no model"),
        (["--out", "{new}", "--sources", "9-mlp"], "no source"),
    ],
)
def test_bad_exports_are_one_line_errors(exported, tiny_index, tmp_path, capsys, args, message):
    db, out = exported
    args = [a.format(nonempty=out, new=tmp_path / "new") for a in args]
    if "--model" not in args:
        args += ["--model", tiny_index.slug]
    assert cli_main(["export", "--db", db, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_a_broken_export_imports_nothing(exported, tmp_path, capsys):
    _, out = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    part = next(broken.glob("*/*/activations/batch-0.jsonl.gz"))
    part.write_bytes(gzip.compress(b'{"index": 0, "values": [1.0]}\nnot json\n'))
    db = str(tmp_path / "x.db")
    assert cli_main(["import", str(broken), "--db", db]) == 2
    assert "not JSON" in capsys.readouterr().err
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        assert storage.list_models(conn) == []
    engine.dispose()
