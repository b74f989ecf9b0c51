"""Attribution patching (``/{model}/atp``): every indexed unit and every attention head,
estimated to first order for a clean / corrupt prompt pair, the top ones measured by real
patching (``spyglass.patching``)."""

from __future__ import annotations

import time

from pydantic import Field

from app import meaning, urls, views
from app.live.attribution import one_token
from app.live.schema import LimitError, OptionalStr, Request, check_text, check_tokens
from app.live.targets import load_source, model_and_sources
from app.model_service import ModelService
from app.reader import IndexReader
from spyglass.model import Model
from spyglass.patching import HEADS, attribution_patching, top_units
from spyglass.settings import Settings

MAX_VERIFY = 100
"""Most units one request may patch for real (each is a forward pass)."""
LISTED = 50
"""Units listed, by |estimate|."""


class AtpRequest(Request):
    clean: str = Field("", description="The clean prompt.")
    corrupt: str = Field("", description="The corrupt prompt: as many tokens as the clean one.")
    target: OptionalStr = Field(
        None,
        description="The token whose logit is the metric, at the clean prompt's last "
        "position (one token of text); default: the clean run's top prediction.",
    )
    other: OptionalStr = Field(None, description="A second token: the metric is the difference.")
    sources: list[str] = Field(
        default_factory=list,
        description=f"Sources to include (repeatable), and {HEADS!r} for attention heads; "
        "default: every indexed source and the heads.",
    )
    verify: int = Field(20, ge=0, le=MAX_VERIFY, description="Top units to patch for real.")


class AtpUnit(views.View):
    source: str
    """An indexed source, or ``heads``."""
    index: int
    """For a head: layer x heads + head."""
    label: str
    estimate: float
    """First-order AtP: sum over positions of (a_corrupt - a_clean) . dmetric/da."""
    patched: float | None = None
    """Measured: metric with the unit patched to its corrupt values, minus the clean metric."""
    url: str | None = None
    explanation: str | None = None


class AtpResult(views.View):
    model: str
    clean: str = ""
    corrupt: str = ""
    target: str | None = None
    other: str | None = None
    verify: int = 20
    tokens: list[str] = []
    """The clean prompt's tokens."""
    metric_clean: float = 0.0
    metric_corrupt: float = 0.0
    units: list[AtpUnit] = []
    """The top units by |estimate|, then any other verified one."""
    layers: dict[str, list[float]] = {}
    """Per source kind (``mlp``, a latent source's name, ``heads``): the sum of the
    estimates at each layer (index = layer)."""
    heads: list[list[float]] = []
    """[layer][head] estimates."""
    n_units: int = 0
    """Units estimated."""
    seconds: float = 0.0
    """The analysis's time: one clean forward and backward pass, one corrupt forward, and
    one batch of verification runs (one row per unit, plus the unpatched run)."""


async def atp(
    service: ModelService, settings: Settings, reader: IndexReader, slug: str, req: AtpRequest
) -> AtpResult:
    m, sources = await reader.run(model_and_sources, slug)
    result = AtpResult(model=slug, clean=req.clean, corrupt=req.corrupt, verify=req.verify)
    if not req.clean and not req.corrupt:
        return result
    check_text(req.clean, settings, field="clean")
    check_text(req.corrupt, settings, field="corrupt")
    names = {s.name for s in sources}
    unknown = sorted(set(req.sources) - names - {HEADS})
    if unknown:
        raise LimitError(
            f"unknown source {', '.join(unknown)} (choose from {', '.join(sorted(names))}, "
            f"{HEADS})",
            field="sources",
            rule="unknown",
        )
    chosen = [s for s in sources if not req.sources or s.name in req.sources]
    heads = not req.sources or HEADS in req.sources

    def work(model: Model):
        clean = check_tokens(model, req.clean, settings, field="clean")
        corrupt = check_tokens(model, req.corrupt, settings, field="corrupt")
        if len(clean) != len(corrupt):
            raise LimitError(
                f"clean is {len(clean)} tokens and corrupt is {len(corrupt)}: they must be "
                "the same length",
                field="corrupt",
                rule="same_length",
            )
        started = time.perf_counter()
        if req.target:
            target = one_token(model, req.target, "target")
        else:
            target = int(model.log_probs(clean)[-1].argmax())
        other = one_token(model, req.other, "other") if req.other else None
        loaded = [load_source(service, s, model) for s in chosen]
        r = attribution_patching(
            model, loaded, clean, corrupt, target, other, skip_first=m.skip_first,
            heads=heads, verify=req.verify,
        )  # fmt: skip
        texts = model.token_strings([target] + ([other] if other is not None else []))
        return r, texts, model.token_strings(clean), model.n_heads, time.perf_counter() - started

    r, texts, tokens, n_heads, seconds = await service.run(m.spec, work, m.options)
    kinds = {s.name: s.kind for s in sources}
    layer_of = {s.name: s.layer for s in sources}
    listed = top_units(r.estimates, LISTED, nonzero=False)
    shown = set(listed)
    listed += [key for key in r.patched if key not in shown]  # verified beyond the top
    units = []
    for name, i in listed:
        if name == HEADS:
            label, url = "L{}H{}".format(*divmod(i, n_heads)), None
        else:
            label, url = f"{name}/{i}", urls.unit(slug, name, i, prompt=req.clean)
        units.append(AtpUnit(source=name, index=i, label=label, url=url,
                             estimate=float(r.estimates[name][i]),
                             patched=r.patched.get((name, i))))  # fmt: skip
    linked = [u for u in units if u.source != HEADS]
    linked = await reader.run(lambda conn: meaning.labelled(conn, m.id, linked))
    by_key = {(u.source, u.index): u for u in linked}
    units = [by_key.get((u.source, u.index), u) for u in units]
    layers: dict[str, list[float]] = {}
    for name, e in r.estimates.items():
        if name == HEADS:
            continue
        key = "mlp" if kinds[name] == "mlp" else name
        row = layers.setdefault(key, [0.0] * m.n_layers)
        row[layer_of[name]] += float(e.sum())
    grid: list[list[float]] = []
    if HEADS in r.estimates:
        e = r.estimates[HEADS].tolist()
        grid = [e[k : k + n_heads] for k in range(0, len(e), n_heads)]
        layers["heads"] = [sum(row) for row in grid]
    return result.model_copy(
        update={
            "target": texts[0],
            "other": texts[1] if len(texts) > 1 else None,
            "tokens": tokens,
            "metric_clean": r.metric_clean,
            "metric_corrupt": r.metric_corrupt,
            "units": units,
            "layers": layers,
            "heads": grid,
            "n_units": sum(len(e) for e in r.estimates.values()),
            "seconds": seconds,
        }
    )
