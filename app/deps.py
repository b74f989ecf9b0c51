"""Request dependencies, as ``Annotated`` aliases for route signatures.

They are ``async``, so they run on the event loop, not on a worker thread. None of them
holds a database connection: routes read the index through the
:class:`~app.reader.IndexReader`, one short call at a time (see app/reader.py for why).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.jobs import Jobs
from app.model_service import ModelService
from app.reader import IndexReader
from app.render import PageServer
from spyglass.settings import Settings


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _reader(request: Request) -> IndexReader:
    return request.app.state.reader


async def _pages(request: Request) -> PageServer:
    return request.app.state.pages


async def _models(request: Request) -> ModelService:
    service: ModelService = request.app.state.models
    service.refuse_when_full()  # a 503 at once, before any work on a request it cannot take
    return service


async def _models_for_jobs(request: Request) -> ModelService:
    return request.app.state.models


async def _jobs(request: Request) -> Jobs:
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(_settings)]
ReaderDep = Annotated[IndexReader, Depends(_reader)]
PagesDep = Annotated[PageServer, Depends(_pages)]
ModelsDep = Annotated[ModelService, Depends(_models)]
JobsDep = Annotated[Jobs, Depends(_jobs)]
JobModelsDep = Annotated[ModelService, Depends(_models_for_jobs)]
"""The model service without the early refusal, for routes of long jobs (``app.jobs``):
asking after a job under way needs no turn on the queue; starting one is refused there."""
