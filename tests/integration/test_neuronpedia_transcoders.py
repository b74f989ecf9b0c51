"""Transcoder sources through ``spyglass export --format neuronpedia`` and ``spyglass
import``: the tiny model indexed with a tiny transcoder set (both layers) beside layer 1's
MLP, explained, with a person's label. The records follow Neuronpedia's conventions for
transcoders (``indexer/neuronpedia/kinds.py``) and fit its schemas; export then import
gives back every source row (kind, hook, ``folder#layer`` spec, ``hook_out``), unit, example
and explanation, the same pages, and a source that loads its transcoder for live reads; an
export without Spyglass's folder imports its transcoder sources as transcoders."""

from __future__ import annotations

import gzip
import json
import shutil

import jsonschema
import pytest
from fastapi.testclient import TestClient
from transcoder_export import LABEL, SET, SOURCES, export_transcoder_index

from app.main import create_app
from cli.parser import main as cli_main
from indexer.neuronpedia import records
from spyglass import storage
from spyglass.settings import Settings

SLUG = "nptc"


@pytest.fixture(scope="module")
def exported(tiny_index, tmp_path_factory):
    return export_transcoder_index(tiny_index, tmp_path_factory.mktemp("np-tc"), SLUG)


def _by_name(conn) -> dict[str, storage.SourceRow]:
    m = storage.get_model(conn, SLUG)
    return {s.name: s for s in storage.list_sources(conn, m.id)}


def _lines(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_transcoder_records_follow_neuronpedias_conventions(exported):
    _, out, tc_dir = exported
    formats = jsonschema.FormatChecker()
    for path in sorted(p for name in SOURCES for p in (out / SLUG / name).rglob("*.jsonl*")):
        kind = path.parent.name if path.parent.name in records.FILES else path.name
        check = jsonschema.Draft202012Validator(records.FILES[kind], format_checker=formats)
        rows = _lines(path)
        for row in rows:
            check.validate(row)
        assert all(row.keys() == rows[0].keys() for row in rows), path
    for layer, name in enumerate(SOURCES):
        folder = out / SLUG / name
        (source,) = _lines(folder / "source.jsonl")
        (sset,) = _lines(folder / "sourceset.jsonl")
        # <layer>-<set>: Neuronpedia's source id, and where a circuit-tracer graph whose
        # neuronpedia_source_set is SET finds this layer's features.
        assert (source["id"], source["setName"], sset["name"]) == (name, SET, SET)
        assert sset["type"] == "transcoder" and sset["description"].startswith("transcoder")
        config = source["saelensConfig"]
        assert config["hook_name"] == config["hook"] == f"blocks.{layer}.ln2.hook_normalized"
        assert config["hook_name_out"] == config["hook_out"] == f"blocks.{layer}.hook_mlp_out"
        assert config["sae"] == f"{tc_dir}#{layer}" and config["d_sae"] == 24
        features = [r for p in (folder / "features").iterdir() for r in _lines(p)]
        assert sorted(int(f["index"]) for f in features) == list(range(24))
        for f in features:
            assert (f["layer"], f["sourceSetName"]) == (name, SET)
            assert f["hookName"] == config["hook_name"]
            assert f["correlated_neurons_indices"] == []  # latents' neighbours are features
    assert any(_lines(p) for p in (out / SLUG / SOURCES[0] / "explanations").iterdir())


def _rows(db: str) -> dict:
    """Every source row, and each source's units, examples and explanations, as stored."""
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            return {name: _source(conn, s) for name, s in _by_name(conn).items()}
    finally:
        engine.dispose()


def _source(conn, s: storage.SourceRow) -> tuple:
    n = s.n_units
    units = [(u.idx, u.max_act, u.density, u.logits, u.stats)
             for u in storage.iter_units(conn, s.id, 0, n)]  # fmt: skip
    examples = [
        (p.unit, interval, p.fields.tolist(), p.values.tolist(), p.acts.tolist())
        for interval in (False, True)
        for p in storage.iter_packed_examples(conn, s.id, 0, n, interval=interval)
    ]
    texts = sorted((e.unit, e.method, e.text, e.explainer)
                   for e in storage.source_explanations(conn, s.id, 0, n))  # fmt: skip
    return (s.kind, s.layer, s.hook, s.n_units, s.sae, s.info), units, examples, texts


def _pages(db: str) -> dict:
    out = {}
    with TestClient(create_app(Settings(db=db))) as client:
        for name in SOURCES:
            urls = [f"/{SLUG}/{name}.json", *(f"/{SLUG}/{name}/{u}.json" for u in range(24))]
            for url in urls:
                r = client.get(url)
                assert r.status_code == 200, (url, r.text)
                out[url] = r.json()
            prompt = {"prompt": "the quick brown fox"}
            r = client.post(f"/api/{SLUG}/{name}/5/activations", json=prompt)
            assert r.status_code == 200, r.text  # the transcoder loads from its spec
            out[name] = r.json()
    return out


def test_export_then_import_round_trips_transcoder_sources(exported, tmp_path):
    db, out, tc_dir = exported
    new = str(tmp_path / "imported.db")
    assert cli_main(["import", str(out), "--db", new]) == 0
    before, after = _rows(db), _rows(new)
    assert sorted(after) == sorted(before) == sorted(["1-mlp", *SOURCES])
    for layer, name in enumerate(SOURCES):
        kind, _, hook, n_units, sae, info = after[name][0]
        assert (kind, hook, n_units, sae) == (
            "transcoder",
            f"blocks.{layer}.ln2.hook_normalized",
            24,
            f"{tc_dir}#{layer}",
        )
        assert info["hook_out"] == f"blocks.{layer}.hook_mlp_out"
        assert after[name][1] and after[name][2] and after[name][3]
    assert after == before
    old_pages, new_pages = _pages(db), _pages(new)
    assert new_pages.keys() == old_pages.keys()
    for url in old_pages:
        assert new_pages[url] == old_pages[url], url
    labels = [t for t in after[SOURCES[0]][3] if t[1] == "human"]
    assert labels == [(3, "human", LABEL, "ada")]


def test_neuronpedias_records_import_transcoders_without_spyglass_folder(exported, tmp_path):
    """Without Spyglass's folder the source set's type says ``transcoder``; with that gone
    too (as in Neuronpedia's own exports, whose type is ``""``), the ``saelensConfig``
    does, and without either the input hook."""
    db, out, _ = exported
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("spyglass"))
    assert not list(bare.rglob("index.json"))
    plain = tmp_path / "plain"
    shutil.copytree(bare, plain)
    for path in plain.glob(f"{SLUG}/*/sourceset.jsonl"):
        path.write_text("".join(json.dumps({**r, "type": ""}) + "\n" for r in _lines(path)))
    (plain / SLUG / SOURCES[1] / "source.jsonl").unlink()  # a source without its config
    before = _rows(db)
    for folder in (bare, plain):
        new = str(tmp_path / f"{folder.name}.db")
        assert cli_main(["import", str(folder), "--db", new]) == 0
        after = _rows(new)
        assert after["1-mlp"][0][0] == "mlp"
        for layer, name in enumerate(SOURCES):
            kind, _, hook, n_units, sae, info = after[name][0]
            assert (kind, hook, n_units, sae) == (
                "transcoder",
                f"blocks.{layer}.ln2.hook_normalized",
                24,
                None,
            )
            assert info["hook_out"] == f"blocks.{layer}.hook_mlp_out"
            assert [u[:3] for u in after[name][1]] == [u[:3] for u in before[name][1]]
            assert {t[2] for t in after[name][3]} == {t[2] for t in before[name][3]}
