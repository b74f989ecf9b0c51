"""What every view builder shares: the frozen base, the errors it raises, and the lookups
of a model, source or unit that answer 404."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from spyglass import storage


class NotFound(Exception):
    """No such model, source, unit or sequence (answered with 404)."""


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class LimitError(Exception):
    """Input outside a documented cap or rule (answered with 422)."""

    def __init__(self, message: str, *, field: str | None = None, rule: str = "invalid"):
        super().__init__(message)
        self.field = field
        """The input at fault, dotted (``prompt``, ``units.0.strength``), if one is."""
        self.rule = rule
        """What it broke, a short stable word (``max_tokens``, ``range``, ``not_empty``)."""


def require_model(conn: Connection, slug: str) -> storage.ModelRow:
    m = storage.get_model(conn, slug)
    if m is None:
        raise NotFound(f"no model {slug!r} in this index")
    return m


def require_source(conn: Connection, m: storage.ModelRow, name: str) -> storage.SourceRow:
    s = storage.get_source(conn, m.id, name)
    if s is None:
        raise NotFound(f"model {m.slug!r} has no source {name!r}")
    return s


def require_unit(conn: Connection, s: storage.SourceRow, index: str | int) -> storage.UnitRow:
    try:
        idx = int(index)
    except ValueError:
        raise NotFound(f"unit index must be an integer, not {index!r}") from None
    unit = storage.get_unit(conn, s.id, idx) if 0 <= idx < s.n_units else None
    if unit is None:
        raise NotFound(f"source {s.name!r} has no unit {index} (it has 0..{s.n_units - 1})")
    return unit
