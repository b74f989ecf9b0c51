"""Reading an export in Neuronpedia's layout: its JSONL batch files, and example records
as the index's example columns. Shared by both import paths (``importer``, ``foreign``)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.token_index import TokenUnits
from spyglass import storage


@dataclass
class ImportReport:
    slug: str = ""
    sources: list[str] = field(default_factory=list)
    units: int = 0
    examples: int = 0
    explanations: int = 0
    exact: bool = False
    """Rebuilt from a Spyglass export's own folder (else from Neuronpedia's records)."""


def read_lines(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSONL file (gzipped when named ``.gz``); ValueError naming
    the file and line of one that is not a JSON object."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{n}: not a JSON object")
                yield row
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from None


def batches(folder: Path) -> list[Path]:
    """``batch-<N>.jsonl.gz`` files of a folder, by N."""
    found = [p for p in folder.glob("batch-*.jsonl.gz") if p.name[6:-9].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:-9]))


def columns(rows: list[tuple]) -> storage.ExampleColumns:
    """``(unit, interval, rank, seq, pos, start, value, acts)`` rows as example columns."""
    n = len(rows)
    before = max((r[4] - r[5] for r in rows), default=0)
    width = before + max((r[5] + len(r[7]) - r[4] for r in rows), default=1)
    windows = np.full((n, width), np.nan, np.float32)
    first = np.zeros(n, np.int64)
    for i, r in enumerate(rows):
        first[i] = before - (r[4] - r[5])
        windows[i, first[i] : first[i] + len(r[7])] = r[7]

    def col(j: int, t=np.int64) -> np.ndarray:
        return np.array([r[j] for r in rows], dtype=t)

    return storage.ExampleColumns(
        unit=col(0), rank=col(2), sequence_id=col(3), position=col(4),
        value=col(6, np.float32), windows=windows, first=first,
        last=first + np.array([len(r[7]) for r in rows], np.int64), before=before,
    )  # fmt: skip


def add_logit_entries(by_token: TokenUnits, units: list[int], logits: list[dict]) -> None:
    """The token index's promotes / suppresses entries of units and their logit tables."""
    for effect, side in (("promotes", "top"), ("suppresses", "bottom")):
        pairs = [
            (t, u, v) for u, lg in zip(units, logits, strict=True) for t, v in lg.get(side, [])
        ]
        if pairs:
            tokens, which, values = zip(*pairs, strict=True)
            by_token.add(effect, tokens, which, values)
