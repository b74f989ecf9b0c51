"""What every view model shares: the frozen base, and the errors a builder raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
