"""The pages' builders: each page's view model (``app.view_models``, imported here for
the routes) from storage reads.

The HTML template and the ``.json`` twin of a page render the same object.
"""

from __future__ import annotations

import math
import random

from sqlalchemy import Connection

from app import meaning, urls
from app.index_cache import sequences, vocabulary
from app.view_base import NotFound, require_model, require_source, require_unit
from app.view_base import View as View  # the base of every view model, reached here
from app.view_models import (
    Example,
    ExpandedExample,
    Histogram,
    HomePage,
    Interval,
    LogitToken,
    ModelPage,
    ModelSummary,
    Neighbour,
    SequencePage,
    SourceCard,
    SourcePage,
    UnitLinks,
    UnitListing,
    UnitPage,
)
from spyglass import storage
from spyglass.sources import LATENT_KINDS

LOG_DENSITY_BINS = 30


def _model_summary(m: storage.ModelRow) -> ModelSummary:
    return ModelSummary(
        slug=m.slug,
        spec=m.spec,
        corpus=m.corpus,
        n_layers=m.n_layers,
        n_sequences=m.n_sequences,
        n_tokens=m.n_tokens,
        seq_len=m.seq_len,
        skip_first=m.skip_first,
        top_k=m.top_k,
        created=m.created,
        url=urls.model(m.slug),
    )


def home(conn: Connection) -> HomePage:
    return HomePage(models=[_model_summary(m) for m in storage.list_models(conn)])


def _source_card(slug: str, s: storage.SourceRow, stats: storage.SourceSummary | None):
    return SourceCard(
        name=s.name,
        kind=s.kind,
        layer=s.layer,
        hook=s.hook,
        n_units=s.n_units,
        mean_density=stats.mean_density if stats else 0.0,
        dead=stats.dead if stats else 0,
        max_act=stats.max_act if stats else 0.0,
        url=urls.source(slug, s.name),
        sae=s.sae,
        info=s.info,
    )


def model_page(conn: Connection, slug: str) -> ModelPage:
    m = require_model(conn, slug)
    stats = storage.source_summaries(conn, m.id)
    return ModelPage(
        model=_model_summary(m),
        sources=[_source_card(slug, s, stats.get(s.id)) for s in storage.list_sources(conn, m.id)],
    )


def source_page(
    conn: Connection, slug: str, name: str, *, sort: str, order: str, page: int, page_size: int
) -> SourcePage:
    m = require_model(conn, slug)
    s = require_source(conn, m, name)
    n_pages = max(1, math.ceil(s.n_units / page_size))
    page = min(max(page, 1), n_pages)
    rows = storage.list_units(
        conn,
        s.id,
        sort=sort,
        descending=order == "desc",
        offset=(page - 1) * page_size,
        limit=page_size,
    )
    vocab = vocabulary(conn, m)
    densities = storage.unit_densities(conn, s.id)
    density_sum = sum(densities) if s.kind in LATENT_KINDS else 0.0
    labels = storage.unit_labels(conn, s.id, [r.idx for r in rows])
    units = [
        UnitListing(
            index=r.idx,
            max_act=r.max_act,
            density=r.density,
            l0_share=r.density / density_sum if density_sum > 0 else None,
            top_logits=[vocab.get(i, "?") for i, _ in r.logits["top"][:3]],
            url=urls.unit(slug, name, r.idx),
            explanation=labels.get(r.idx),
        )
        for r in rows
    ]
    return SourcePage(
        model=slug,
        source=_source_card(slug, s, storage.source_summaries(conn, m.id).get(s.id)),
        units=units,
        sort=sort,
        order=order,
        page=page,
        n_pages=n_pages,
        log_density=log_density_histogram(densities),
    )


def log_density_histogram(densities: list[float], bins: int = LOG_DENSITY_BINS) -> Histogram:
    """Histogram of log10(density) over units with density > 0."""
    logs = [math.log10(d) for d in densities if d > 0]
    if not logs:
        return Histogram(x=[], y=[], x_title="log10 density")
    lo, hi = min(logs), max(logs)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in logs:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    centres = [round(lo + (i + 0.5) * width, 4) for i in range(bins)]
    return Histogram(x=centres, y=counts, x_title="log10 density")


def _examples(
    conn: Connection,
    m: storage.ModelRow,
    s: storage.SourceRow,
    unit: int,
    extra_sequences=(),
):
    """The unit's top examples, their sequences (and ``extra_sequences``), and the model's
    vocabulary."""
    rows = storage.get_examples(conn, s.id, unit)
    seqs = sequences(conn, m, {e.sequence_id for e in rows} | set(extra_sequences))
    vocab = vocabulary(conn, m)
    return [_example(m.slug, e, seqs[e.sequence_id], vocab) for e in rows], seqs, vocab


def unit_page(conn: Connection, slug: str, name: str, index: str | int) -> UnitPage:
    m = require_model(conn, slug)
    s = require_source(conn, m, name)
    unit = require_unit(conn, s, index)
    sampled = storage.get_samples(conn, s.id, unit.idx)
    sample_seq_ids = {e.sequence_id for rows in sampled.values() for e in rows}
    examples, seqs, vocab = _examples(conn, m, s, unit.idx, sample_seq_ids)
    i = unit.idx
    page = UnitPage(
        model=slug,
        source=name,
        kind=s.kind,
        hook=s.hook,
        index=i,
        n_units=s.n_units,
        max_act=unit.max_act,
        density=unit.density,
        n_tokens=m.unit_tokens,
        logits_top=[LogitToken(token_id=t, token=vocab[t], value=v) for t, v in unit.logits["top"]],
        logits_bottom=[
            LogitToken(token_id=t, token=vocab[t], value=v) for t, v in unit.logits["bottom"]
        ],
        examples=examples,
        links=UnitLinks(
            prev=urls.unit(slug, name, i - 1) if i > 0 else None,
            next=urls.unit(slug, name, i + 1) if i + 1 < s.n_units else None,
            random=urls.random_unit(slug, name),
            share=urls.unit(slug, name, i),
        ),
    )
    page = page.model_copy(update={"explanations": meaning.unit_explanations(conn, s.id, i)})
    if unit.stats is None:
        return page
    stats = _unit_stats(slug, s, unit.stats, sampled, seqs, vocab)
    for name in ("correlated", "decoder_neighbours", "aligned_neurons"):
        stats[name] = meaning.labelled(conn, m.id, stats[name])
    return page.model_copy(update=stats)


def _unit_stats(
    slug: str, s: storage.SourceRow, stats: storage.UnitStats, sampled, seqs, vocab
) -> dict:
    """The unit page's histograms, intervals and neighbours from its stored stats."""
    out: dict = {"correlation_tokens": stats.correlation_tokens, "mean": stats.mean}
    if hist := stats.hist:
        out["histogram"] = Histogram(
            x=[round((k + 0.5) * hist.width, 6) for k in range(len(hist.counts))],
            y=hist.counts,
            x_title="activation",
            y_title="tokens",
        )
    if lh := stats.logit_hist:
        w = (lh.hi - lh.lo) / len(lh.counts)
        out["logit_histogram"] = Histogram(
            x=[round(lh.lo + (k + 0.5) * w, 6) for k in range(len(lh.counts))],
            y=lh.counts,
            x_title="effect on logit",
            y_title="tokens in vocabulary",
        )
    total = sum(c for *_, c in stats.intervals) or 1
    out["intervals"] = [
        Interval(
            lo=lo,
            hi=hi,
            count=c,
            share=c / total,
            samples=[_example(slug, e, seqs[e.sequence_id], vocab) for e in sampled.get(k, [])],
        )
        for k, (lo, hi, c) in enumerate(stats.intervals)
    ]
    out["correlated"] = [
        Neighbour(
            label=f"{s.name}/{j}", url=urls.unit(slug, s.name, j), value=r, source=s.name, index=j
        )
        for j, r in stats.correlated
    ]
    out["decoder_neighbours"] = [
        Neighbour(
            label=f"{s.name}/{j}", url=urls.unit(slug, s.name, j), value=c, source=s.name, index=j
        )
        for j, c in stats.decoder
    ]
    out["aligned_neurons"] = [
        Neighbour(
            label=f"{layer}-mlp/{j}",
            url=urls.unit(slug, f"{layer}-mlp", j),
            value=c,
            source=f"{layer}-mlp",
            index=j,
        )
        for layer, j, c in stats.neurons
    ]
    return out


def preview(
    slug: str,
    e: storage.ExampleRow,
    seq: storage.SequenceRow,
    vocab: dict[int, str],
    before: int,
    after: int,
) -> Example:
    """An example cut to ``before`` tokens before its max and ``after`` after."""
    full = _example(slug, e, seq, vocab)
    lo = max(e.position - before - e.window_start, 0)
    hi = e.position + after + 1 - e.window_start
    return full.model_copy(
        update={
            "tokens": full.tokens[lo:hi],
            "acts": full.acts[lo:hi],
            "window_start": e.window_start + lo,
        }
    )


def _example(
    slug: str, e: storage.ExampleRow, seq: storage.SequenceRow, vocab: dict[int, str]
) -> Example:
    ids = seq.tokens[e.window_start : e.window_start + len(e.acts)]
    return Example(
        rank=e.rank,
        sequence_id=e.sequence_id,
        position=e.position,
        value=e.value,
        window_start=e.window_start,
        tokens=[vocab[t] for t in ids],
        acts=e.acts,
        document=seq.document,
        sequence_url=urls.sequence(slug, e.sequence_id),
    )


def expanded_example(conn: Connection, slug: str, name: str, index: str, rank: int):
    m = require_model(conn, slug)
    s = require_source(conn, m, name)
    unit = require_unit(conn, s, index)
    examples, seqs, vocab = _examples(conn, m, s, unit.idx)
    ex = next((e for e in examples if e.rank == rank), None)
    if ex is None:
        raise NotFound(f"unit {unit.idx} of {name!r} has no example {rank}")
    tokens = [vocab[t] for t in seqs[ex.sequence_id].tokens]
    acts: list[float | None] = [None] * len(tokens)
    acts[ex.window_start : ex.window_start + len(ex.acts)] = ex.acts
    return ExpandedExample(
        model=slug, source=name, index=unit.idx, example=ex, tokens=tokens, acts=acts
    )


def random_unit_url(conn: Connection, slug: str, name: str, rng: random.Random) -> str:
    m = require_model(conn, slug)
    s = require_source(conn, m, name)
    return urls.unit(slug, name, rng.randrange(s.n_units))


def sequence_page(conn: Connection, slug: str, seq_id: str | int) -> SequencePage:
    m = require_model(conn, slug)
    try:
        sid = int(seq_id)
    except ValueError:
        raise NotFound(f"sequence id must be an integer, not {seq_id!r}") from None
    seq = sequences(conn, m, [sid]).get(sid)
    if seq is None:
        raise NotFound(f"model {slug!r} has no sequence {seq_id} (it has 0..{m.n_sequences - 1})")
    vocab = vocabulary(conn, m)
    return SequencePage(
        model=slug,
        id=sid,
        document=seq.document,
        offset=seq.offset,
        token_ids=seq.tokens,
        tokens=[vocab[t] for t in seq.tokens],
    )


def model_spec(conn: Connection, slug: str, name: str, index: str | int):
    """The model spec, source and unit behind a live request (404s as pages do)."""
    m = require_model(conn, slug)
    s = require_source(conn, m, name)
    unit = require_unit(conn, s, index)
    return m, s, unit
