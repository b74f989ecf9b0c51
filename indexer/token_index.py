"""The index from tokens to units, written with the units: which units' top examples sit
on a token, and which units promote or suppress it most (``/{model}/search?token=``).

Per source and per kind of effect, the ``(token, unit, weight)`` entries are sorted by
token and stored in blocks of ``storage.TOKEN_BLOCK`` token ids, so a lookup reads one
small row per source, whatever the width of the source.

- ``fires``: the unit's positive top examples on the token, as a share of its top examples;
- ``promotes`` / ``suppresses``: the token is among the unit's top / bottom logit effects
  (``summaries.LOGIT_TOKENS``), with the effect.
"""

from __future__ import annotations

import numpy as np

from spyglass import storage


class CorpusGrid:
    """Every sequence's tokens on a [sequences, seq_len] grid (-1 past a short sequence's
    end), so an example's global token index ``seq * seq_len + pos`` names its token."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len
        self._rows: dict[int, np.ndarray] = {}
        self._grid: np.ndarray | None = None

    def add(self, rows) -> None:
        """``(id, document, offset, tokens)`` rows, as the index stores them."""
        for seq_id, _doc, _offset, tokens in rows:
            self._rows[int(seq_id)] = np.asarray(tokens, dtype=np.int32)
        self._grid = None

    def tokens(self, sequence: np.ndarray, position: np.ndarray) -> np.ndarray:
        if self._grid is None:
            n = max(self._rows, default=-1) + 1
            self._grid = np.full((n, self.seq_len), -1, np.int32)
            for i, t in self._rows.items():
                self._grid[i, : len(t)] = t
        return self._grid[sequence, position]


class TokenUnits:
    """One source's entries, gathered block of units by block of units."""

    def __init__(self):
        self._parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def add(self, effect: str, tokens, units, weights) -> None:
        keep = np.asarray(tokens) >= 0
        self._parts.setdefault(effect, []).append(
            (
                np.asarray(tokens, np.int64)[keep],
                np.asarray(units, np.int64)[keep],
                np.asarray(weights, np.float64)[keep],
            )
        )

    def add_examples(self, units: np.ndarray, tokens: np.ndarray, top_k: int) -> None:
        """Top examples (one entry each): per (unit, token), the share of the unit's
        ``top_k`` examples on that token."""
        if not len(units):
            return
        pairs, counts = np.unique(np.stack([units, tokens], 1), axis=0, return_counts=True)
        self.add("fires", pairs[:, 1], pairs[:, 0], counts / top_k)

    def add_logits(self, first: int, arrays: dict[str, np.ndarray]) -> None:
        """Logit summary arrays of units ``first ..``."""
        for effect, ids, values in (
            ("promotes", arrays["top_i"], arrays["top_v"]),
            ("suppresses", arrays["bottom_i"], arrays["bottom_v"]),
        ):
            units = np.repeat(np.arange(first, first + ids.shape[0]), ids.shape[1])
            self.add(effect, ids.reshape(-1), units, values.reshape(-1))

    def rows(self) -> list[dict]:
        """``storage.add_token_units`` rows."""
        out = []
        for effect, parts in self._parts.items():
            tokens, units, weights = (np.concatenate(x) for x in zip(*parts, strict=True))
            order = np.lexsort((units, tokens))
            tokens, units, weights = tokens[order], units[order], weights[order]
            blocks = tokens // storage.TOKEN_BLOCK
            cuts = np.flatnonzero(np.diff(blocks)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(tokens)], strict=True):
                if hi > lo:
                    out.append(
                        storage.token_units_row(
                            effect, int(blocks[lo]), tokens[lo:hi], units[lo:hi], weights[lo:hi]
                        )
                    )
        return out
