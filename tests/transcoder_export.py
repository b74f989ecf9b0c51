"""The tiny model indexed with a tiny transcoder set (both layers, TopK with skip, 24
latents, circuit-tracer's layout) beside layer 1's MLP, explained, with a person's label
on a transcoder latent, and exported in Neuronpedia's layout.

Shared by ``tests/integration/test_neuronpedia_transcoders.py`` and the postgres tier's
``test_postgres_neuronpedia_transcoders.py``; importable as ``transcoder_export`` because pytest
puts ``tests/`` on sys.path."""

from __future__ import annotations

from pathlib import Path

from tiny_transcoders import SET, SOURCES, index_tiny_set, train_tiny_set

from cli.parser import main as cli_main
from indexer.explain import run
from spyglass import storage

__all__ = ["LABEL", "SET", "SOURCES", "export_transcoder_index"]
LABEL = "a transcoder label"


def export_transcoder_index(tiny_index, tmp: Path, slug: str) -> tuple[str, Path, Path]:
    """(the index's database, the export's folder, the transcoder set's folder)."""
    tc_dir = train_tiny_set(tiny_index, tmp / "tiny-tc")
    db = index_tiny_set(tiny_index, tc_dir, str(tmp / "index.db"), slug)
    run.explain_index(db, slug, progress=False)
    engine = storage.make_engine(db)
    with engine.begin() as conn:
        m = storage.get_model(conn, slug)
        (s,) = [s for s in storage.list_sources(conn, m.id) if s.name == SOURCES[0]]
        label = {"unit": 3, "method": "human", "settings": "", "text": LABEL,
                 "explainer": "ada"}  # fmt: skip
        storage.add_explanations(conn, s.id, [label])
    engine.dispose()
    out = tmp / "export"
    assert cli_main(["export", "--db", db, "--model", slug, "--out", str(out)]) == 0
    return db, out, tc_dir
