"""Server settings, read from ``SPYGLASS_*`` environment variables."""

from __future__ import annotations

import os

from limits import parse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_model_threads() -> int | None:
    cores = os.cpu_count() or 2
    return cores - 1 if cores <= 4 else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPYGLASS_", frozen=True)

    db: str = "data/spyglass.db"
    """SQLite path or SQLAlchemy URL of the index."""
    device: str | None = None
    """Device for live model requests; CUDA when available, else CPU."""
    preload: bool = False
    """Load each indexed model at start-up instead of on the first live request."""
    page_size: int = 50
    """Units per page when browsing a source."""
    max_prompt_chars: int = 4000
    """Longest prompt text accepted by live forms."""
    max_prompt_tokens: int = 256
    """Longest tokenized prompt accepted by live forms."""
    max_new_tokens: int = 64
    """Most tokens a steering request may generate."""
    max_coefficient: float = 1000.0
    """Steering coefficients must lie in [-max_coefficient, max_coefficient]."""
    max_temperature: float = 2.0
    max_steer_units: int = 16
    """Most units one steering request may steer at once."""
    max_queue: int = 8
    """Live requests that may wait behind the running one; more get 503 at once."""
    request_timeout: float = 60.0
    """Seconds a live request may take, waiting included; past it, 503."""
    model_threads: int | None = Field(default_factory=lambda: _default_model_threads())
    """CPU threads for live model work. On a small machine (up to 4 cores) it leaves one
    core to page views, which a busy model would otherwise starve; on larger ones (or with
    a GPU) torch's own choice."""
    db_threads: int = 8
    """Worker threads (each with its own connection) that read the index at once; more
    page requests wait their turn without holding either."""
    page_cache_mb: int = 256
    """Memory for rendered pages (kept compressed and plain) per server process."""
    max_body_bytes: int = 65536
    """Largest request body accepted; larger ones get 413."""
    labels: bool = True
    """Accept people's labels of units (``POST /api/{model}/{source}/{index}/labels``),
    written through an engine of the server's own; false answers 403."""
    write_token: SecretStr | None = None
    """The key writes need (``Authorization: Bearer``). Without one, only loopback clients
    may write (``app.write_access``)."""
    write_rate: str = "30/minute"
    """Writes each client may attempt, as ``N/second|minute|hour`` (the ``limits``
    library's notation); past it, 429 with Retry-After."""

    @field_validator("write_token", mode="before")
    @classmethod
    def _no_empty_token(cls, value):
        if isinstance(value, str) and not value.strip():
            return None  # SPYGLASS_WRITE_TOKEN= (empty, as compose passes an unset one)
        return value

    @field_validator("write_rate")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate like 30/minute") from None
        return value
