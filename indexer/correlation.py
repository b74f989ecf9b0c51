"""Each unit's most correlated units (Pearson r), without any [U, U] state.

The pass only collects what the correlations need; they are computed at write time,
blockwise, so memory follows the units and the sample, never the square of the units.

- Dense sources (MLP neurons) keep the sampled tokens' activations: the tokens whose key
  (``indexer.batches.token_keys``) falls below ``rate``, a uniform sample of the corpus,
  the same tokens for every source whatever the batching; of those at most ``cap``, the
  ones with the smallest keys (pruned as the stream goes, so memory stays bounded: the
  smallest keys of the whole stream are the smallest of any part that holds them). At
  write time the [n, U] rows give the sums of products ``rows`` units at a time ([rows,
  rows] float64, ``indexer.neighbour_top.dense_top``), each block reduced to its top k
  at once.
- Sparse sources (SAE latents, mostly zero) keep every eligible token's non-zero
  activations (up to ``cap`` tokens, 2^20 by default, then likewise the ones with the
  smallest keys), as a list by token (CSR): the pairs that fire together are the only
  products that are not zero. At write time each latent's row of sums comes from the
  tokens it fires on (``indexer.neighbour_top.sparse_top``), exactly; a latent that never
  fires with another has the covariance ``-mean_i * mean_j`` with it, and the best of
  those are taken in order of ``mean_j / std_j`` without visiting the rest.

Both sum float32 products in float64, token by token in token order (the dense sample is
kept sorted by token). A merge of shards
sorts their tokens back into that order, so merged shards give the very numbers one pass
gives, bit for bit. Memory: dense, 4 bytes per unit per sampled token; sparse, 8 bytes per
non-zero activation plus 16 per token.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from indexer import kernels
from indexer.batches import as_array, batch_keys, real_lengths, token_keys, use_compiled
from indexer.kernel_ops import listed
from indexer.neighbour_top import NEIGHBOUR_ROWS, dense_top, sparse_top

DENSE_CAP = 4096
"""Default most tokens a dense source's correlations use (``StreamingCorrelation.cap``)."""
SPARSE_CAP = 1 << 20
"""Default most tokens a sparse source's correlations use."""


def sampled_rows(token0: int, n_seq: int, seq_len: int, skip: int, rate: float, ends=None):
    """The eligible rows ``b * seq_len + t`` (``skip`` <= t < ``ends[b]``) of a batch of
    tokens from ``token0`` whose key falls below ``rate``: the same for every source."""
    rows = kernels.eligible_rows(n_seq, seq_len, skip, ends)
    if rate < 1:
        keys = batch_keys(token0, n_seq * seq_len)[rows]
        rows = rows[keys.astype(np.float64) < rate * 2.0**63]
    return rows


class StreamingCorrelation:
    """What one source's correlations need, collected over a stream of batches; ``top``
    computes them."""

    def __init__(
        self,
        n_units: int,
        *,
        rate: float = 1.0,
        sparse: bool = False,
        skip_first: int = 0,
        device: torch.device | str = "cpu",
        backend: str | None = None,
        cap: int | None = None,
    ):
        if not 0 < rate <= 1:
            raise ValueError("rate must be in (0, 1]")
        cap = (SPARSE_CAP if sparse else DENSE_CAP) if cap is None else cap
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self.n_units, self.sparse, self.skip_first = n_units, sparse, skip_first
        self.rate = 1.0 if sparse else rate
        self.compiled = use_compiled(device, backend)
        self.device = torch.device(device)
        self._parts: list[dict] = []  # one per batch, joined by ``_joined``

    @property
    def n_tokens(self) -> int:
        return sum(p["tokens"].shape[0] for p in self._parts)

    def update(self, acts: torch.Tensor, first_sequence: int, lengths=None, listed=None) -> None:
        """Fold in ``acts`` [B, T, U] for sequences ``first_sequence ..+B``, each of
        ``lengths`` [B] real positions (None: all T). A sparse source's non-zeros may come
        ``listed`` already, as (rows, counts, units, values) of ascending rows that include
        the ones sampled here (``nonzero_rows``' output beside its rows): they are not
        listed again."""
        n_seq, seq_len, n_units = acts.shape
        if seq_len <= self.skip_first:
            return
        ends = real_lengths(lengths, n_seq, seq_len)
        token0 = first_sequence * seq_len
        rows = sampled_rows(token0, n_seq, seq_len, self.skip_first, self.rate, ends)
        if not rows.shape[0]:
            return
        tokens = torch.from_numpy(rows + token0)
        if not self.sparse:
            at = torch.from_numpy(rows).to(acts.device)
            picked = acts.reshape(-1, n_units).index_select(0, at).float()
            self._parts.append({"tokens": tokens, "rows": picked})
            self._prune()
            return

        if listed is None:
            counts, units, values = nonzero_rows(acts, rows, compiled=self.compiled)
        else:
            counts, units, values = _listed_rows(*listed, rows)
        part = {
            "counts": torch.from_numpy(counts),
            "units": torch.from_numpy(units),
            "values": torch.from_numpy(values),
        }
        self._parts.append({"tokens": tokens, **part})
        self._prune()

    def _prune(self) -> None:
        """Down to the ``cap`` smallest keys once twice as many tokens have come."""
        if sum(p["tokens"].shape[0] for p in self._parts) > 2 * self.cap:
            self._parts = [_smallest_keys(_cat(self._parts), self.cap)]

    def _joined(self) -> dict:
        """The parts as one, cut to ``cap`` tokens, kept so (no second copy at the next
        checkpoint)."""
        if len(self._parts) != 1:
            self._parts = [_empty(self) if not self._parts else _cat(self._parts)]
        if self._parts[0]["tokens"].shape[0] > self.cap:
            self._parts = [_smallest_keys(self._parts[0], self.cap)]
        return self._parts[0]

    def state_dict(self) -> dict:
        """The collected tokens, on the CPU: for a checkpoint and a merge."""
        state = {name: t.cpu() for name, t in self._joined().items()}
        return {**state, "sparse": self.sparse, "cap": self.cap}

    def load_state_dict(self, state: dict) -> None:
        if bool(state.get("sparse")) != self.sparse or "tokens" not in state:
            raise ValueError("a correlation state of another kind")
        device = self.device if not self.sparse else torch.device("cpu")
        self._parts = [{k: v.to(device) for k, v in state.items() if isinstance(v, torch.Tensor)}]

    @staticmethod
    def merge_states(a: dict, b: dict) -> dict:
        """Two disjoint streams' states as one, in token order: what one pass over both
        collects."""
        keys = [k for k, v in a.items() if isinstance(v, torch.Tensor)]
        merged = _cat([{k: a[k] for k in keys}, {k: b[k] for k in keys}])
        out = _smallest_keys(_take(merged, merged["tokens"].argsort(stable=True)), a["cap"])
        return {**out, "sparse": a["sparse"], "cap": a["cap"]}

    @staticmethod
    def join_units(states: list[dict], offsets: list[int]) -> dict:
        """The states of consecutive slices of a source's units (slice j's units start at
        ``offsets[j]``), over the same tokens, as the state of all of them."""
        tokens = states[0]["tokens"]
        if any(not torch.equal(s["tokens"], tokens) for s in states[1:]):
            raise ValueError("unit slices of one source saw different tokens")
        if not states[0]["sparse"]:
            rows = torch.cat([s["rows"] for s in states], 1)
            return {"tokens": tokens, "rows": rows, "sparse": False, "cap": states[0]["cap"]}
        counts = torch.stack([s["counts"] for s in states]).sum(0)
        # Each entry's token; slices one after another, then a stable sort by token keeps
        # them in slice order within a token: units ascending, as one pass lists them.
        at = torch.cat(
            [torch.repeat_interleave(torch.arange(tokens.shape[0]), s["counts"]) for s in states]
        )
        order = at.argsort(stable=True)
        units = torch.cat([s["units"] + lo for s, lo in zip(states, offsets, strict=True)])
        values = torch.cat([s["values"] for s in states])
        return {
            "tokens": tokens,
            "counts": counts,
            "units": units[order].int(),
            "values": values[order],
            "sparse": True,
            "cap": states[0]["cap"],
        }

    def means(self) -> np.ndarray:
        """[U] float64: each unit's mean activation over the collected tokens (a uniform
        sample of the corpus's eligible tokens; all of them while they fit in ``cap``)."""
        part = self._joined()
        n = max(int(part["tokens"].shape[0]), 1)
        if "rows" in part:
            return part["rows"].double().sum(0).cpu().numpy() / n
        sums = torch.zeros(self.n_units, dtype=torch.float64)
        sums.index_add_(0, part["units"].long(), part["values"].double())
        return sums.numpy() / n

    def top(self, k: int, *, rows: int = NEIGHBOUR_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's ``k`` most correlated other units: ([U, k] indices, [U, k] r).
        r is NaN where fewer remain (units constant on the sample have no correlation)."""
        state = self._joined()
        k = min(k, max(self.n_units - 1, 0))
        if self.sparse:
            return sparse_top(state, self.n_units, k)
        return dense_top(state["rows"], k, rows=rows)


def _empty(corr: StreamingCorrelation) -> dict:
    tokens = torch.zeros(0, dtype=torch.long)
    if not corr.sparse:
        return {"tokens": tokens, "rows": torch.zeros(0, corr.n_units, device=corr.device)}
    return {
        "tokens": tokens,
        "counts": torch.zeros(0, dtype=torch.long),
        "units": torch.zeros(0, dtype=torch.int32),
        "values": torch.zeros(0),
    }


def _cat(parts: list[dict]) -> dict:
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _smallest_keys(part: dict, cap: int) -> dict:
    """A part (in token order) cut to the ``cap`` tokens with the smallest keys."""
    tokens = part["tokens"]
    if tokens.shape[0] <= cap:
        return part
    keep = token_keys(tokens).topk(cap, largest=False).indices.sort().values
    return _take(part, keep)


def _take(part: dict, at: torch.Tensor) -> dict:
    """The part's tokens ``at`` (positions), in that order, with their rows or entries."""
    out = {"tokens": part["tokens"][at]}
    if "rows" in part:
        out["rows"] = part["rows"][at.to(part["rows"].device)]
        return out
    counts = part["counts"]
    starts = torch.cumsum(counts, 0) - counts
    picked = counts[at]
    # Each kept token's entries, token after token.
    entry = torch.repeat_interleave(starts[at] - (torch.cumsum(picked, 0) - picked), picked)
    entry += torch.arange(entry.shape[0])
    out.update(counts=picked, units=part["units"][entry], values=part["values"][entry])
    return out


def nonzero_rows(acts: torch.Tensor, rows: np.ndarray, *, compiled: bool | None = None):
    """The non-zero values of ``acts`` [B, T, U] at ``rows`` (``b * T + t``), row by row
    and by unit within a row: ([n] int64 count per row, int32 units, float32 values), on
    the CPU. ``compiled``: list them with the compiled kernel (default: on a CPU)."""
    if compiled is None:
        compiled = acts.device.type == "cpu"
    if compiled:
        chunks = max(1, min(numba.get_num_threads(), rows.shape[0] // 64))
        return _list_nonzeros(as_array(acts), rows, chunks)
    n_units = acts.shape[2]
    x = acts.reshape(-1, n_units).index_select(0, torch.from_numpy(rows).to(acts.device))
    row, unit = (x != 0).nonzero(as_tuple=True)  # row-major: by token, then unit
    return (
        torch.bincount(row, minlength=x.shape[0]).cpu().numpy(),
        unit.int().cpu().numpy(),
        x[row, unit].float().cpu().numpy(),
    )


def _listed_rows(have, counts, units, values, rows):
    """``nonzero_rows``' output for ``rows``, taken from its output for ``have`` (both
    ascending, ``rows`` among ``have``)."""
    keep = np.zeros(have.shape[0], bool)
    keep[np.searchsorted(have, rows)] = True
    picked = np.repeat(keep, counts)
    return counts[keep], units[picked], values[picked]


@numba.njit(parallel=True, cache=True, nogil=True)
def _list_nonzeros(acts, rows, chunks):  # pragma: no cover - compiled
    """The non-zero values of ``acts`` [B, T, U] at ``rows`` (``b * T + t``), row by row
    and by unit within a row: ([n] count per row, units int32, values float32)."""
    seq_len, n_units = acts.shape[1], acts.shape[2]
    n_rows = rows.shape[0]
    counts = np.zeros(n_rows, np.int64)
    for n in numba.prange(n_rows):
        row = acts[rows[n] // seq_len, rows[n] % seq_len]
        m = 0
        for u in range(n_units):
            m += row[u] != 0
        counts[n] = m
    starts = np.zeros(n_rows + 1, np.int64)
    starts[1:] = np.cumsum(counts)
    units = np.empty(starts[-1], np.int32)
    values = np.empty(starts[-1], np.float32)
    per_chunk = (n_rows + chunks - 1) // chunks
    for c in numba.prange(chunks):
        # Flagged in a vectorised pass, listed 8 flags at a time: a row holds a few dozen
        # non-zeros among thousands, and a branch per value cost 4x.
        flag = np.zeros((n_units + 7) // 8 * 8, np.uint8)
        flag_words = flag.view(np.uint64)
        found = np.zeros(flag.shape[0], np.int32)
        for n in range(c * per_chunk, min(n_rows, (c + 1) * per_chunk)):
            row = acts[rows[n] // seq_len, rows[n] % seq_len]
            for u in range(n_units):
                flag[u] = row[u] != 0
            at = starts[n]
            for j in range(listed(flag, flag_words, found)):
                units[at + j] = found[j]
                values[at + j] = row[found[j]]
    return counts, units, values
