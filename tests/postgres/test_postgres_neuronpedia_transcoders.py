"""A Spyglass export with transcoder sources loads into Neuronpedia's own database as its
import loads it (``neuronpedia_load``): one source set for the transcoder set, of type
``transcoder``, one source per layer named ``<layer>-<set>`` with SAELens's names of its
hooks in ``saelensConfig``, and every feature where a circuit-tracer graph looks for it
(``layer`` = ``<layer>-<set>``)."""

from __future__ import annotations

import gzip
import json

import pytest
from neuronpedia_load import import_all, list_models_and_sources
from transcoder_export import SET, SOURCES, export_transcoder_index

pytestmark = pytest.mark.postgres

SLUG = "nptcschema"


@pytest.fixture(scope="module")
def export(tiny_index, tmp_path_factory):
    return export_transcoder_index(tiny_index, tmp_path_factory.mktemp("np-tc-pg"), SLUG)[1]


def _count(root, kind: str) -> int:
    total = 0
    for path in root.glob(f"*/*/{kind}/*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            total += sum(1 for line in f if line.strip())
    return total


def test_a_transcoder_export_loads_with_neuronpedias_import(export, neuronpedia):
    assert list_models_and_sources(export) == {SLUG: sorted(["1-mlp", *SOURCES])}
    conn = neuronpedia()
    import_all(conn, export)

    def rows(table: str) -> int:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

    assert rows("Neuron") == _count(export, "features")
    assert rows("Activation") == _count(export, "activations") > rows("Neuron")
    assert rows("Explanation") == _count(export, "explanations") > 0
    sets = conn.execute('SELECT name, type FROM "SourceSet" ORDER BY name').fetchall()
    assert sets == [("mlp", "mlp"), (SET, "transcoder")]
    sources = conn.execute(
        'SELECT id, "setName", "saelensConfig" FROM "Source" WHERE "setName" = %s ORDER BY id',
        (SET,),
    ).fetchall()
    assert [(i, s) for i, s, _ in sources] == [(name, SET) for name in SOURCES]
    for layer, (_, _, config) in enumerate(sources):
        config = config if isinstance(config, dict) else json.loads(config)
        assert config["hook_name"] == f"blocks.{layer}.ln2.hook_normalized"
        assert config["hook_name_out"] == f"blocks.{layer}.hook_mlp_out"
    features = conn.execute(
        'SELECT layer, count(*), min("hookName"), max("hookName") FROM "Neuron" '
        'WHERE "sourceSetName" = %s GROUP BY layer ORDER BY layer',
        (SET,),
    ).fetchall()
    assert features == [
        (name, 24, f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.ln2.hook_normalized")
        for layer, name in enumerate(SOURCES)
    ]
