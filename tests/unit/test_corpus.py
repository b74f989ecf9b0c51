"""Unit tests for indexer.corpus: specs, chunking rules (every document, never across
documents), skip counts and the embedded corpus."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from indexer.corpus import (
    EMBEDDED_OPEN_DOCUMENTS,
    SKIPPED_BLANK,
    SKIPPED_NO_TOKENS,
    CorpusError,
    Document,
    Sequence,
    _proportional,
    document_streams,
    iter_sequences,
)
from indexer.embedded_corpus import _TOKEN_RATE_SAMPLE_CHARS, embedded_family_tokens

EMBEDDED_PREFIXES = ("shakespeare/", "python-reference/", "stdlib-docstrings/", "stdlib-source/")


def char_tokenize(text: str) -> list[int]:
    """Trivial tokenizer: one id per character, so offsets map straight back to the text."""
    return [ord(c) % 50 for c in text]


def all_documents(spec: str, **kwargs: str) -> list[Document]:
    return [doc for stream in document_streams(spec, **kwargs) for doc in stream]


def assert_sequences_match_documents(
    seqs: list[Sequence], docs: list[Document], seq_len: int, bos_id: int | None
) -> None:
    """Each sequence is its document's tokens from its offset on, BOS first when used: a
    whole seq_len of them, or (its document's last) what remains."""
    texts = {doc.name: doc.text for doc in docs}
    body = seq_len - 1 if bos_id is not None else seq_len
    for seq in seqs:
        ids = char_tokenize(texts[seq.document])
        expected = ids[seq.offset : seq.offset + body]
        if bos_id is not None:
            expected = [bos_id, *expected]
        assert seq.tokens == expected
        assert seq.length == len(seq.tokens) <= seq_len
        last = seq.offset + body >= len(ids)
        assert last or seq.length == seq_len, "only a document's last sequence may be short"


def assert_every_token_once(seqs: list[Sequence], docs: list[Document], bos_id: int | None):
    """Each non-blank document's sequences, in stream order, are consecutive chunks from
    offset 0 whose bodies join up to exactly its tokens: no document lost, no token lost or
    repeated, nothing from another document."""
    skip = 1 if bos_id is not None else 0
    by_doc: dict[str, list[Sequence]] = {}
    for seq in seqs:
        by_doc.setdefault(seq.document, []).append(seq)
    assert set(by_doc) == {d.name for d in docs if d.text.strip()}
    for doc in docs:
        if not doc.text.strip():
            continue
        parts = by_doc[doc.name]
        offsets = [s.offset for s in parts]
        assert offsets[0] == 0 and offsets == sorted(set(offsets))
        joined = [t for s in parts for t in s.tokens[skip:]]
        assert joined == char_tokenize(doc.text), doc.name


@pytest.fixture
def txt_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("b" * 25)
    (root / "a.txt").write_text("".join(chr(ord("a") + i % 26) for i in range(23)))
    (root / "sub" / "c.txt").write_text("short")  # shorter than one sequence
    (root / "blank.txt").write_text("   \n\t ")
    (root / "notes.md").write_text("ignored " * 20)
    return root


# ---------------------------------------------------------------- chunking


def test_chunks_are_exact_consecutive_and_keep_short_tails(txt_dir: Path) -> None:
    seqs = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=10))
    docs = all_documents(str(txt_dir))
    assert_sequences_match_documents(seqs, docs, seq_len=10, bos_id=None)
    assert_every_token_once(seqs, docs, bos_id=None)
    assert [(s.document, s.offset, s.length) for s in seqs] == [
        ("a.txt", 0, 10),
        ("a.txt", 10, 10),
        ("a.txt", 20, 3),  # 23 chars: the 3-char tail is a sequence of its own
        ("b.txt", 0, 10),
        ("b.txt", 10, 10),
        ("b.txt", 20, 5),
        ("sub/c.txt", 0, 5),  # shorter than a sequence: kept whole
    ]


def test_full_only_keeps_whole_chunks_in_the_same_order(txt_dir: Path) -> None:
    """SAE training and evaluation read only whole sequences: the stream the shipped SAE
    was trained on and held out from, whatever the indexer keeps besides."""
    whole = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=10, full_only=True))
    every = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=10))
    assert whole == [s for s in every if s.length == 10]
    assert [(s.document, s.offset) for s in whole] == [
        ("a.txt", 0),
        ("a.txt", 10),
        ("b.txt", 0),
        ("b.txt", 10),
    ]


def test_bos_prefix_and_offsets(txt_dir: Path) -> None:
    seqs = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=8, bos_id=99))
    docs = all_documents(str(txt_dir))
    assert_sequences_match_documents(seqs, docs, seq_len=8, bos_id=99)
    assert_every_token_once(seqs, docs, bos_id=99)
    assert all(s.tokens[0] == 99 for s in seqs)
    # 7 document tokens per sequence after BOS: a.txt (23) -> 3 chunks and a tail of 2,
    # b.txt (25) -> 3 chunks and a tail of 4; lengths count BOS.
    assert [(s.document, s.offset, s.length) for s in seqs] == [
        ("a.txt", 0, 8),
        ("a.txt", 7, 8),
        ("a.txt", 14, 8),
        ("a.txt", 21, 3),
        ("b.txt", 0, 8),
        ("b.txt", 7, 8),
        ("b.txt", 14, 8),
        ("b.txt", 21, 5),
        ("sub/c.txt", 0, 6),
    ]


def test_a_document_of_exactly_one_body_is_one_sequence(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": "x" * n}) + "\n" for n in (7, 14, 1)))
    seqs = list(iter_sequences(str(path), char_tokenize, seq_len=8, bos_id=99))
    assert [(s.document, s.offset, s.length) for s in seqs] == [
        ("docs.jsonl:1", 0, 8),
        ("docs.jsonl:2", 0, 8),
        ("docs.jsonl:2", 7, 8),  # no empty sequence after a document that fills its last
        ("docs.jsonl:3", 0, 2),  # BOS and one token
    ]


def test_sequences_never_span_documents(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": chr(ord("a") + i) * (1 + 3 * i)}) for i in range(8)]
    path.write_text("\n".join(lines) + "\n")
    seqs = list(iter_sequences(str(path), char_tokenize, seq_len=6))
    # Each document is a single repeated letter, so a sequence spanning two would mix ids.
    assert all(len(set(s.tokens)) == 1 for s in seqs)
    docs = all_documents(str(path))
    assert_sequences_match_documents(seqs, docs, seq_len=6, bos_id=None)
    assert_every_token_once(seqs, docs, bos_id=None)
    assert sum(s.length for s in seqs) == sum(len(d.text) for d in docs)


@pytest.mark.parametrize("bos_id", [None, 7])
@pytest.mark.parametrize("seq_len", [2, 3, 5, 16])
def test_many_short_documents_are_all_indexed(tmp_path: Path, seq_len, bos_id) -> None:
    """Documents of every length around seq_len, blank ones among them: every token of
    every non-blank document lands in exactly one sequence; blank ones are counted."""
    rng = random.Random(seq_len)
    texts = [
        "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 3 * seq_len)))
        for _ in range(40)
    ]
    texts[3], texts[17], texts[30] = "   ", "\n\t", ""
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    skipped: Counter[str] = Counter()
    seqs = list(
        iter_sequences(str(path), char_tokenize, seq_len=seq_len, bos_id=bos_id, skipped=skipped)
    )
    docs = all_documents(str(path))
    assert len(docs) == 40
    assert_sequences_match_documents(seqs, docs, seq_len=seq_len, bos_id=bos_id)
    assert_every_token_once(seqs, docs, bos_id=bos_id)
    assert skipped == {SKIPPED_BLANK: 3}
    n_bos = len(seqs) if bos_id is not None else 0
    assert sum(s.length for s in seqs) == sum(len(t) for t in texts if t.strip()) + n_bos
    assert sum(s.offset == 0 for s in seqs) == 37, "one first sequence per document"


def test_skipped_documents_are_counted_by_reason(txt_dir: Path) -> None:
    skipped: Counter[str] = Counter()
    list(iter_sequences(str(txt_dir), char_tokenize, seq_len=4, skipped=skipped))
    assert skipped == {SKIPPED_BLANK: 1}  # blank.txt

    def nothing_for_c(text: str) -> list[int]:
        return [] if text == "short" else char_tokenize(text)

    skipped = Counter()
    seqs = list(iter_sequences(str(txt_dir), nothing_for_c, seq_len=4, skipped=skipped))
    assert skipped == {SKIPPED_BLANK: 1, SKIPPED_NO_TOKENS: 1}
    assert "sub/c.txt" not in {s.document for s in seqs}


def test_max_sequences_caps_output(txt_dir: Path) -> None:
    assert len(list(iter_sequences(str(txt_dir), char_tokenize, seq_len=5, max_sequences=3))) == 3
    assert list(iter_sequences(str(txt_dir), char_tokenize, seq_len=5, max_sequences=0)) == []
    uncapped = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=5))
    capped = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=5, max_sequences=1000))
    assert capped == uncapped


def test_max_tokens_caps_real_tokens(txt_dir: Path) -> None:
    """A token budget counts real tokens (sequences are no longer all seq_len long) and
    stops before the first sequence that does not fit: a prefix of the stream."""
    uncapped = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=10))
    lengths = [s.length for s in uncapped]  # 10, 10, 3, 10, 10, 5, 5
    for budget in range(sum(lengths) + 2):
        got = list(iter_sequences(str(txt_dir), char_tokenize, seq_len=10, max_tokens=budget))
        n = 0
        while n < len(lengths) and sum(lengths[: n + 1]) <= budget:
            n += 1
        assert got == uncapped[:n], budget
    with pytest.raises(ValueError, match="max_tokens"):
        iter_sequences(str(txt_dir), char_tokenize, max_tokens=-1)


def test_seq_len_must_be_at_least_two(txt_dir: Path) -> None:
    with pytest.raises(ValueError):
        iter_sequences(str(txt_dir), char_tokenize, seq_len=1)


def test_blank_documents_are_not_tokenized(txt_dir: Path) -> None:
    seen: list[str] = []

    def recording_tokenize(text: str) -> list[int]:
        seen.append(text)
        return char_tokenize(text)

    list(iter_sequences(str(txt_dir), recording_tokenize, seq_len=4))
    assert all(text.strip() for text in seen)
    assert len(seen) == 3


# ---------------------------------------------------------------- user corpora


def test_txt_dir_is_recursive_sorted_and_named_relative(txt_dir: Path) -> None:
    names = [doc.name for doc in all_documents(str(txt_dir))]
    assert names == ["a.txt", "b.txt", "blank.txt", "sub/c.txt"]


def test_single_txt_file(txt_dir: Path) -> None:
    docs = all_documents(str(txt_dir / "b.txt"))
    assert docs == [Document("b.txt", "b" * 25)]


def test_empty_txt_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no .txt files"):
        document_streams(str(tmp_path))


def test_jsonl_documents_skip_blank_lines_and_use_text_field(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"body": "first doc", "text": "x"}\n\n{"body": "second doc"}\n')
    docs = all_documents(str(path), text_field="body")
    assert docs == [Document("data.jsonl:1", "first doc"), Document("data.jsonl:3", "second doc")]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [("{not json", "not valid JSON"), ('{"other": "x"}', "no 'text' field"), ("[1, 2]", "object")],
)
def test_jsonl_bad_line_names_line_number(tmp_path: Path, bad_line: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n\n' + bad_line + "\n")
    with pytest.raises(CorpusError, match=message) as info:
        list(iter_sequences(str(path), char_tokenize, seq_len=2))
    assert "line 3" in str(info.value)
    assert "\n" not in str(info.value)


def test_hf_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"content": "alpha " * 3, "n": 1}, {"content": None, "n": 2}, {"content": "b", "n": 3}]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    docs = all_documents(f"hf:{folder}", text_field="content")
    assert docs == [
        Document(f"{folder}:row 0", "alpha " * 3),
        Document(f"{folder}:row 1", ""),  # a null cell: an empty document
        Document(f"{folder}:row 2", "b"),
    ]

    skipped: Counter[str] = Counter()
    seqs = list(
        iter_sequences(
            f"hf:{folder}", char_tokenize, seq_len=6, text_field="content", skipped=skipped
        )
    )
    # 18 characters -> three chunks; the one-character row is a sequence of its own.
    assert [(s.document, s.offset) for s in seqs] == [
        *((f"{folder}:row 0", i) for i in (0, 6, 12)),
        (f"{folder}:row 2", 0),
    ]
    assert skipped == {SKIPPED_BLANK: 1}

    with pytest.raises(CorpusError, match=r"no 'text' column \(columns: content, n\)"):
        document_streams(f"hf:{folder}")


def test_hf_load_failure_is_one_line_corpus_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "nope"
    missing.mkdir()
    with pytest.raises(CorpusError, match=f"cannot load dataset {missing}:") as info:
        document_streams(f"hf:{missing}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make_spec", [lambda p: str(p / "missing"), lambda p: str(p / "x.csv")])
def test_bad_spec_lists_accepted_specs(tmp_path: Path, make_spec) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CorpusError) as info:
        iter_sequences(make_spec(tmp_path), char_tokenize)
    message = str(info.value)
    assert "\n" not in message
    assert "'embedded'" in message and "'hf:NAME'" in message and ".jsonl" in message


# ---------------------------------------------------------------- embedded corpus


def test_embedded_mixes_all_four_families_from_the_start() -> None:
    seqs = list(iter_sequences("embedded", char_tokenize, seq_len=64, max_sequences=4))
    assert len(seqs) == 4
    for seq, prefix in zip(seqs, EMBEDDED_PREFIXES, strict=True):
        assert seq.document.startswith(prefix)


def test_embedded_prefix_shares_follow_family_sizes() -> None:
    """Every prefix is a sample of the whole corpus's mix, so a small family is not used up
    early in a long run while the held-out prefix still holds it."""
    n = 600
    seqs = list(iter_sequences("embedded", char_tokenize, seq_len=64, max_sequences=n))
    # One token per character: the estimated sizes are the families' character counts.
    sizes = embedded_family_tokens(char_tokenize)
    chars = [sum(len(d.text) for d in s) for s in document_streams("embedded")]
    assert sizes == pytest.approx(chars)
    assert any(s.length < 64 for s in seqs), "short sequences make tokens and counts differ"
    for prefix, weight in zip(EMBEDDED_PREFIXES, sizes, strict=True):
        for upto in (n // 3, n):
            # Shares are in tokens, to within one sequence: short documents do not make a
            # family's share of the text smaller.
            total = sum(s.length for s in seqs[:upto])
            tokens = sum(s.length for s in seqs[:upto] if s.document.startswith(prefix))
            assert abs(tokens - total * weight / sum(sizes)) <= 1.5 * 64, (prefix, upto, tokens)


def test_proportional_merge_drops_exhausted_streams_and_keeps_order() -> None:
    a, b = iter(["a1", "a2", "a3", "a4", "a5", "a6"]), iter(["b1"])
    assert list(_proportional([a, b], [3, 1])) == ["a1", "b1", "a2", "a3", "a4", "a5", "a6"]
    # Sized items: a stream of short items takes more turns for the same share.
    a, b = iter(["aaaa", "aaaa", "aaaa"]), iter(["b", "b", "b", "b", "b", "b", "b", "b"])
    merged = "".join(_proportional([a, b], [1, 1], size=len))
    assert merged == "aaaabbbbaaaabbbbaaaa"
    with pytest.raises(ValueError, match="positive"):
        list(_proportional([iter([])], [0]))


def test_embedded_is_deterministic() -> None:
    def first_50() -> list[Sequence]:
        return list(iter_sequences("embedded", char_tokenize, seq_len=32, max_sequences=50))

    assert first_50() == first_50()


def test_embedded_streams_are_lazy_and_tokens_match() -> None:
    tokenized = 0

    def counting_tokenize(text: str) -> list[int]:
        nonlocal tokenized
        tokenized += len(text)
        return char_tokenize(text)

    seqs = list(iter_sequences("embedded", counting_tokenize, seq_len=16, max_sequences=20))
    streams = document_streams("embedded")
    docs = [doc for s in streams for doc in itertools.islice(s, EMBEDDED_OPEN_DOCUMENTS)]
    # Only the documents open in each family are tokenized, besides each family's sample
    # for its token rate: not the whole corpus.
    assert tokenized <= 4 * _TOKEN_RATE_SAMPLE_CHARS + sum(len(d.text) for d in docs)
    assert tokenized < sum(len(d.text) for s in document_streams("embedded") for d in s) / 5
    assert_sequences_match_documents(seqs, docs, seq_len=16, bos_id=None)


def test_embedded_shakespeare_each_play_once() -> None:
    shakespeare = document_streams("embedded")[0]
    names = [doc.name for doc in shakespeare]
    assert len(names) == len(set(names))
    assert all(name.startswith("shakespeare/") for name in names)
    assert not any(name.endswith("_f") or "metadata" in name for name in names)
    assert {"shakespeare/hamlet", "shakespeare/lear", "shakespeare/sonnets"} <= set(names)
    assert len(names) >= 30


def test_embedded_python_reference() -> None:
    docs = list(document_streams("embedded")[1])
    names = [doc.name for doc in docs]
    assert names != sorted(names)  # shuffled, so a capped corpus is not all "a..." topics
    assert names == [doc.name for doc in document_streams("embedded")[1]]  # the same every run
    assert len(names) == len(set(names))
    assert "python-reference/assert" in names


def test_embedded_stdlib_docstrings_sample() -> None:
    stream = document_streams("embedded")[2]
    docs = list(itertools.islice(stream, 40))
    assert all(doc.name.startswith("stdlib-docstrings/") for doc in docs)
    assert all(len(doc.text) >= 200 for doc in docs)
    assert not any(".test." in doc.name or doc.name.endswith(".test") for doc in docs)
    doc = next(d for d in docs if "def " in d.text)
    module = doc.name.removeprefix("stdlib-docstrings/")
    assert doc.text.startswith(module + "\n")


def test_embedded_stdlib_docstrings_structure() -> None:
    stream = document_streams("embedded")[2]
    doc = next(d for d in stream if d.name == "stdlib-docstrings/base64")
    assert doc.text.startswith("base64\n")
    assert "def b64encode(s, altchars=None):" in doc.text


def test_embedded_stdlib_source_sample() -> None:
    docs = list(itertools.islice(document_streams("embedded")[3], 15))
    names = [doc.name for doc in docs]
    assert names == [d.name for d in itertools.islice(document_streams("embedded")[3], 15)]
    assert all(name.startswith("stdlib-source/") and name.endswith(".py") for name in names)
    assert not any("/test/" in name or "idlelib" in name for name in names)
    assert all(len(doc.text.encode()) <= 60 * 1024 for doc in docs)
    assert any("def " in doc.text or "import " in doc.text for doc in docs)


def test_gutenberg_boilerplate_is_stripped() -> None:
    from indexer.embedded_corpus import _strip_gutenberg

    raw = (
        "The Project Gutenberg EBook of Hamlet\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
        "Produced by volunteers of Project Gutenberg\n"
        "To be, or not to be.\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
        "License text\n"
    )
    assert _strip_gutenberg(raw) == "To be, or not to be.\n"
    assert _strip_gutenberg("Plain play text.\n") == "Plain play text.\n"


def test_a_capped_embedded_corpus_mixes_many_documents() -> None:
    seqs = list(iter_sequences("embedded", char_tokenize, seq_len=64, max_sequences=400))
    docs = {s.document for s in seqs}
    for family in ("shakespeare/", "python-reference/", "stdlib-docstrings/", "stdlib-source/"):
        assert sum(d.startswith(family) for d in docs) >= EMBEDDED_OPEN_DOCUMENTS
