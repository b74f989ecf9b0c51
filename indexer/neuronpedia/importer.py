"""``spyglass import --format neuronpedia DIR``: an export in Neuronpedia's layout (see
``export``) into an index, in one transaction.

With the folder a Spyglass export carries (``config/spyglass/<model>/``; ``<model>/spyglass/``
in exports of format 1), the index is rebuilt as it was:
the same units, examples, statistics, sequences and explanations, so it serves the same
pages. Without it (an export from Neuronpedia itself) the index holds what the records
say: each activation record becomes a sequence of its own tokens, the vocabulary is the
token strings met, and the statistics are those the features carry (density, histograms,
logits, neighbours).
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from indexer.neuronpedia.export import CONFIG, FORMAT, SIDE, side_folder
from indexer.neuronpedia.foreign import import_records
from indexer.neuronpedia.reading import (
    ImportReport,
    add_logit_entries,
    batches,
    columns,
    read_lines,
)
from indexer.token_index import TokenUnits
from spyglass import storage

SEQUENCE_CHUNK = 10_000
"""Sequences inserted at a time."""


def model_folder(root: Path, model: str | None) -> Path:
    """The export's folder of ``model`` (or its only model). ValueError otherwise."""
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    models = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != CONFIG)
    if model is not None:
        if model not in models:
            raise ValueError(f"no model {model!r} in {root} (it has {', '.join(models) or 'none'})")
        return root / model
    if len(models) != 1:
        raise ValueError(
            f"{root} holds {len(models)} models ({', '.join(models) or 'none'}): name one "
            "with --model"
        )
    return root / models[0]


def import_export(
    root: str | Path, db: str, *, model: str | None = None, slug: str | None = None,
    replace: bool = False,
) -> ImportReport:  # fmt: skip
    """Import the export at ``root`` into the index at ``db`` as ``slug`` (default: the
    exported model's name). ValueError for a malformed export, or a name the index holds
    already (unless ``replace``)."""
    folder = model_folder(Path(root), model)
    side = spyglass_folder(Path(root), folder.name)
    exact = side is not None
    slug = slug or folder.name
    storage.check_slug(slug)
    engine = storage.make_engine(db, create=True)
    try:
        with engine.begin() as conn:
            if storage.get_model(conn, slug) is not None and not replace:
                raise ValueError(f"{slug!r} is in the index already: pass --replace, or --as NAME")
            report = ImportReport(slug=slug, exact=exact)
            try:
                if exact:
                    _import_exact(conn, folder, side, slug, report)
                else:
                    import_records(conn, folder, slug, report)
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                # A record without a field it needs, or of the wrong type.
                raise ValueError(
                    f"{folder}: a malformed export ({type(exc).__name__}: {exc})"
                ) from None
    finally:
        engine.dispose()
    return report


# ---- a Spyglass export ------------------------------------------------------------------


def spyglass_folder(root: Path, model: str) -> Path | None:
    """Spyglass's own folder of ``model`` in the export at ``root``: under ``config/``
    (format 2 on), else in the model's folder (format 1); None when it has neither."""
    for side in (side_folder(root, model), root / model / SIDE):
        if (side / "index.json").is_file():
            return side
    return None


def _import_exact(conn, folder: Path, side: Path, slug: str, report: ImportReport) -> None:
    index = json.loads((side / "index.json").read_text())
    if index.get("format", 1) > FORMAT:
        raise ValueError(f"{side}: export format {index['format']} is newer than this "
                         f"Spyglass reads ({FORMAT}); upgrade Spyglass")  # fmt: skip
    m = dict(index["model"])
    m.pop("slug")
    model_id = storage.replace_model(conn, slug, **{**m, "options": _json(m.get("options"))})
    vocab = [row for row in _plain_lines(side / "vocab.jsonl.gz")]
    storage.add_vocab(conn, model_id, vocab)
    seqs: dict[int, np.ndarray] = {}  # for the token index: 4 bytes a token
    rows = []
    for seq_id, document, offset, tokens in _plain_lines(side / "sequences.jsonl.gz"):
        seqs[seq_id] = np.asarray(tokens, np.int32)
        rows.append((seq_id, document, offset, tokens))
        if len(rows) == SEQUENCE_CHUNK:
            storage.add_sequences(conn, model_id, rows)
            rows = []
    storage.add_sequences(conn, model_id, rows)
    for src in index["sources"]:
        source_id = storage.add_source(conn, model_id, **src)
        by_token = TokenUnits()
        sfolder = folder / src["name"]
        for part in batches(side / src["name"]):
            lines = list(read_lines(part))
            if not lines:
                continue
            acts = defaultdict(list)
            records = sfolder / "activations" / part.name
            for a in read_lines(records) if records.is_file() else ():  # none: no file
                acts[int(a["index"])].append(a["values"])
            texts = {e["id"]: e for e in read_lines(sfolder / "explanations" / part.name)}
            _exact_units(conn, source_id, lines, acts, texts, m["top_k"], seqs, by_token, report)
        storage.add_token_units(conn, source_id, by_token.rows())
        report.sources.append(src["name"])


def _exact_units(conn, source_id, lines, acts, texts, top_k, seqs, by_token, report) -> None:
    first = lines[0]["index"]
    storage.add_units(
        conn, source_id,
        np.array([x["max_act"] for x in lines]), np.array([x["density"] for x in lines]),
        [x["logits"] for x in lines],
        [storage.UnitStats.from_json(json.dumps(x["stats"])) if x["stats"] else None
         for x in lines],
        first=first,
    )  # fmt: skip
    top, sampled, explained = [], [], []
    for x in lines:
        u, windows = x["index"], acts.get(x["index"], [])
        if len(windows) != len(x["top"]) + len(x["samples"]):
            raise ValueError(f"unit {u}: {len(windows)} activation records for "
                             f"{len(x['top']) + len(x['samples'])} examples")  # fmt: skip
        for k, head in x.get("skipped", []):  # the first tokens' values, written as 0
            windows[k] = [*head, *windows[k][len(head) :]]
        for meta, w in zip(x["top"], windows, strict=False):
            top.append((u, -1, *meta, w))
        for meta, w in zip(x["samples"], windows[len(x["top"]) :], strict=True):
            sampled.append((u, *meta, w))
        for e in x["explanations"]:
            if e["id"] not in texts:
                raise ValueError(f"unit {u}: explanation {e['id']} is not in the export")
            explained.append({**e, "unit": u, "text": texts[e["id"]]["description"]})
    add_logit_entries(by_token, [x["index"] for x in lines], [x["logits"] for x in lines])
    if top:
        by_token.add_examples(
            np.array([r[0] for r in top]), np.array([seqs[r[3]][r[4]] for r in top]), top_k
        )
    storage.add_examples(conn, source_id, columns(top))
    cols = columns(sampled)
    storage.add_examples(conn, source_id, cols, interval=np.array([r[1] for r in sampled]))
    # A re-import under the same name keeps what the earlier index had (storage.kept):
    # the export's own explanations are not added twice.
    report.explanations += storage.add_explanations(conn, source_id, explained, skip_present=True)
    report.units += len(lines)
    report.examples += len(top) + len(sampled)


def _plain_lines(path: Path) -> Iterator:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from None


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)
