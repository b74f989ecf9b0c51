"""Request dependencies, as ``Annotated`` aliases for route signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection

from app.model_service import ModelService
from spyglass.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _conn(request: Request) -> Iterator[Connection]:
    with request.app.state.engine.connect() as conn:
        yield conn


def _models(request: Request) -> ModelService:
    return request.app.state.models


SettingsDep = Annotated[Settings, Depends(_settings)]
ConnDep = Annotated[Connection, Depends(_conn)]
ModelsDep = Annotated[ModelService, Depends(_models)]
