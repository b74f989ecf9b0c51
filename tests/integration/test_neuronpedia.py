"""``spyglass export --format neuronpedia`` and ``spyglass import``: every record passes
the schema of Neuronpedia's tables with the importer's rules, and export then import
serves the same pages (every unit's JSON twin, source pages, sequences, search). An
export without Spyglass's own folder (as Neuronpedia publishes them) imports too."""

from __future__ import annotations

import gzip
import json
import shutil

import jsonschema
import pytest
from index_checks import copy_index

from cli.parser import main as cli_main
from indexer.explain import run
from indexer.neuronpedia import records
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
        if rel.parts[1:2] == ("spyglass",):
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
    assert checked["features"] == sum(s.n_units for s in _sources(exported[0], tiny_index.slug))
    assert checked["activations"] > checked["features"] and checked["explanations"] > 0


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
    assert cli_main(["import", str(out), "--db", db, "--as", "copy", "--replace"]) == 0


def test_neuronpedias_own_records_import_without_spyglass_folder(exported, tiny_index, tmp_path):
    """Neuronpedia's exports have no spyglass/ folder: each activation record becomes a
    sequence of its own, and the pages show the same examples and explanations."""
    db, out = exported
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("spyglass"))
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
                assert [(e["value"], e["tokens"], e["acts"]) for e in y["examples"]] == [
                    (e["value"], e["tokens"], e["acts"]) for e in x["examples"]
                ]
                assert [e["index"] for e in y["correlated"]] == [
                    e["index"] for e in x["correlated"]
                ]


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
