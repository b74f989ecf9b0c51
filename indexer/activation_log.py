"""A sparse source's activations on disk, so that its examples' windows need no memory.

An SAE's latents fire on a few tokens each, yet the context windows of their kept
examples (33 float32 values per top-k slot, 14 float16 per interval sample slot) were
most of a wide SAE's state: 11.7 KB of 25.7 KB per latent. A sparse source (``keeps_log``:
latents that fire on fewer than 1/64 of tokens) therefore
keeps only the tokens of its examples during the pass, and appends every non-zero
activation to a log; the write reads each kept example's window back from the log.

The log of one source (or one slice of its units) is four files, appended batch by batch:

- ``seqs``: int64 pairs, each logged sequence's id and real length, in the order logged;
- ``counts``: int32, for each real position of those sequences in turn, its non-zeros;
- ``units``/``values``: int32 unit (within the slice) and float32 value of each non-zero,
  position by position, by unit within a position.

Disk: 8 bytes per non-zero and 4 per token, plus 16 per sequence. The files only grow. A
checkpoint records their lengths and a resumed run cuts them back to those, so a resumed
run's log is the one an uninterrupted run writes. A run without a work folder keeps the
log in memory; a Ray task sends its log back with its state, and the driver stores it in
its own work folder. A merge of token shards lists the logs of its parts (their sequences
are disjoint).

Windows read from the log are the ones the streamers take from the activations: the same
float32 values (rounded to float16 for interval samples, as they are), 0 where the unit
did not fire, NaN off the sequence.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numba
import numpy as np
import torch

from indexer.batches import real_lengths
from indexer.correlation import nonzero_rows
from indexer.kernels import eligible_rows

ASSUMED_L0 = 100
"""Active latents per token assumed for an SAE that does not fix it (TopK's ``k`` does)."""

FILES = {"seqs": np.int64, "counts": np.int32, "units": np.int32, "values": np.float32}
"""The log's files and their item types (``seqs`` holds two items per sequence)."""


def expected_l0(src) -> int:
    """Latents a source's latent is expected to share each token with: TopK's ``k``, else
    ``ASSUMED_L0`` (at most its width)."""
    if src.sae is not None and src.sae.cfg.k is not None:
        return min(src.sae.cfg.k, src.n_units)
    return min(ASSUMED_L0, src.n_units)


def keeps_log(src, cfg) -> bool:
    """Whether ``src`` is indexed sparse: a latent source whose latents are expected to
    fire on fewer than ``cfg.log_below_density`` of tokens. The default, 1/64, is where
    listing its non-zeros (8 bytes each, every token) would cost as much as a dense
    source's sampled rows (4 bytes per unit per 32nd token); above it, the windows kept
    in memory and the sampled correlations of neurons cost less than a log."""
    return src.sae is not None and expected_l0(src) < cfg.log_below_density * src.n_units


class ActivationLog:
    """Appends a sparse source's non-zero activations, batch by batch, to files in
    ``folder`` named ``{name}.{file}`` (in memory when ``folder`` is None)."""

    def __init__(self, folder: Path | None, name: str):
        self.folder, self.name = folder, name
        self.lengths = dict.fromkeys(FILES, 0)
        self._memory: dict[str, list[np.ndarray]] | None = None
        if folder is None:
            self._memory = {f: [] for f in FILES}
        self._started = False  # files cut to the loaded state's lengths, or emptied

    def _path(self, file: str) -> Path:
        return Path(self.folder) / f"{self.name}.{file}"

    def update(self, acts: torch.Tensor, first_sequence: int, lengths=None) -> tuple:
        """Log ``acts`` [B, T, U] of sequences ``first_sequence ..+B``, each of ``lengths``
        [B] real positions (None: all T). Returns what it listed, (rows ``b * T + t``,
        counts, units, values) of every real position, for the correlations to share
        (``StreamingCorrelation.update``'s ``listed``)."""
        n_seq, seq_len, _ = acts.shape
        ends = real_lengths(lengths, n_seq, seq_len)
        ends = np.full(n_seq, seq_len, np.int64) if ends is None else ends.astype(np.int64)
        rows = eligible_rows(n_seq, seq_len, 0, ends)
        counts, units, values = nonzero_rows(acts, rows)
        seqs = np.stack([np.arange(first_sequence, first_sequence + n_seq), ends], axis=1)
        arrays = {"seqs": seqs, "counts": counts, "units": units, "values": values}
        if not self._started and self._memory is None:
            for f in FILES:  # a fresh run: whatever an earlier run left goes
                self._path(f).write_bytes(b"")
        self._started = True
        for f, dtype in FILES.items():
            data = np.ascontiguousarray(arrays[f], dtype=dtype)
            if self._memory is not None:
                self._memory[f].append(data)
            else:
                with open(self._path(f), "ab") as out:
                    out.write(data.tobytes())
            self.lengths[f] += data.size
        return rows, counts, units, values

    def state_dict(self) -> dict:
        """The log as one part: where it is and how long (``parts``; see ``merge_states``)."""
        part = {"name": self.name, "lengths": dict(self.lengths)}
        if self._memory is not None:
            part["arrays"] = {
                f: np.concatenate(chunks) if chunks else np.empty(0, FILES[f])
                for f, chunks in self._memory.items()
            }
            self._memory = {f: [part["arrays"][f]] for f in FILES}
        else:
            part["folder"] = str(self.folder)
            for f in FILES if self._started else ():  # on disk before the checkpoint is
                with open(self._path(f), "ab") as out:
                    os.fsync(out.fileno())
        return {"parts": [part]}

    def load_state_dict(self, state: dict) -> None:
        """Resume from a checkpoint of this log: cut the files back to its lengths."""
        (part,) = state["parts"]
        if self._memory is not None:
            self._memory = {f: [part["arrays"][f].copy()] for f in FILES}
        else:
            for f, dtype in FILES.items():
                path, size = self._path(f), part["lengths"][f] * np.dtype(dtype).itemsize
                if size == 0:
                    path.write_bytes(b"")
                    continue
                if not path.exists() or path.stat().st_size < size:
                    raise ValueError(
                        f"{path} is shorter than its checkpoint says: the work folder was "
                        "changed; run with --restart"
                    )
                with open(path, "r+b") as out:
                    out.truncate(size)
        self.lengths = dict(part["lengths"])
        self._started = True

    @staticmethod
    def merge_states(a: dict, b: dict) -> dict:
        """The logs of two disjoint parts of the corpus, as one."""
        return {"parts": a["parts"] + b["parts"]}

    @staticmethod
    def relocate(state: dict, folder: Path) -> None:
        """A shard's log parts are in ``folder`` (where its checkpoint was found), wherever
        the shard ran."""
        for part in state["parts"]:
            if "arrays" not in part:
                part["folder"] = str(folder)

    @staticmethod
    def store(state: dict, folder: Path) -> None:
        """Write the parts carried in memory to files in ``folder`` (a Ray driver's), so
        that the logs of many shards are not all held in memory."""
        folder.mkdir(parents=True, exist_ok=True)
        for part in state["parts"]:
            if "arrays" in part:
                name = f"{part['name']}-{uuid.uuid4().hex[:12]}"
                for f, dtype in FILES.items():
                    np.ascontiguousarray(part["arrays"][f], dtype).tofile(folder / f"{name}.{f}")
                del part["arrays"]
                part.update(folder=str(folder), name=name)

    @staticmethod
    def embed(state: dict) -> None:
        """Read the parts' files into the state, to move it off this machine."""
        for part in state["parts"]:
            if "arrays" not in part:
                part["arrays"] = _read(part, mmap=False)
                del part["folder"]


def _read(part: dict, *, mmap: bool) -> dict[str, np.ndarray]:
    """A part's arrays, cut to its checkpointed lengths (mapped from its files)."""
    if "arrays" in part:
        return {f: part["arrays"][f][: part["lengths"][f]] for f in FILES}
    out = {}
    for f, dtype in FILES.items():
        path, n = Path(part["folder"]) / f"{part['name']}.{f}", part["lengths"][f]
        if n == 0:
            out[f] = np.empty(0, dtype)
        elif mmap:
            out[f] = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
        else:
            out[f] = np.fromfile(path, dtype=dtype, count=n)
    return out


class LogWindows:
    """Context windows read from a source's log (``ActivationLog.state_dict()``, or a
    merge of them), for tokens of a corpus cut into sequences of ``seq_len``."""

    def __init__(self, state: dict, seq_len: int):
        self.seq_len = seq_len
        self._parts = []
        for part in state["parts"]:
            arrays = _read(part, mmap=True)
            seqs = np.asarray(arrays["seqs"]).reshape(-1, 2)
            ends = seqs[:, 1]
            row0 = np.concatenate([[0], np.cumsum(ends)[:-1]]).astype(np.int64)
            offsets = np.zeros(arrays["counts"].shape[0] + 1, np.int64)
            np.cumsum(arrays["counts"], out=offsets[1:])
            order = np.argsort(seqs[:, 0], kind="stable")
            self._parts.append(
                (seqs[order, 0], row0[order], ends[order], offsets, arrays["units"],
                 arrays["values"])
            )  # fmt: skip

    def windows(self, units, tokens, before: int, after: int, dtype=np.float32) -> np.ndarray:
        """[n, before + 1 + after] values of ``units`` [n] (within the log's slice) around
        global token indices ``tokens`` [n]; NaN off the sequence."""
        units = np.asarray(units, np.int64)
        tokens = np.asarray(tokens, np.int64)
        seq, pos = np.divmod(tokens, self.seq_len)
        out = np.full((tokens.shape[0], before + 1 + after), np.nan, np.float32)
        found = np.zeros(tokens.shape[0], bool)
        for ids, row0, ends, offsets, log_units, log_values in self._parts:
            at = np.searchsorted(ids, seq)
            inside = (at < ids.shape[0]) & (ids[np.minimum(at, ids.shape[0] - 1)] == seq)
            pick = np.flatnonzero(inside)
            _fill(units[pick], row0[at[pick]], ends[at[pick]], pos[pick], offsets, log_units,
                  log_values, before, pick, out)  # fmt: skip
            found |= inside
        if not found.all():
            missing = int(tokens[~found][0])
            raise ValueError(f"the activation log has no sequence holding token {missing}")
        return out.astype(dtype, copy=False)


@numba.njit(parallel=True, cache=True, nogil=True)
def _fill(units, row0, ends, pos, offsets, log_units, log_values, before, rows, out):
    """``out[rows[i]]`` = unit ``units[i]``'s values at positions ``pos[i] - before ..``
    of a sequence whose positions are log rows ``row0[i] ..``, ``ends[i]`` of them; each
    row's units are ascending, so each value is a binary search."""  # pragma: no cover
    width = out.shape[1]
    for i in numba.prange(units.shape[0]):
        u = units[i]
        for j in range(width):
            at = pos[i] - before + j
            if at < 0 or at >= ends[i]:
                continue  # NaN: off the sequence
            lo, hi = offsets[row0[i] + at], offsets[row0[i] + at + 1]
            while lo < hi:
                mid = (lo + hi) >> 1
                if log_units[mid] < u:
                    lo = mid + 1
                else:
                    hi = mid
            hit = lo < offsets[row0[i] + at + 1] and log_units[lo] == u
            out[rows[i], j] = log_values[lo] if hit else np.float32(0.0)
