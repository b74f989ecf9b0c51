"""What outlives an index: explanations and people's labels.

An explanation belongs to a unit by name (its model's slug, its source's name, the unit)
and by what the unit is (``unit_key``), not to one index's rows. A re-index under the same
name (``write.replace_model``) detaches the model's explanations from its old sources;
each new source (``write.add_source``) attaches those with its name and key whose unit it
has. So no re-index deletes a label or an explanation:

- one whose source is indexed again comes back on it, marked as made on an earlier index
  (``indexed``, the ``created`` of the index it was made on);
- one whose source is gone (or now holds other units: another model, another SAE) stays
  in the table, detached, and comes back if the source does.

Only a command that says it deletes (none yet deletes labels) ever removes a label.

``export_labels`` and ``import_labels`` carry labels as JSON lines between indexes and
servers; importing the same lines twice adds nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, and_, func, select, update

from spyglass.storage.explanations import _has, source_identity
from spyglass.storage.schema import explanations, models, sources, unit_key

__all__ = [
    "detach_explanations",
    "attach_explanations",
    "KeptReport",
    "kept_report",
    "stale_explanations",
    "rescored",
    "MAX_LABEL",
    "MAX_AUTHOR",
    "clean_text",
    "LABEL_FIELDS",
    "export_labels",
    "ImportReport",
    "import_labels",
]

HUMAN = "human"


def detach_explanations(conn: Connection, model_id: int) -> int:
    """Detach the explanations of the model's sources (before they are deleted)."""
    if not _has(conn, explanations):
        return 0
    ids = select(sources.c.id).where(sources.c.model_id == model_id)
    q = update(explanations).where(explanations.c.source_id.in_(ids)).values(source_id=None)
    return conn.execute(q).rowcount


def attach_explanations(conn: Connection, source_id: int) -> int:
    """Attach to a new source the detached explanations that are of its units: its model's
    slug, its name, its unit key, and a unit it has. Returns how many."""
    if not _has(conn, explanations):
        return 0
    who = source_identity(conn, source_id)
    n_units = conn.execute(select(sources.c.n_units).where(sources.c.id == source_id)).scalar()
    q = (
        update(explanations)
        .where(
            explanations.c.source_id.is_(None),
            explanations.c.model == who["model"],
            explanations.c.source == who["source"],
            explanations.c.unit_key == who["unit_key"],
            explanations.c.unit < n_units,
        )
        .values(source_id=source_id)
    )
    return conn.execute(q).rowcount


@dataclass
class KeptReport:
    """What a re-index under one name kept of the earlier indexes' explanations."""

    kept: Counter = field(default_factory=Counter)
    """Explanations made on an earlier index, shown on this one, by method."""
    waiting: Counter = field(default_factory=Counter)
    """Explanations whose source is not in this index (kept, detached), by method."""

    def lines(self) -> list[str]:
        """The CLI's lines, e.g. ``3 labels on sources no longer indexed: kept``."""
        out = []
        if self.kept:
            out.append(f"kept from earlier indexes: {_counts(self.kept)}")
        if self.waiting[HUMAN]:
            n = self.waiting[HUMAN]
            out.append(f"{n} label{'s' * (n != 1)} on sources no longer indexed: kept")
        if other := sum(v for k, v in self.waiting.items() if k != HUMAN):
            out.append(f"{other} explanations on sources no longer indexed: kept")
        return out


def _counts(c: Counter) -> str:
    names = {HUMAN: "labels", "llm": "LLM explanations", "token-pattern": "token patterns"}
    return ", ".join(f"{n} {names.get(m, m)}" for m, n in sorted(c.items()))


def kept_report(conn: Connection, slug: str) -> KeptReport:
    """What the index ``slug`` (just written) holds of earlier indexes' explanations."""
    report = KeptReport()
    if not _has(conn, explanations):
        return report
    created = conn.execute(select(models.c.created).where(models.c.slug == slug)).scalar()
    e = explanations.c
    q = (
        select(e.method, e.source_id.is_(None), func.count())
        .where(e.model == slug, e.source_id.is_(None) | (e.indexed != created))
        .group_by(e.method, e.source_id.is_(None))
    )
    for method, detached, n in conn.execute(q):
        (report.waiting if detached else report.kept)[method] += n
    return report


def stale_explanations(conn: Connection, source_id: int, method: str) -> list[dict]:
    """The source's explanations by ``method`` whose scores were measured on an earlier
    index (``spyglass explain --rescore``): id, unit, text, scores, evidence, explainer."""
    if not _has(conn, explanations):
        return []
    current = source_identity(conn, source_id)["indexed"]
    e = explanations.c
    q = (
        select(e.id, e.unit, e.text, e.scores, e.evidence, e.explainer)
        .where(
            e.source_id == source_id,
            e.method == method,
            (e.scored.is_(None)) | (e.scored != current),
        )
        .order_by(e.unit, e.id)
    )
    return [
        {
            "id": r.id,
            "unit": r.unit,
            "text": r.text,
            "explainer": r.explainer,
            "scores": orjson.loads(r.scores) if r.scores else {},
            "evidence": orjson.loads(r.evidence) if r.evidence else {},
        }
        for r in conn.execute(q)
    ]


def rescored(conn: Connection, source_id: int, rows: Iterable[dict]) -> int:
    """Store new ``scores`` and ``evidence`` of explanations (``id``), measured on the
    source's index. Returns how many."""
    current = source_identity(conn, source_id)["indexed"]
    n = 0
    for r in rows:
        q = (
            update(explanations)
            .where(explanations.c.id == r["id"], explanations.c.source_id == source_id)
            .values(
                scores=orjson.dumps(r["scores"], option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                evidence=orjson.dumps(r["evidence"], option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                scored=current,
            )
        )
        n += conn.execute(q).rowcount
    return n


# ---- labels as JSON lines -------------------------------------------------------

MAX_LABEL = 500
MAX_AUTHOR = 80
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2066-\u2069\ufeff]")
"""Control characters, and the invisible ones that reorder or hide text (bidi overrides,
zero-width space, BOM): a label shows what it says."""


def clean_text(value: str, most: int) -> str:
    """A label's text (or author) as stored: one line, single spaces, no control or hidden
    characters, 1 to ``most`` characters. ValueError otherwise."""
    value = " ".join(_HIDDEN.sub(" ", unicodedata.normalize("NFC", value)).split())
    if not value:
        raise ValueError("must not be empty")
    if len(value) > most:
        raise ValueError(f"at most {most} characters")
    return value


LABEL_FIELDS = ("model", "source", "unit", "text", "author", "created", "indexed", "unit_key")
"""One line of ``spyglass labels export``: where the label is (model slug, source name,
unit), what it says, who gave it and when, the ``created`` of the index it was made on,
and what the unit was (``unit_key``)."""


def export_labels(conn: Connection, model: str | None = None) -> Iterator[dict]:
    """Every label (of ``model``, or of all), attached or not, oldest first."""
    if not _has(conn, explanations):
        return
    e = explanations.c
    q = select(e.model, e.source, e.unit, e.text, e.explainer, e.created, e.indexed, e.unit_key)
    q = q.where(e.method == HUMAN)
    if model is not None:
        q = q.where(e.model == model)
    for r in conn.execute(q.order_by(e.id)):
        yield {
            "model": r.model,
            "source": r.source,
            "unit": r.unit,
            "text": r.text,
            "author": r.explainer,
            "created": r.created,
            "indexed": r.indexed,
            "unit_key": r.unit_key,
        }


@dataclass
class ImportReport:
    added: int = 0
    """Labels attached to a unit of this index."""
    waiting: int = 0
    """Labels whose source (or unit) this index lacks: stored detached."""
    present: int = 0
    """Labels already here (same place, text, author and time): not added again."""


def import_labels(
    conn: Connection, lines: Iterable[dict], *, model: str | None = None
) -> ImportReport:
    """Store labels read from ``export_labels`` lines (``model`` renames their model). A
    label lands on the source of this index with its model and source name (taking that
    source's unit key: the person moving it says it is the same unit), or detached with
    its own key. ValueError naming the first malformed line."""
    report = ImportReport()
    rows = [_label_line(i, line) for i, line in enumerate(lines, 1)]
    e = explanations.c
    slugs = {}
    for row in rows:
        if model is not None:
            row["model"] = model
        here = _source_of(conn, row["model"], row["source"], slugs)
        key = (row["model"], row["source"], row["unit"], row["text"], row["author"])
        same = select(func.count()).where(
            e.method == HUMAN, e.model == key[0], e.source == key[1], e.unit == key[2],
            e.text == key[3], e.explainer == key[4], e.created == row["created"],
        )  # fmt: skip
        if conn.execute(same).scalar():
            report.present += 1
            continue
        attach = here is not None and row["unit"] < here[1]
        conn.execute(
            explanations.insert().values(
                source_id=here[0] if attach else None,
                model=row["model"],
                source=row["source"],
                unit_key=here[2] if attach else row["unit_key"],
                unit=row["unit"],
                method=HUMAN,
                settings="",
                text=row["text"],
                explainer=row["author"],
                created=row["created"],
                indexed=row["indexed"],
            )
        )
        if attach:
            report.added += 1
        else:
            report.waiting += 1
    return report


def _source_of(conn: Connection, slug: str, name: str, cache: dict):
    """(id, n_units, unit key) of the source ``name`` of model ``slug`` here, or None."""
    if (slug, name) not in cache:
        q = (
            select(sources.c.id, sources.c.n_units, models.c.spec, sources.c.kind,
                   sources.c.hook, sources.c.sae)
            .join(models, and_(models.c.id == sources.c.model_id, models.c.slug == slug))
            .where(sources.c.name == name)
        )  # fmt: skip
        r = conn.execute(q).first()
        cache[slug, name] = None if r is None else (r.id, r.n_units, unit_key(*r[2:]))
    return cache[slug, name]


def _label_line(number: int, line: dict) -> dict:
    """One line checked: the fields of ``LABEL_FIELDS`` with their types (ValueError)."""
    if not isinstance(line, dict):
        raise ValueError(f"line {number}: not a JSON object")
    missing = [f for f in LABEL_FIELDS if f not in line]
    if missing:
        raise ValueError(f"line {number}: missing {', '.join(missing)}")
    if not isinstance(line["unit"], int) or isinstance(line["unit"], bool) or line["unit"] < 0:
        raise ValueError(f"line {number}: unit must be a whole number >= 0")
    for name in ("model", "source", "text", "author", "created", "indexed", "unit_key"):
        if not isinstance(line[name], str) or not line[name]:
            raise ValueError(f"line {number}: {name} must be a non-empty string")
    out = {f: line[f] for f in LABEL_FIELDS}
    for name, most in (("text", MAX_LABEL), ("author", MAX_AUTHOR)):
        try:
            out[name] = clean_text(out[name], most)
        except ValueError as exc:
            raise ValueError(f"line {number}: {name} {exc}") from None
    return out
