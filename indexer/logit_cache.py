"""Logit summaries: computed a block ahead of the write, and kept across runs, keyed by
what they are computed from.

A unit's logit summary (its top and bottom tokens, and the histogram of its effect on
every logit) depends only on its direction and the model's unembedding. Indexing a model
again (another corpus, another SAE beside its neurons, the demo a second time) would redo
the same product, 2.6 TFLOP for the demo's 46,080 neurons; the summaries of a block of
directions are kept instead, under a hash of those directions, the unembedding and the
settings that shape them.

``ahead`` works out the next block's summaries in a worker thread while the write turns the
current block into rows: the product and the compiled summary release the GIL, and the
rows and SQLite's inserts are single-threaded Python, which leaves a core idle.

The cache lives in ``$SPYGLASS_CACHE_DIR`` (default ``$XDG_CACHE_HOME/spyglass`` or
``~/.cache/spyglass``), ``logit-summaries/``: about 600 bytes a unit. ``SPYGLASS_CACHE_DIR=off``
turns it off. An unreadable entry is computed again; a cache that cannot be written is
skipped.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from indexer import summaries
from indexer.summaries import LOGIT_ARRAYS, LOGIT_BINS, LOGIT_TOKENS
from spyglass.model import Model

VERSION = 1
"""Bumped when the summaries' content or layout changes."""
BLOCK_BYTES = 256 << 20
"""Most bytes of the [chunk, d_vocab] float32 block of effects summarised at a time."""


def cache_dir() -> Path | None:
    """Where the summaries are kept; None when the cache is off."""
    root = os.environ.get("SPYGLASS_CACHE_DIR")
    if root is not None and root.strip().lower() in ("", "off", "0", "none"):
        return None
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "spyglass")
    return Path(root) / "logit-summaries"


def key(model: Model, directions: torch.Tensor) -> str:
    """The cache key of the summaries of ``directions`` [n, d_model] (as given) under
    ``model``'s unembedding, computed on its device."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{VERSION} {LOGIT_TOKENS} {LOGIT_BINS} {model.device.type} ".encode())
    h.update(model.unembed_fingerprint().encode())
    x = directions.detach().to("cpu", torch.float32).contiguous()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def load(entry: str) -> dict[str, np.ndarray] | None:
    """The summary arrays kept under ``entry`` (``summaries.LOGIT_ARRAYS``), or None."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        with np.load(folder / f"{entry}.npz", allow_pickle=False) as data:
            return {name: data[name] for name in LOGIT_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def save(entry: str, arrays: dict[str, np.ndarray]) -> None:
    """Keep the summary arrays under ``entry`` (written whole, then renamed into place)."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **{name: arrays[name] for name in LOGIT_ARRAYS})
        os.replace(tmp, folder / f"{entry}.npz")
    except OSError:
        pass  # a read-only or full disk: the next run computes them again


def summary_arrays(model: Model, directions: torch.Tensor) -> dict[str, np.ndarray]:
    """The summary arrays of ``directions`` [n, d_model]: from the cache when they were
    summarised before, else a [chunk, d_vocab] block of effects at a time (at most
    ``BLOCK_BYTES``) in one reused buffer (the effects of all of an SAE's latents would be
    GBs), then kept."""
    entry = key(model, directions)
    arrays = load(entry)
    if arrays is None:
        chunk = max(1, min(1024, BLOCK_BYTES // (4 * model.d_vocab)))
        buffer = torch.empty(min(chunk, directions.shape[0]), model.d_vocab, device=model.device)
        parts = []
        for lo in range(0, directions.shape[0], chunk):
            effects = model.logit_effects(directions[lo : lo + chunk], out=buffer)
            parts.append(summaries.logit_summary_arrays(effects))
        arrays = {name: np.concatenate([a[name] for a in parts]) for name in parts[0]}
        save(entry, arrays)
    return arrays


def ahead(model: Model, blocks: Iterable[torch.Tensor]) -> Iterator[dict[str, np.ndarray]]:
    """``summary_arrays`` of each block of directions, in order, each worked out in a
    worker thread while the caller uses the one before. ``blocks`` is read on the
    caller's thread, one block ahead."""
    with ThreadPoolExecutor(1, thread_name_prefix="logit-summaries") as pool:
        pending: Future | None = None
        for directions in blocks:
            submitted = pool.submit(summary_arrays, model, directions)
            if pending is not None:
                yield pending.result()
            pending = submitted
        if pending is not None:
            yield pending.result()
