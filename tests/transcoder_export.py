"""The tiny model indexed with a tiny transcoder set (both layers, TopK with skip, 24
latents, circuit-tracer's layout) beside layer 1's MLP, explained, with a person's label
on a transcoder latent, and exported in Neuronpedia's layout.

Shared by ``tests/integration/test_neuronpedia_transcoders.py`` and the postgres tier's
``test_neuronpedia_transcoders.py``; importable as ``transcoder_export`` because pytest
puts ``tests/`` on sys.path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cli.parser import main as cli_main
from indexer.explain import run
from indexer.pipeline import build_index
from indexer.transcoder_training import (
    TranscoderTrainConfig,
    TranscoderTrainer,
    write_trained_transcoders,
)
from spyglass import storage
from spyglass.model import load_model

SET = "tc-topk-skip-24"
SOURCES = [f"0-{SET}", f"1-{SET}"]
LABEL = "a transcoder label"


def export_transcoder_index(tiny_index, tmp: Path, slug: str) -> tuple[str, Path, Path]:
    """(the index's database, the export's folder, the transcoder set's folder)."""
    tc_dir = tmp / "tiny-tc"
    cfg = TranscoderTrainConfig(
        model=str(tiny_index.model_dir), corpus=str(tiny_index.corpus_dir), out=str(tc_dir),
        d_sae=24, k=3, skip=True, tokens=60 * 20, holdout_sequences=8, seq_len=16,
        model_batch=4, buffer_batches=2, batch_tokens=60, lr=3e-3, aux_k=8,
        dead_after_tokens=600, device="cpu",
    )  # fmt: skip
    trainer = TranscoderTrainer(cfg, load_model(str(tiny_index.model_dir), "cpu"))
    metrics = trainer.run(progress=False)
    write_trained_transcoders(cfg, trainer, metrics, "test", "circuit-tracer", "float32")
    db = str(tmp / "index.db")
    index_cfg = replace(
        tiny_index.config, db=db, name=slug, layers=(1,), transcoders=(str(tc_dir),)
    )
    assert build_index(index_cfg).sources == ["1-mlp", *SOURCES]
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
