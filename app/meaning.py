"""What units mean: their explanations on the unit page, labels wherever a unit is
linked, and the search over explanations (``/{model}/search``)."""

from __future__ import annotations

from collections import defaultdict
from typing import TypeVar

from sqlalchemy import Connection

from app import index_cache, urls
from app.view_base import LimitError, View, require_model, require_source
from spyglass import storage

SEARCH_PAGE = 20
MAX_QUERY = 200


class Score(View):
    name: str
    """``simulation_r``, ``simulation_auc``, ``detection``, ``detection_hard`` or
    ``fuzzing`` (see docs/explanations.md)."""
    value: float
    lo: float | None
    hi: float | None
    """The bootstrap 95% interval."""
    n: int
    """Held-out examples it was measured on."""


class Baseline(View):
    """The token-pattern explanation of the same unit, scored by the same scorers on the
    same examples as an LLM's explanation."""

    method: str
    text: str
    scores: list[Score] = []


class Explanation(View):
    method: str
    """``token-pattern``, ``llm`` or ``human``."""
    text: str
    explainer: str | None = None
    """The LLM (its endpoint's model name), or the person, who wrote it."""
    created: str
    scores: list[Score] = []
    baseline: Baseline | None = None
    evidence: dict | None = None
    earlier_index: str | None = None
    """When it was made on an earlier index of this model and kept through a re-index: the
    time that index was written. Null when made on this one."""
    scored_earlier: str | None = None
    """When its scores were measured on an earlier index (``spyglass explain --rescore``
    measures them on this one): the time that index was written."""


def unit_explanations(conn: Connection, source_id: int, unit: int) -> list[Explanation]:
    out = []
    rows = storage.get_explanations(conn, source_id, unit)
    current = storage.source_identity(conn, source_id)["indexed"] if rows else ""
    for e in rows:
        base = (e.evidence or {}).get("baseline")
        out.append(
            Explanation(
                method=e.method,
                text=e.text,
                explainer=e.explainer,
                created=e.created,
                evidence=e.evidence,
                scores=_scores(e.scores),
                baseline=None
                if not base
                else Baseline(
                    method=base["method"], text=base["text"], scores=_scores(base["scores"])
                ),
                earlier_index=e.indexed if e.indexed != current else None,
                scored_earlier=e.scored if e.scores and e.scored != current else None,
            )  # fmt: skip
        )
    return out


def _scores(raw: dict) -> list[Score]:
    return [
        Score(name=k, value=v["value"], lo=_finite(v.get("lo")), hi=_finite(v.get("hi")), n=v["n"])
        for k, v in sorted(raw.items())
    ]


def _finite(x) -> float | None:
    return x if isinstance(x, int | float) and x == x else None


T = TypeVar("T", bound=View)


def labelled(conn: Connection, model_id: int, links: list[T]) -> list[T]:
    """Links to units (views with ``source`` and ``index``), each with its label."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for link in links:
        wanted[link.source].add(link.index)
    labels: dict[tuple[str, int], str] = {}
    for name, ids in wanted.items():
        s = storage.get_source(conn, model_id, name)
        if s is not None:
            labels |= {(name, u): t for u, t in storage.unit_labels(conn, s.id, ids).items()}
    return [
        link.model_copy(update={"explanation": labels.get((link.source, link.index))})
        for link in links
    ]


class SearchHit(View):
    source: str
    index: int
    url: str
    explanation: str | None = None
    """The matching explanation (text search), or the unit's label (token search)."""
    method: str | None = None
    density: float
    max_act: float
    token: str | None = None
    """Token search: the token matched."""
    weight: float | None = None
    """Token search: the share of the unit's top examples on the token (``fires``), or
    its effect on the token's logit (``promotes``, ``suppresses``)."""


class SearchPage(View):
    model: str
    q: str
    token: str = ""
    effect: str = "fires"
    source: str | None = None
    min_density: float | None = None
    max_density: float | None = None
    page: int
    hits: list[SearchHit]
    has_next: bool
    sources: list[str]
    """Every source of the model (the filter's choices)."""


def search_page(
    conn: Connection,
    slug: str,
    q: str,
    *,
    source: str | None,
    min_density: float | None,
    max_density: float | None,
    page: int,
    token: str = "",
    effect: str = "fires",
) -> SearchPage:
    m = require_model(conn, slug)
    if source is not None:
        require_source(conn, m, source)
    rows = storage.list_sources(conn, m.id)
    names = [s.name for s in rows]
    if token:
        if min_density is not None or max_density is not None:
            raise LimitError(
                "min_density and max_density filter a search by words, not by token",
                field="min_density" if min_density is not None else "max_density",
                rule="not_with_token",
            )
        return _token_search(conn, m, rows, token, effect, source, page)
    q = q.strip()
    if len(q) > MAX_QUERY:
        raise LimitError(f"q: at most {MAX_QUERY} characters", field="q", rule="max_length")
    hits: list[storage.SearchHit] = []
    if q:
        try:
            hits = storage.search_explanations(
                conn,
                m.id,
                q,
                source=source,
                min_density=min_density,
                max_density=max_density,
                offset=(page - 1) * SEARCH_PAGE,
                limit=SEARCH_PAGE + 1,
            )
        except ValueError as exc:
            raise LimitError(f"q: {exc}", field="q", rule="no_words") from None
    return SearchPage(
        model=slug,
        q=q,
        source=source,
        min_density=min_density,
        max_density=max_density,
        page=page,
        has_next=len(hits) > SEARCH_PAGE,
        sources=names,
        hits=[
            SearchHit(
                source=h.source,
                index=h.unit,
                url=urls.unit(slug, h.source, h.unit),
                explanation=h.text,
                method=h.method,
                density=h.density,
                max_act=h.max_act,
            )
            for h in hits[:SEARCH_PAGE]
        ],
    )


class EmbedOptions(View):
    """What a unit's embed shows (``?embed=true``; Neuronpedia's embed parameters, each
    true unless set to false)."""

    embedexplanation: bool = True
    embedplots: bool = True
    """The logit tables and the activation histogram."""
    embedactivations: bool = True
    """The top activating examples (the first 5)."""
    embedtest: bool = True
    """The box to run a text through the unit (``defaulttesttext`` fills it)."""
    embedsteer: bool = False
    embedlink: bool = True
    """A link to the whole unit page."""


class UnitEmbed(View):
    unit: View
    show: EmbedOptions


def _token_search(conn, m, rows, token, effect, source, page) -> SearchPage:
    """Units whose top examples sit on ``token`` (``fires``), or that promote or suppress
    it most, from the token index the indexer wrote. The token is a vocabulary entry's
    exact text, or else every entry equal to it after trimming and case folding."""
    if len(token) > MAX_QUERY:
        raise LimitError(f"token: at most {MAX_QUERY} characters", field="token", rule="max_length")
    vocab = index_cache.vocabulary(conn, m)
    ids = [i for i, t in vocab.items() if t == token]
    if not ids:
        wanted = token.strip().casefold()
        ids = [i for i, t in vocab.items() if t.strip().casefold() == wanted]
    if not ids:
        raise LimitError(
            f"token: {token!r} is not in the model's vocabulary", field="token", rule="vocab"
        )
    try:
        found = storage.units_for_tokens(conn, m.id, ids, effect, source=source)
    except LookupError as exc:
        raise LimitError(f"token: {exc}", field="token", rule="no_token_index") from None
    shown = found[(page - 1) * SEARCH_PAGE : page * SEARCH_PAGE]
    by_name = {s.name: s for s in rows}
    hits = []
    for h in shown:
        row = storage.get_unit(conn, by_name[h.source].id, h.unit)
        hits.append(
            SearchHit(
                source=h.source,
                index=h.unit,
                url=urls.unit(m.slug, h.source, h.unit),
                density=row.density,
                max_act=row.max_act,
                token=vocab[h.token_id],
                weight=h.weight,
            )
        )
    hits = labelled(conn, m.id, hits)
    return SearchPage(
        model=m.slug,
        q="",
        token=token,
        effect=effect,
        source=source,
        page=page,
        has_next=len(found) > page * SEARCH_PAGE,
        sources=list(by_name),
        hits=hits,
    )
