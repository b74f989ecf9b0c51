"""A unit's examples as token windows: what explainers read and scorers test against.

The split is fixed, so an explainer never sees what its explanation is scored on, and it
goes by sequence, so it never sees a near copy either (two top examples a token apart in
one sequence are one window twice): among the top examples (by rank) and among each
interval's samples (in their stored order), the examples of a unit's first, third, ...
new sequence are shown to the explainer and those of its second, fourth, ... are held
out; an example on a sequence met before goes where that sequence went.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spyglass.storage import PackedExamples


@dataclass(frozen=True)
class Window:
    """One example: its sequence's tokens and the unit's activation on each, over the
    part of the window inside the sequence."""

    tokens: np.ndarray
    """[w] token ids."""
    acts: np.ndarray
    """[w] the unit's activation on each token."""
    at: int
    """Where the example's token sits in the window."""
    value: float
    """The example's activation (``acts[at]``)."""
    interval: int
    """-1 for a top example, else its interval (from 0)."""
    held_out: bool


@dataclass(frozen=True)
class UnitWindows:
    unit: int
    max_act: float
    shown: list[Window]
    """What the explainer sees."""
    held_out: list[Window]
    """What the explanation is scored on."""


def unit_windows(
    unit: int,
    max_act: float,
    top: PackedExamples | None,
    sampled: PackedExamples | None,
    seqs: dict[int, np.ndarray],
    skip_first: int = 0,
) -> UnitWindows:
    """The unit's windows from its packed top examples and interval samples. The first
    ``skip_first`` tokens of a sequence are no part of a unit's statistics: their
    activations read NaN, so no explainer or scorer sees them."""
    shown: list[Window] = []
    held: list[Window] = []
    side: dict[int, bool] = {}  # sequence -> held out
    for packed in (top, sampled):
        if packed is None or not len(packed.fields):
            continue
        ends = np.cumsum(packed.fields[:, 5])
        new: dict[int, int] = {}  # new sequences so far in each interval
        for i, (interval, _rank, seq, pos, start, length) in enumerate(packed.fields.tolist()):
            if seq not in side:
                k = new.get(interval, 0)
                new[interval] = k + 1
                side[seq] = k % 2 == 1
            tokens = seqs[seq][start : start + length]
            acts = packed.acts[ends[i] - length : ends[i]]
            if start < skip_first:
                acts = acts.astype(np.float32)  # a copy
                acts[: skip_first - start] = np.nan
            w = Window(
                tokens=tokens,
                acts=acts,
                at=pos - start,
                value=float(packed.values[i]),
                interval=-1 if packed is top else int(interval),
                held_out=side[seq],
            )
            (held if w.held_out else shown).append(w)
    return UnitWindows(unit, max_act, shown, held)
