"""``POST /api/{model}/{source}/{index}/labels``: a person's label of a unit."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, HTTPException, Request

from app.deps import SettingsDep
from app.errors import LABEL_ERRORS
from app.labels import LabelRequest
from app.meaning import Explanation

api = APIRouter(prefix="/api", tags=["labels"], responses=LABEL_ERRORS)


@api.post(
    "/{model}/{source}/{index}/labels",
    status_code=201,
    response_model=Explanation,
    summary="Label a unit: stored with its author and time, beside its explanations",
)
async def add_label(
    request: Request, model: str, source: str, index: str, body: LabelRequest, settings: SettingsDep
):
    if not settings.labels:
        raise HTTPException(403, "this server does not accept labels")
    store = request.app.state.labels
    return await anyio.to_thread.run_sync(store.add, model, source, index, body)
