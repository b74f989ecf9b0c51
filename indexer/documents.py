"""What a corpus is made of: documents, the sequences cut from them, and the error a bad
corpus raises (``indexer.corpus`` reads specs into them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CorpusError(Exception):
    """Bad corpus spec or unreadable corpus; str(e) is one line for the CLI."""


@dataclass(frozen=True)
class Document:
    """One unit of text; sequences are cut from a single document and never span two."""

    name: str
    """Human-readable origin, e.g. "shakespeare/hamlet", "stdlib-source/json/decoder.py",
    a file path relative to the spec, "data.jsonl:12" or "NAME:row 17"."""
    text: str
    """The document's full text."""


@dataclass(frozen=True)
class Sequence:
    """A window of at most seq_len token ids taken from one document."""

    tokens: list[int]
    """The real token ids, BOS first when one is used: seq_len of them, or fewer in a
    document's last sequence (never padding; batches pad on the right)."""
    document: str
    """Name of the Document this sequence was cut from."""
    offset: int
    """Index, in the document's token list, of the first document token in this sequence
    (0: the document's first sequence)."""

    @property
    def length(self) -> int:
        """Real tokens, BOS included: the positions of a padded batch row that count."""
        return len(self.tokens)


SKIPPED_BLANK = "empty or whitespace only"
"""Reason a document is skipped: it has no text to index."""
SKIPPED_NO_TOKENS = "no tokens"
"""Reason a document is skipped: its text tokenizes to nothing."""


def read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 become U+FFFD."""
    try:
        # Replacement rather than failure: streams are lazy, so one stray byte deep in a big
        # corpus would otherwise abort a long indexing run.
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}") from e
