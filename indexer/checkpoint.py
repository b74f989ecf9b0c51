"""A shard's work folder: checkpoints to resume from, and the finished shard's result.

One folder per shard (``shard-I-of-N``) holds:

- ``sequences.sqlite``: the corpus sequences the shard has indexed, committed at each
  checkpoint (the pass never holds them in memory);
- ``log-SOURCE.*``: a sparse source's activation log (``indexer.activation_log``), cut
  back to the checkpoint's lengths on resume;
- ``checkpoint.pt``: every source's streamed state and the next batch to run, written to a
  temporary file and renamed over the last one, so a kill at any moment leaves either the
  old checkpoint or the new one, never half of one. ``done`` marks a finished shard.

The streamed state after a batch does not depend on where the run stopped before it, so a
run resumed from a checkpoint ends with the same state as one never stopped.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from indexer.activation_log import ActivationLog

CHECKPOINT = "checkpoint.pt"
SEQUENCES = "sequences.sqlite"
FORMAT = 5
"""Version of what a checkpoint holds. 5: sample slots hold keys that name their tokens
(``indexer.batches.key_tokens``), not tokens. 4: a sparse source's examples without
windows, and its activation log beside the checkpoint (``indexer.activation_log``); int32
counts.
3: correlations as collected tokens (``indexer.correlation``), not [U, U] sums.
2: sequences of every length (short documents and tails kept, padding left out),
real-token counts. A checkpoint without it (1) was made
with full-length sequences only. A run of an older format cannot be resumed or merged."""


class CheckpointMismatch(ValueError):
    """A work folder holds a run with other settings."""


def shard_dir(work: Path, shard: tuple[int, int], units: tuple[int, int] = (0, 1)) -> Path:
    """``shard-I-of-N``, with ``-units-J-of-M`` for a slice of the units."""
    name = f"shard-{shard[0]}-of-{shard[1]}"
    return work / (name if units == (0, 1) else f"{name}-units-{units[0]}-of-{units[1]}")


@dataclass
class Progress:
    """Where a shard's pass stands."""

    fingerprint: dict
    """The settings that decide the result (``IndexConfig.fingerprint``)."""
    shard: tuple[int, int]
    next_batch: int = 0
    units: tuple[int, int] = (0, 1)
    """The slice of every source's units this run indexes (``IndexConfig.units``)."""
    """Global index of the next batch to look at (batches go to shards round-robin)."""
    n_sequences: int = 0
    """Sequences this shard has indexed."""
    n_tokens: int = 0
    """Real tokens (BOS included, padding not) of those sequences."""
    n_documents: int = 0
    """Documents this shard has indexed the first sequence of (offset 0): summed over
    shards, every document indexed, once."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Documents skipped, by reason (``indexer.corpus``), in the corpus read so far. Every
    shard reads the whole corpus stream (and skips others' batches), so all shards count
    the same."""
    seconds: float = 0.0
    """Pass seconds spent so far, over every attempt."""
    done: bool = False
    states: dict[str, dict] = field(default_factory=dict)
    """Each source's ``SourceStats.state_dict()``."""
    format: int = 1
    """``FORMAT`` of the code that wrote it (1 when absent: an older checkpoint)."""


class ShardWork:
    """The work folder of one shard: its sequences and its checkpoint."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.folder / SEQUENCES, isolation_level="DEFERRED")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seq (id INTEGER PRIMARY KEY, document TEXT NOT NULL, "
            "offset INTEGER NOT NULL, tokens BLOB NOT NULL)"
        )
        self._db.commit()

    def load(self) -> Progress | None:
        return load_progress(self.folder)

    def resume(self, progress: Progress, batch_size: int) -> None:
        """Drop sequences written after the checkpoint (committed just before a crash that
        came ahead of the checkpoint's rename)."""
        self._db.execute("DELETE FROM seq WHERE id >= ?", (progress.next_batch * batch_size,))
        self._db.commit()

    def add_sequences(self, rows: list[tuple[int, str, int, list[int]]]) -> None:
        self._db.executemany(
            "INSERT INTO seq VALUES (?, ?, ?, ?)",
            [(i, doc, off, np.asarray(t, dtype="<i4").tobytes()) for i, doc, off, t in rows],
        )

    def save(self, progress: Progress) -> None:
        """Commit the sequences, then atomically replace the checkpoint."""
        self._db.commit()
        tmp = self.folder / (CHECKPOINT + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(progress.__dict__, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / CHECKPOINT)

    def close(self) -> None:
        self._db.close()

    def remove(self) -> None:
        """Delete the folder, and its parents up to the work root if that leaves them empty."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        for parent in (self.folder.parent, self.folder.parent.parent):
            try:
                parent.rmdir()
            except OSError:  # not empty (other runs' work), or already gone
                break


def load_progress(folder: Path, *, mmap: bool = False) -> Progress | None:
    """The folder's last checkpoint, or None. ``mmap``: the states' tensors are mapped
    from the file, read only as they are used."""
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    progress = Progress(**torch.load(path, map_location="cpu", weights_only=False, mmap=mmap))
    for state in progress.states.values():
        if "log" in state:  # beside the checkpoint, wherever the shard ran
            ActivationLog.relocate(state["log"], folder)
    return progress


def read_sequences(folder: Path, chunk: int = 4096) -> Iterator[list[tuple]]:
    """A finished shard's sequences in id order, ``chunk`` at a time, as
    ``(id, document, offset, tokens)`` rows."""
    db = sqlite3.connect(folder / SEQUENCES)
    try:
        cur = db.execute("SELECT id, document, offset, tokens FROM seq ORDER BY id")
        while rows := cur.fetchmany(chunk):
            yield [(i, d, o, np.frombuffer(t, dtype="<i4").tolist()) for i, d, o, t in rows]
    finally:
        db.close()


@dataclass
class ShardResult:
    """A finished shard, in memory (as a Ray task returns it)."""

    progress: Progress
    sequences: list[tuple]


def load_result(folder: Path) -> ShardResult:
    """A finished shard's result from its work folder."""
    progress = load_progress(folder)
    if progress is None or not progress.done:
        raise ValueError(f"{folder} holds no finished shard (run its `spyglass index --shard`)")
    rows = [row for chunk in read_sequences(folder) for row in chunk]
    for state in progress.states.values():
        if "log" in state:  # the folder goes once the result is read
            ActivationLog.embed(state["log"])
    return ShardResult(progress, rows)
