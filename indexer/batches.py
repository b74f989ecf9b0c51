"""What every streaming statistic reads from a batch besides its activations: the tokens'
sampling keys, each sequence's real length, and context windows.

A batch is [B, T, U] activations of sequences ``first_sequence ..+B``; token
``sequence * T + position`` is its global index, the same whatever the batching or
sharding, and the key of every sample drawn from it.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from indexer.sample_bins import EMPTY

_MASK = np.uint64((1 << 63) - 1)
_ADD = np.uint64(0x1E3779B97F4A7C15)
_MUL = (np.uint64(0x3F58476D1CE4E5B9), np.uint64(0x14D049BB133111EB))  # odd
_UNMUL = tuple(np.uint64(pow(int(m), -1, 1 << 63)) for m in _MUL)
_SHIFTS = (30, 27, 31)


def token_keys(tokens: torch.Tensor) -> torch.Tensor:
    """Keys in [0, 2^63 - 1) for global token indices: splitmix64's steps taken modulo
    2^63, the same on every machine, so sampling is reproducible and shards agree. Each
    step is invertible, so a key names its token (``key_tokens``): a sample slot keeps its
    key only. (The one token whose key would be 2^63 - 1, ``EMPTY``, gets 2^63 - 2; its
    index is near 2^62 on average, past any corpus.)"""
    x = tokens.detach().cpu().numpy().astype(np.uint64) & _MASK
    with np.errstate(over="ignore"):
        x = (x + _ADD) & _MASK
        x = ((x ^ (x >> np.uint64(_SHIFTS[0]))) * _MUL[0]) & _MASK
        x = ((x ^ (x >> np.uint64(_SHIFTS[1]))) * _MUL[1]) & _MASK
        x = x ^ (x >> np.uint64(_SHIFTS[2]))
    keys = x.astype(np.int64)
    return torch.from_numpy(np.minimum(keys, EMPTY - 1)).to(tokens.device)


def key_tokens(keys: torch.Tensor) -> torch.Tensor:
    """The global token indices of ``keys`` (``token_keys`` inverted); -1 for ``EMPTY``."""
    k = keys.detach().cpu().numpy()
    x = k.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = _unshift(x, _SHIFTS[2])
        x = _unshift((x * _UNMUL[1]) & _MASK, _SHIFTS[1])
        x = _unshift((x * _UNMUL[0]) & _MASK, _SHIFTS[0])
        x = (x - _ADD) & _MASK
    tokens = np.where(k == EMPTY, -1, x.astype(np.int64))
    return torch.from_numpy(tokens).to(keys.device)


def _unshift(x: np.ndarray, shift: int) -> np.ndarray:
    """y with y ^ (y >> shift) = x, for 63-bit values."""
    y = x.copy()
    for _ in range(63 // shift):
        y = x ^ (y >> np.uint64(shift))
    return y


def use_compiled(device: torch.device | str, backend: str | None) -> bool:
    """Whether a streamer on ``device`` runs the compiled kernels (``indexer.kernels``):
    on a CPU unless ``backend="torch"`` asks for the tensor code."""
    if backend not in (None, "compiled", "torch"):
        raise ValueError(f"backend must be 'compiled' or 'torch', got {backend!r}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "compiled" and not on_cpu:
        raise ValueError("the compiled kernels run on the CPU only")
    return on_cpu and backend != "torch"


def real_lengths(lengths, n_seq: int, seq_len: int) -> np.ndarray | None:
    """Each sequence's real length [B] as int64 numpy (``lengths``: a tensor, an array or
    a list), or None where every sequence fills the batch (``lengths`` None or all
    ``seq_len``), so that unpadded batches keep the plain paths. Positions at and after a
    sequence's length are padding: they enter no statistic and show in no window."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    ends = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if ends.shape[0] != n_seq:
        raise ValueError(f"{ends.shape[0]} lengths for a batch of {n_seq} sequences")
    if ((ends < 0) | (ends > seq_len)).any():
        raise ValueError(f"lengths must be in 0..{seq_len}, got {ends.tolist()}")
    return None if (ends == seq_len).all() else ends


def as_array(acts: torch.Tensor) -> np.ndarray:
    """A float32, C-ordered numpy view of a CPU activation block (a copy only if needed)."""
    return acts.detach().to(torch.float32).contiguous().numpy()


@functools.lru_cache(maxsize=4)
def batch_keys(token0: int, n: int) -> np.ndarray:
    """The keys of tokens ``token0 .. token0 + n`` as a read-only numpy array, computed
    once per batch however many sources ask."""
    keys = token_keys(torch.arange(token0, token0 + n)).numpy()
    keys.flags.writeable = False
    return keys


def read_windows(
    acts: torch.Tensor,
    seq: torch.Tensor,
    pos: torch.Tensor,
    unit: torch.Tensor,
    offsets,
    ends: np.ndarray | None = None,
) -> torch.Tensor:
    """[n, W] values of ``unit`` at ``pos + offsets`` in sequence ``seq`` of ``acts``
    [B, T, U]; NaN off the sequence, which ends at ``ends[seq]`` (``real_lengths``)."""
    seq_len, n_units = acts.shape[1], acts.shape[2]
    at = pos.unsqueeze(1) + offsets
    if ends is None:
        inside = (at >= 0) & (at < seq_len)
    else:
        limit = torch.from_numpy(ends).to(acts.device)[seq].unsqueeze(1)
        inside = (at >= 0) & (at < limit)
    flat = (seq.unsqueeze(1) * seq_len + at.clamp(0, seq_len - 1)) * n_units + unit.unsqueeze(1)
    return torch.where(inside, acts.reshape(-1).take(flat).float(), torch.nan)
