"""The indexed units and sources a live request is about, read from the index."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from app import views
from app.live.schema import LimitError
from app.model_service import ModelService
from spyglass import storage
from spyglass.model import Model
from spyglass.sources import Source


@dataclass(frozen=True)
class Target:
    """The indexed unit a live request is about."""

    model: storage.ModelRow
    source: storage.SourceRow
    unit: storage.UnitRow


def find_target(conn: Connection, slug: str, source: str, index: str | int) -> Target:
    """The unit behind a live request (404s as pages do)."""
    return Target(*views.model_spec(conn, slug, source, index))


def model_and_sources(conn: Connection, slug: str):
    m = views.require_model(conn, slug)
    return m, storage.list_sources(conn, m.id)


def load_source(service: ModelService, s: storage.SourceRow, model: Model) -> Source:
    """The indexed source ``s``, with its SAE or transcoder loaded for latents."""
    latent = s.kind in ("sae", "transcoder")
    sae = service.sae(s.sae, model) if latent and s.sae else None
    if latent and sae is None:
        raise LimitError(f"source {s.name!r} records no folder to load", field="source")
    return Source(s.name, s.kind, s.layer, s.hook, s.n_units, sae, s.sae)
