"""Turning a view model into a response: HTML from a template, or its JSON twin."""

from __future__ import annotations

import math
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=ROOT / "templates")


def split_json(name: str) -> tuple[str, bool]:
    """``"12.json"`` -> ``("12", True)``: every page answers at its path plus ``.json``."""
    return (name.removesuffix(".json"), True) if name.endswith(".json") else (name, False)


def render(
    request: Request, template: str, view: BaseModel, *, as_json: bool = False, status: int = 200
) -> Response:
    if as_json:
        return JSONResponse(view.model_dump(mode="json"), status_code=status)
    return templates.TemplateResponse(request, template, {"view": view}, status_code=status)


def shade(value: float | None, scale: float) -> str:
    """Background colour of a token: orange for positive, blue for negative, alpha by |v|/scale."""
    if value is None or scale <= 0 or math.isnan(value):
        return "transparent"
    alpha = min(abs(value) / scale, 1.0)
    rgb = "255,140,0" if value > 0 else "60,120,255"
    return f"rgba({rgb},{alpha:.3f})"


def visible(token: str) -> str:
    """Make whitespace-only pieces of a token visible."""
    return token.replace("\n", "↵").replace("\t", "⇥")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


templates.env.filters.update(shade=shade, visible=visible, fmt=fmt)
