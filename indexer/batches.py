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


def token_keys(tokens: torch.Tensor) -> torch.Tensor:
    """Keys in [0, 2^63 - 1) for global token indices: splitmix64, the same on every
    machine, so sampling is reproducible and shards agree."""
    x = tokens.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    keys = (x >> np.uint64(1)).astype(np.int64)
    return torch.from_numpy(np.minimum(keys, EMPTY - 1)).to(tokens.device)


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
