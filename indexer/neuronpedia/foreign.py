"""An export without Spyglass's folder (as Neuronpedia publishes them) into an index:
each activation record becomes a sequence of its own tokens, the vocabulary is the token
strings met, and the statistics are those the features carry (density, histograms,
logits, neighbours). The interval counts Neuronpedia's records do not hold read 0.

A source's kind comes from its source set's type, its ``saelensConfig``, hooks and name
(``kinds.read_kind``): a transcoder keeps its config as its info, with its output hook
(``hook_out``); no source records an SAE or transcoder folder (``sae`` is None)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from indexer.neuronpedia.export import TYPES
from indexer.neuronpedia.kinds import config_hook, read_kind, transcoder_hook, transcoder_info
from indexer.neuronpedia.reading import (
    ImportReport,
    add_logit_entries,
    batches,
    columns,
    read_lines,
)
from indexer.token_index import TokenUnits
from spyglass import storage

METHODS = {v: k for k, v in TYPES.items()}


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise ValueError(f"{where}: a record without {', '.join(missing)}")


@dataclass
class _Source:
    """One source folder's records, made into rows."""

    name: str
    kind: str
    layer: int
    hook: str
    n_units: int
    info: dict | None = None
    max_act: list[float] = field(default_factory=list)
    density: list[float] = field(default_factory=list)
    logits: list[dict] = field(default_factory=list)
    stats: list[storage.UnitStats] = field(default_factory=list)
    top: list[tuple] = field(default_factory=list)
    sampled: list[tuple] = field(default_factory=list)
    explanations: list[dict] = field(default_factory=list)


class _Vocab:
    """Token strings met, numbered in order."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, strings) -> list[int]:
        return [self.ids.setdefault(s, len(self.ids)) for s in strings]

    def texts(self) -> list[str]:
        return list(self.ids)  # insertion order is id order


def import_records(conn, folder: Path, slug: str, report: ImportReport) -> None:
    source_dirs = sorted(p for p in folder.iterdir() if (p / "features").is_dir())
    if not source_dirs:
        raise ValueError(f"{folder} has no source folder with features/")
    meta_file = source_dirs[0] / "model.jsonl"
    meta = next(read_lines(meta_file), {}) if meta_file.is_file() else {}
    vocab, sequences = _Vocab(), []
    built = [_source_rows(sdir, vocab, sequences) for sdir in source_dirs]
    top_k = max((max(Counter(r[0] for r in b.top).values(), default=0) for b in built), default=0)
    model_id = storage.replace_model(
        conn, slug, spec=meta.get("tlensId") or meta.get("id") or folder.name,
        corpus="neuronpedia export", n_layers=int(meta.get("layers") or 0),
        d_model=int(meta.get("dimension") or 0), d_vocab=len(vocab.ids),
        seq_len=max((len(s[3]) for s in sequences), default=0), skip_first=0, top_k=top_k,
        n_sequences=len(sequences), n_tokens=sum(len(s[3]) for s in sequences),
    )  # fmt: skip
    storage.add_vocab(conn, model_id, vocab.texts())
    storage.add_sequences(conn, model_id, sequences)
    for b in built:
        source_id = storage.add_source(
            conn, model_id, name=b.name, kind=b.kind, layer=b.layer, hook=b.hook,
            n_units=b.n_units, sae=None, info=b.info,
        )  # fmt: skip
        storage.add_units(conn, source_id, np.array(b.max_act), np.array(b.density), b.logits,
                          b.stats)  # fmt: skip
        storage.add_examples(conn, source_id, columns(b.top))
        intervals = np.array([r[1] for r in b.sampled])
        storage.add_examples(conn, source_id, columns(b.sampled), interval=intervals)
        added = storage.add_explanations(conn, source_id, b.explanations, skip_present=True)
        by_token = TokenUnits()
        add_logit_entries(by_token, list(range(b.n_units)), b.logits)
        if b.top:
            units = np.array([r[0] for r in b.top])
            tokens = np.array([sequences[r[3]][3][r[4]] for r in b.top])
            by_token.add_examples(units, tokens, max(1, top_k))
        storage.add_token_units(conn, source_id, by_token.rows())
        report.units += b.n_units
        report.examples += len(b.top) + len(b.sampled)
        report.explanations += added
        report.sources.append(b.name)


def _records(folder: Path, need: tuple[str, ...]) -> dict[int, list[dict]]:
    """A batch folder's records by unit, in file order."""
    out: dict[int, list[dict]] = defaultdict(list)
    for part in batches(folder):
        for row in read_lines(part):
            _need(row, need, str(part))
            out[int(row["index"])].append(row)
    return out


def _source_rows(sdir: Path, vocab: _Vocab, sequences: list) -> _Source:
    units = {u: rows[-1] for u, rows in _records(sdir / "features", ("index",)).items()}
    examples = _records(sdir / "activations", ("index", "values"))
    explained = _records(sdir / "explanations", ("index", "description"))
    config, set_type = _source_meta(sdir)
    hook = next(iter(units.values()), {}).get("hookName") or config_hook(config)
    head = sdir.name.partition("-")[0]
    layer = int(head) if head.isdigit() else 0
    kind = read_kind(sdir.name, hook, set_type, config)
    b = _Source(
        name=sdir.name,
        kind=kind,
        layer=layer,
        hook=hook or (transcoder_hook(layer) if kind == "transcoder" else ""),
        n_units=max([*units, *examples, *explained], default=-1) + 1,
        info=transcoder_info(config, layer) if kind == "transcoder" else None,
    )
    for u in range(b.n_units):
        f = units.get(u, {})
        b.logits.append({
            "top": _pairs(vocab(f.get("pos_str") or []), f.get("pos_values") or []),
            "bottom": _pairs(vocab(f.get("neg_str") or []), f.get("neg_values") or []),
        })  # fmt: skip
        tops, bins = _split(examples.get(u, []))
        for rank, a in enumerate(tops):
            b.top.append(_example(u, -1, rank, a, sequences, vocab))
        for interval, group in enumerate(bins):
            for rank, a in enumerate(group):
                b.sampled.append(_example(u, interval, rank, a, sequences, vocab))
        peak = max((max(a["values"] or [0.0]) for a in examples.get(u, [])), default=0.0)
        b.max_act.append(float(f.get("maxActApprox") or peak))
        b.density.append(float(f.get("frac_nonzero") or 0.0))
        b.stats.append(_stats(f, bins))
        for e in explained.get(u, []):
            method = METHODS.get(e.get("typeName") or "", "llm")
            b.explanations.append({
                "unit": u, "method": method, "settings": "neuronpedia",
                "text": str(e["description"]),
                "explainer": e.get("explanationModelName") if method == "llm" else None,
                "created": e.get("createdAt") or datetime.now(UTC).isoformat(),
            })  # fmt: skip
    return b


def _source_meta(sdir: Path) -> tuple[dict | None, str]:
    """A source folder's ``saelensConfig`` (None when it has none) and its set's type."""
    files = [sdir / "source.jsonl", sdir / "sourceset.jsonl"]
    source, sset = (next(read_lines(p), {}) if p.is_file() else {} for p in files)
    config = source.get("saelensConfig")
    return (config if isinstance(config, dict) else None), str(sset.get("type") or "")


def _pairs(ids: list, values: list) -> list[list]:
    return [[t, float(v)] for t, v in zip(ids, values, strict=False)]


def _split(rows: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """A feature's records: the top ones (``binMin`` -1 or none, strongest first) and the
    others grouped by bin, lowest bin first."""
    tops = [a for a in rows if a.get("binMin") is None or a["binMin"] == -1]
    tops.sort(key=lambda a: -a["values"][_position(a)] if a["values"] else 0.0)
    bins: dict[tuple, list[dict]] = defaultdict(list)
    for a in rows:
        if a.get("binMin") is not None and a["binMin"] != -1:
            bins[(a["binMin"], a.get("binMax"))].append(a)
    return tops, [bins[k] for k in sorted(bins, key=lambda k: (k[0], k[1] or 0))]


def _position(a: dict) -> int:
    """Where a record's example sits: its qualifying token, else its largest value."""
    pos = a.get("qualifyingTokenIndex")
    if isinstance(pos, int) and 0 <= pos < len(a["values"]):
        return pos
    return int(np.argmax(a["values"])) if a["values"] else 0


def _example(u, interval, rank, a, sequences, ids) -> tuple:
    """One record as a sequence of its own and an example row on it."""
    values = [float(v) for v in a["values"]]
    tokens = ids(a.get("tokens") or ["?"] * len(values))
    if len(tokens) != len(values) or not values:
        raise ValueError(f"unit {u}: an activation record with {len(tokens)} tokens and "
                         f"{len(values)} values")  # fmt: skip
    pos = _position(a)
    seq = len(sequences)
    sequences.append((seq, a.get("dataSource") or "", 0, tokens))
    return (u, interval, rank, seq, pos, 0, values[pos], values)


def _stats(f: dict, bins: list[list[dict]]) -> storage.UnitStats:
    heights = f.get("freq_hist_data_bar_heights") or []
    xs = f.get("freq_hist_data_bar_values") or []
    hist = None
    if heights and xs:
        width = (xs[1] - xs[0]) if len(xs) > 1 else 2 * xs[0]
        hist = storage.ActivationHistogram(width, [int(round(h)) for h in heights])
    lh_heights = f.get("logits_hist_data_bar_heights") or []
    lxs = f.get("logits_hist_data_bar_values") or []
    logit_hist = None
    if lh_heights and len(lxs) > 1:
        w = lxs[1] - lxs[0]
        logit_hist = storage.LogitHistogram(lxs[0] - w / 2, lxs[-1] + w / 2,
                                            [int(round(h)) for h in lh_heights])  # fmt: skip

    def pairs(i: str, v: str) -> list[tuple[int, float]]:
        return [(int(a), float(b)) for a, b in _pairs(f.get(i) or [], f.get(v) or [])]

    correlated = pairs("correlated_features_indices", "correlated_features_pearson") or pairs(
        "correlated_neurons_indices", "correlated_neurons_pearson"
    )
    return storage.UnitStats(
        hist=hist, logit_hist=logit_hist, correlated=correlated,
        decoder=pairs("topkCosSimIndices", "topkCosSimValues"),
        intervals=[(g[0]["binMin"], g[0].get("binMax") or g[0]["binMin"], 0) for g in bins],
    )  # fmt: skip
