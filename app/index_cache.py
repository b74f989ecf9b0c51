"""What page views read from an index once and keep: a model's vocabulary and its
sequences. Both are immutable for a given index, so they are keyed by the index a model
row came from (its database, id and creation), and a re-index under the same name is a
new key.

Used from the reader's worker threads: every read and update of the shared structures
happens under one lock, and database reads happen outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy import Connection

from spyglass import storage

VOCABULARIES_KEPT = 4
"""Whole vocabularies kept (one per model index recently viewed)."""
SEQUENCES_KEPT = 8192
"""Sequences kept, over every index: about 5 KB each at 128 tokens, so about 40 MB. The
demo's 1,044 sequences all stay; a unit page of a bigger index reads only those its
examples and samples use that are not kept yet."""

_lock = threading.Lock()
_vocabularies: OrderedDict[tuple, dict[int, str]] = OrderedDict()
_sequences: OrderedDict[tuple, storage.SequenceRow] = OrderedDict()


def _index(conn: Connection, m: storage.ModelRow) -> tuple:
    return (conn.engine.url.render_as_string(), m.id, m.created, m.seconds)


def vocabulary(conn: Connection, m: storage.ModelRow) -> dict[int, str]:
    """The model's whole vocabulary, id -> display text, read once per index (a page's few
    thousand token texts cost more to look up by id than the whole table costs to read)."""
    key = _index(conn, m)
    with _lock:
        texts = _vocabularies.get(key)
    if texts is None:
        texts = storage.all_token_texts(conn, m.id)
        with _lock:
            _vocabularies[key] = texts
            while len(_vocabularies) > VOCABULARIES_KEPT:
                _vocabularies.popitem(last=False)
    return texts


def sequences(
    conn: Connection, m: storage.ModelRow, ids: Iterable[int]
) -> dict[int, storage.SequenceRow]:
    """The sequences ``ids`` of the model's index (those it lacks are left out), the kept
    ones from memory and the rest in one query. A cold unit page reads about 70 of them,
    and each row read costs a render a GIL handoff under load (docs/performance.md)."""
    index = _index(conn, m)
    found: dict[int, storage.SequenceRow] = {}
    missing = []
    with _lock:
        for i in set(ids):
            row = _sequences.get((index, i))
            if row is None:
                missing.append(i)
            else:
                _sequences.move_to_end((index, i))
                found[i] = row
    if missing:
        read = storage.get_sequences(conn, m.id, missing)
        with _lock:
            for i, row in read.items():
                _sequences[(index, i)] = row
            while len(_sequences) > SEQUENCES_KEPT:
                _sequences.popitem(last=False)
        found.update(read)
    return found
