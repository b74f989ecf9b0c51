"""The tiny index's settings, shared by conftest.py's fixtures and the tests that vary them.

Importable as ``tiny_settings`` because pytest puts ``tests/`` on sys.path (a module, not
conftest.py: every test folder may have a conftest of its own).
"""

from __future__ import annotations

from pathlib import Path

from indexer.pipeline import IndexConfig

TINY_SLUG = "tiny"


def tiny_config(model_dir: Path, corpus_dir: Path, db: Path, **overrides) -> IndexConfig:
    """The tiny index's settings; tests vary one field at a time through ``overrides``."""
    fields = dict(
        model=str(model_dir),
        corpus=str(corpus_dir),
        db=str(db),
        name=TINY_SLUG,
        seq_len=16,
        batch_size=3,
        top_k=5,
        window_before=4,
        window_after=2,
        device="cpu",
        progress=False,
        # The tiny SAE and transcoders are dense (k of 24 or 48): indexed sparse, as wide
        # ones are, unless a test asks for the default (test_transcoder_index's dense case).
        log_below_density=1.0,
    )
    return IndexConfig(**(fields | overrides))
