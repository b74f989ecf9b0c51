"""A tiny transcoder set on the tiny model (both layers, TopK with skip, 24 latents, k=3),
and the tiny index with it beside layer 1's MLP: shared by the transcoder tests of every
tier. Importable as ``tiny_transcoders`` because pytest puts ``tests/`` on sys.path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from indexer.pipeline import build_index
from indexer.transcoder_training import (
    TranscoderTrainConfig,
    TranscoderTrainer,
    write_trained_transcoders,
)
from spyglass.model import load_model

SET = "tc-topk-skip-24"
SOURCES = [f"0-{SET}", f"1-{SET}"]


def train_tiny_set(tiny_index, out: Path, layout: str = "circuit-tracer") -> Path:
    """Train the tiny set into ``out`` (in ``layout``); returns ``out``."""
    cfg = TranscoderTrainConfig(
        model=str(tiny_index.model_dir), corpus=str(tiny_index.corpus_dir), out=str(out),
        d_sae=24, k=3, skip=True, tokens=60 * 20, holdout_sequences=8, seq_len=16,
        model_batch=4, buffer_batches=2, batch_tokens=60, lr=3e-3, aux_k=8,
        dead_after_tokens=600, device="cpu",
    )  # fmt: skip
    trainer = TranscoderTrainer(cfg, load_model(str(tiny_index.model_dir), "cpu"))
    write_trained_transcoders(cfg, trainer, trainer.run(progress=False), "test", layout, "float32")
    return out


def index_tiny_set(tiny_index, tc_dir: Path, db: str, slug: str, **overrides) -> str:
    """The tiny index with the set beside layer 1's MLP, in ``db``; returns ``db``."""
    cfg = replace(
        tiny_index.config, db=db, name=slug, layers=(1,), transcoders=(str(tc_dir),), **overrides
    )
    assert build_index(cfg).sources == ["1-mlp", *SOURCES]
    return db
