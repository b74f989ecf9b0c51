"""``POST /api/{model}/{source}/{index}/labels``: a person's label of a unit, through the
write gate (``app.write_access``: a key, or loopback; same origin; a rate)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request

from app.errors import LABEL_ERRORS
from app.labels import LabelRequest
from app.meaning import Explanation
from app.write_access import WriteAccess

api = APIRouter(prefix="/api", tags=["labels"], responses=LABEL_ERRORS)


@api.post(
    "/{model}/{source}/{index}/labels",
    status_code=201,
    response_model=Explanation,
    summary="Label a unit: stored with its author and time, beside its explanations",
)
async def add_label(
    request: Request, model: str, source: str, index: str, body: LabelRequest, _: WriteAccess
):
    store = request.app.state.labels
    return await anyio.to_thread.run_sync(store.add, model, source, index, body)
