"""Corpus loading: turn a corpus spec into documents, and documents into sequences.

A spec is one of:

- ``"embedded"``: a built-in offline corpus of four families (Shakespeare, the Python language
  reference, standard-library docstrings, standard-library source), interleaved in
  proportion to their sizes, so that any prefix of the sequence stream (a demo index, a
  training run, the held-out set) is a sample of the whole corpus's mix;
- a ``.txt`` file, or a directory searched recursively for ``*.txt`` files;
- a ``.jsonl`` file with one JSON object per line;
- ``"hf:NAME"``: a Hugging Face dataset (hub id or local dataset folder), streamed.

Every document is indexed, and no sequence spans two. A document is cut into
consecutive sequences of at most ``seq_len`` tokens (BOS first, when the model uses one);
its last sequence, and the only one of a document shorter than ``seq_len``, holds just
the tokens that remain. ``Sequence.tokens`` are real tokens only: whoever batches
sequences pads them on the right to ``seq_len`` (``spyglass.model.Model.pad_batch``) and
keeps their lengths, so that padded positions are left out of every statistic. A causal
model's activations at a position never depend on later ones, so a real token's
activations are the same padded or not. Documents with no text (empty or whitespace only)
are skipped and counted by reason (``iter_sequences``' ``skipped``).

Everything is lazy: documents are read and tokenized only as sequences are pulled.
Pure Python on purpose (no torch), so corpus handling can be tested without a model.
Documents and sequences are ``indexer.documents``; the embedded corpus's families are
read by ``indexer.embedded_corpus``.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from indexer.documents import (
    SKIPPED_BLANK,
    SKIPPED_NO_TOKENS,
    CorpusError,
    Document,
    Sequence,
    read_text,
)
from indexer.embedded_corpus import embedded_family_tokens, embedded_streams

_T = TypeVar("_T")

ACCEPTED_SPECS = (
    "expected 'embedded', a .txt file, a directory of .txt files, a .jsonl file, or 'hf:NAME'"
)

EMBEDDED_OPEN_DOCUMENTS = 8
"""Documents of one embedded family read in turn, one sequence each."""


# --------------------------------------------------------------------------------------------
# Spec dispatch


def document_streams(
    spec: str, *, text_field: str = "text", split: str = "train"
) -> list[Iterator[Document]]:
    """Resolve a corpus spec into one or more lazy document streams.

    Spec problems (unknown spec, missing files, unloadable dataset) raise CorpusError here,
    before any iteration; problems inside the data (a bad JSONL line) raise while iterating.
    """
    if spec == "embedded":
        return embedded_streams()
    if spec.startswith("hf:"):
        return [_hf_documents(spec[3:], text_field=text_field, split=split)]

    path = Path(spec)
    if path.is_dir():
        return [_txt_dir_documents(path)]
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return [_txt_file_documents(path)]
        if suffix == ".jsonl":
            return [_jsonl_documents(path, text_field)]
        raise CorpusError(
            f"unsupported corpus file type {path.suffix!r} ({spec}); {ACCEPTED_SPECS}"
        )
    raise CorpusError(f"unknown corpus spec {spec!r} (no such file or directory); {ACCEPTED_SPECS}")


def iter_sequences(
    spec: str,
    tokenize: Callable[[str], list[int]],
    *,
    seq_len: int = 128,
    bos_id: int | None = None,
    max_sequences: int | None = None,
    max_tokens: int | None = None,
    text_field: str = "text",
    split: str = "train",
    skipped: Counter[str] | None = None,
    full_only: bool = False,
) -> Iterator[Sequence]:
    """Yield sequences of at most ``seq_len`` tokens from the corpus (see the module
    docstring), interleaving its document streams in proportion to their sizes (the
    embedded families) or in turn (user corpora: one stream).

    ``max_sequences`` caps the sequences; ``max_tokens`` caps their real tokens (BOS
    included, padding never counted): the stream stops before the first sequence that
    would take the total past it. Each document skipped adds 1 to ``skipped[reason]``
    (``SKIPPED_BLANK``, ``SKIPPED_NO_TOKENS``) as the stream reaches it.

    ``full_only`` keeps only sequences of exactly ``seq_len`` tokens, for readers that need
    a rectangular batch and a stream that does not change with the indexer's rules: SAE
    training and evaluation (the shipped SAE's held-out sequences) and the benches'
    forward baselines. The indexer never sets it.

    Argument and spec errors are raised immediately rather than on the first ``next()``.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    if max_sequences is not None and max_sequences < 0:
        raise ValueError(f"max_sequences must be non-negative, got {max_sequences}")
    if max_tokens is not None and max_tokens < 0:
        raise ValueError(f"max_tokens must be non-negative, got {max_tokens}")
    skipped = Counter() if skipped is None else skipped
    streams = document_streams(spec, text_field=text_field, split=split)
    # The embedded families are shuffled and read EMBEDDED_OPEN_DOCUMENTS at a time, so a
    # capped demo sees many plays and modules, not the first few; user corpora keep their order.
    width = EMBEDDED_OPEN_DOCUMENTS if spec == "embedded" else 1
    weights = embedded_family_tokens(tokenize) if spec == "embedded" else [1.0] * len(streams)
    per_stream = [
        _round_robin(
            (
                _sequences_from_documents([d], tokenize, seq_len, bos_id, skipped, full_only)
                for d in s
            ),
            width,
        )
        for s in streams
    ]
    merged = _proportional(per_stream, weights, size=lambda seq: seq.length)
    seqs = itertools.islice(merged, max_sequences)
    return seqs if max_tokens is None else _within_tokens(seqs, max_tokens)


def _within_tokens(seqs: Iterator[Sequence], max_tokens: int) -> Iterator[Sequence]:
    """The sequences up to the first whose real tokens would take the total past
    ``max_tokens`` (that one is not yielded, nor any after it)."""
    total = 0
    for seq in seqs:
        total += seq.length
        if total > max_tokens:
            return
        yield seq


def _sequences_from_documents(
    documents: Iterable[Document],
    tokenize: Callable[[str], list[int]],
    seq_len: int,
    bos_id: int | None,
    skipped: Counter[str],
    full_only: bool = False,
) -> Iterator[Sequence]:
    body_len = seq_len - 1 if bos_id is not None else seq_len
    prefix = [bos_id] if bos_id is not None else []
    for doc in documents:
        if not doc.text.strip():
            skipped[SKIPPED_BLANK] += 1
            continue
        ids = tokenize(doc.text)
        if not ids:
            skipped[SKIPPED_NO_TOKENS] += 1
            continue
        # Consecutive chunks of one document, the last one as long as what remains: every
        # token is in exactly one sequence, and no sequence reaches into the next document.
        # (full_only: the whole chunks alone, the short tail dropped.)
        stop = len(ids) - body_len + 1 if full_only else len(ids)
        for start in range(0, stop, body_len):
            yield Sequence(prefix + list(ids[start : start + body_len]), doc.name, start)


def _proportional(
    streams: list[Iterator[_T]],
    weights: list[float],
    size: Callable[[_T], float] = lambda _: 1,
) -> Iterator[_T]:
    """Merge ``streams`` so that each one's share of any prefix, in ``size`` (tokens, for
    sequences), follows its weight.

    Stride scheduling: the next item comes from the stream with the least size taken per
    unit of weight so far (ties to the earlier stream), so the first round takes one item
    from each stream and a stream of weight w then follows every 1/w-th turn. With weights
    proportional to stream sizes, all streams run out at about the same time, instead of
    small ones early, which would leave the tail of a long run to the largest stream.
    Sizing by tokens rather than items keeps that so when one family's sequences are
    shorter (many short documents) than another's.
    """
    if any(w <= 0 for w in weights):
        raise ValueError(f"stream weights must be positive, got {weights}")
    taken = [0.0] * len(streams)
    live = list(range(len(streams)))
    while live:
        i = min(live, key=lambda j: (taken[j] / weights[j], j))
        item = next(streams[i], None)
        if item is None:
            live.remove(i)
            continue
        taken[i] += size(item)
        yield item


def _round_robin(sources: Iterator[Iterator[Sequence]], width: int) -> Iterator[Sequence]:
    """One item from each of ``width`` open iterators in turn; an exhausted one is replaced
    by the next from ``sources``."""
    active: list[Iterator[Sequence]] = list(itertools.islice(sources, width))
    while active:
        still_active = []
        for it in active:
            item = next(it, None)
            if item is not None:
                still_active.append(it)
                yield item
        still_active.extend(itertools.islice(sources, width - len(still_active)))
        active = still_active


# --------------------------------------------------------------------------------------------
# User corpora: text files, JSONL, Hugging Face datasets


def _txt_file_documents(path: Path) -> Iterator[Document]:
    yield Document(path.name, read_text(path))


def _txt_dir_documents(root: Path) -> Iterator[Document]:
    files = sorted(root.rglob("*.txt"), key=lambda p: p.relative_to(root).as_posix())
    files = [p for p in files if p.is_file()]
    if not files:
        raise CorpusError(f"no .txt files under directory {root}")
    return (Document(p.relative_to(root).as_posix(), read_text(p)) for p in files)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[Document]:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                text = _jsonl_text(line, text_field, f"{path.name} line {line_no}")
                yield Document(f"{path.name}:{line_no}", text)
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}") from e


def _jsonl_text(line: str, text_field: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{where}: not valid JSON ({e.msg})") from e
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if text_field not in record:
        raise CorpusError(f"{where}: no {text_field!r} field (keys: {_list_keys(record)})")
    text = record[text_field]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def _list_keys(keys: Iterable[Any]) -> str:
    names = [str(k) for k in keys]
    return ", ".join(names) if names else "none"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _hf_documents(name: str, *, text_field: str, split: str) -> Iterator[Document]:
    if not name:
        raise CorpusError(f"empty dataset name in 'hf:'; {ACCEPTED_SPECS}")
    # Imported here because `datasets` is slow to import and only this spec needs it.
    try:
        import datasets
    except ImportError as e:
        raise CorpusError("the 'hf:' corpus spec needs the 'datasets' package") from e

    try:
        dataset = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:
        raise CorpusError(f"cannot load dataset {name}: {_first_line(e)}") from e

    rows = iter(dataset)
    columns = dataset.column_names
    first: dict[str, Any] | None = None
    if columns is None:
        # Some streaming builders only know their schema once a row has been read.
        first = _next_hf_row(rows, name)
        columns = list(first) if first is not None else None
    if columns is not None and text_field not in columns:
        raise CorpusError(
            f"dataset {name} has no {text_field!r} column (columns: {_list_keys(columns)})"
        )
    return _hf_rows_to_documents(name, text_field, first, rows)


def _next_hf_row(rows: Iterator[dict[str, Any]], name: str) -> dict[str, Any] | None:
    try:
        return next(rows, None)
    except Exception as e:
        raise CorpusError(f"cannot read dataset {name}: {_first_line(e)}") from e


def _hf_rows_to_documents(
    name: str, text_field: str, first: dict[str, Any] | None, rows: Iterator[dict[str, Any]]
) -> Iterator[Document]:
    index = 0
    if first is not None:
        yield from _hf_row_document(name, text_field, index, first)
        index += 1
    while (row := _next_hf_row(rows, name)) is not None:
        yield from _hf_row_document(name, text_field, index, row)
        index += 1


def _hf_row_document(
    name: str, text_field: str, index: int, row: dict[str, Any]
) -> Iterator[Document]:
    text = row.get(text_field)
    if text is None:  # null cells are common in hub datasets: an empty document, skipped
        text = ""  # and counted like any other
    if not isinstance(text, str):
        raise CorpusError(
            f"dataset {name} row {index}: column {text_field!r} is {type(text).__name__}, "
            "not a string"
        )
    yield Document(f"{name}:row {index}", text)
