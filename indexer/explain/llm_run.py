"""``spyglass explain --explainer openai:URL``: explain units through an endpoint, score
each explanation by detection and fuzzing there and by simulation offline, and score the
token-pattern explanation of the same unit by the same scorers on the same examples (the
baseline: did the LLM say more than the obvious tokens?).

Units go ``CHUNK`` at a time, ``concurrency`` of them in flight; each chunk's
explanations and failures are written in one transaction. A unit the endpoint fails on
(after its retries) is recorded in ``explain_failures`` and has no explanation, so a
re-run tries it again; a failed score is recorded and left out of the scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from indexer.explain import llm, negatives, prompts, simulation, token_pattern
from indexer.explain.endpoint import Endpoint, EndpointFailure
from indexer.explain.windows import UnitWindows, unit_windows
from spyglass import storage

CHUNK = 16
NEIGHBOURS = 6
"""Correlated and decoder neighbours (each) whose top examples are hard negatives."""
NEIGHBOUR_EXAMPLES = 4
"""Top examples of each neighbour tried as hard negatives."""
SCORES = (("detection", "detection"), ("detection_hard", "detection"), ("fuzzing", "fuzzing"))
"""Each endpoint score and its scorer: detection against random negatives and against
hard ones."""


@dataclass
class LlmContext:
    """What every chunk of a run shares."""

    endpoint: Endpoint | None
    """None when re-scoring without an endpoint: simulation only."""
    settings: llm.LlmSettings
    key: str
    vocab: dict[int, str]
    seqs: dict[int, np.ndarray]
    tokens: simulation.TokenIndex
    model: object | None
    """The indexed model (``spyglass.model.Model``), loaded for detection's negatives."""
    skip_first: int
    concurrency: int = 4
    loaded: dict = field(default_factory=dict)
    """The source being read, with its SAE loaded (one at a time: an SAE is large)."""


def settings_key(model: str, settings: llm.LlmSettings) -> str:
    what = {
        "method": llm.METHOD,
        "model": model,
        "prompts": prompts.VERSION,
        "scorers": list(settings.scorers),
        "examples": settings.examples,
        "batch": settings.batch,
        "max_tokens": settings.max_tokens,
        "baseline": [token_pattern.METHOD, token_pattern.VERSION],
        "split": "by sequence: the 1st, 3rd, ... new one shown, the others held out",
        "skip_first": "left out",
    }
    return hashlib.blake2b(json.dumps(what, sort_keys=True).encode(), digest_size=8).hexdigest()


def explain_chunk(
    ctx: LlmContext,
    engine,
    s: storage.SourceRow,
    block: list[int],
    known: dict[int, list[dict]] | None = None,
) -> tuple[list[dict], list[dict], int]:
    """The explanation rows and failure rows of ``block`` (ascending units of source
    ``s``), and how many of its units never fired. With ``known`` (per unit, explanations
    kept from an earlier index: ``storage.stale_explanations``' rows), the explainer is not
    called: those rows come back with their scores (and their baseline's) measured on this
    index's examples."""
    lo, hi = block[0], block[-1] + 1
    wanted = set(block)
    with engine.connect() as conn:
        logits = [x for x in storage.unit_logits(conn, s.id, lo, hi) if x[0] in wanted]
        top = {p.unit: p for p in storage.iter_packed_examples(conn, s.id, lo, hi, interval=False)}
        sampled = {
            p.unit: p for p in storage.iter_packed_examples(conn, s.id, lo, hi, interval=True)
        }
        units = {}
        for unit, max_act, unit_logits in logits:
            w = unit_windows(
                unit, max_act, top.get(unit), sampled.get(unit), ctx.seqs, ctx.skip_first
            )
            if w.shown:
                units[unit] = (w, unit_logits)
        hard = _hard_candidates(conn, s, units) if "detection" in ctx.settings.scorers else {}
    randoms = []
    if "detection" in ctx.settings.scorers and units:
        lengths = [len(w.tokens) for uw, _ in units.values() for w in uw.held_out]
        length = int(np.median(lengths)) if lengths else 32
        randoms = negatives.random_candidates(
            ctx.seqs, 4 * ctx.settings.examples, length, ctx.skip_first, seed=s.id * 1_000_003 + lo
        )
        recompute = negatives.Recompute(ctx.model, _source(ctx, s), ctx.skip_first, ctx.seqs)
        needed = {c[0] for c in randoms} | {c[0] for cs in hard.values() for c in cs}
        recompute.run(needed, sorted(units))
    else:
        recompute = None

    def one(unit: int) -> tuple[list[dict], list[dict]]:
        uw, unit_logits = units[unit]
        threshold = simulation.FIRES * uw.max_act
        negs = {}
        if recompute is not None:
            negs["detection"] = negatives.silent(
                recompute, unit, randoms, threshold, ctx.settings.examples
            )
            negs["detection_hard"] = negatives.silent(
                recompute, unit, hard.get(unit, []), threshold, ctx.settings.examples
            )
        if known is not None:
            return _rescored(ctx, unit, uw, threshold, negs, known.get(unit, []))
        row, failed = _unit_rows(ctx, unit, uw, unit_logits, threshold, negs)
        return ([] if row is None else [row]), failed

    rows, failures = [], []
    pool = ThreadPoolExecutor(max_workers=max(1, ctx.concurrency))
    try:
        for made, failed in pool.map(one, sorted(units)):
            rows += made
            failures += failed
    finally:  # on Ctrl-C, no more calls for the units not started
        pool.shutdown(cancel_futures=True)
    return rows, failures, len(logits) - len(units)


def _source(ctx: LlmContext, s: storage.SourceRow):
    if s.id not in ctx.loaded:
        ctx.loaded.clear()
        ctx.loaded[s.id] = negatives.source_for(s, ctx.model)
    return ctx.loaded[s.id]


def _hard_candidates(conn, s, units: dict) -> dict[int, list[tuple[int, int, int]]]:
    """Per unit: the top example windows of its correlated and decoder neighbours."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    cache: dict[int, list[tuple[int, int, int]]] = {}
    for unit in units:
        row = storage.get_unit(conn, s.id, unit)
        stats = row.stats if row is not None else None
        near = []
        if stats is not None:
            near = [u for u, _ in stats.correlated[:NEIGHBOURS]]
            near += [u for u, _ in stats.decoder[:NEIGHBOURS] if u not in near]
        candidates = []
        for n in near:
            if n not in cache:
                packed = list(storage.iter_packed_examples(conn, s.id, n, n + 1, interval=False))
                fields = packed[0].fields[:NEIGHBOUR_EXAMPLES] if packed else []
                cache[n] = [(int(f[2]), int(f[4]), int(f[5])) for f in fields]
            candidates += cache[n]
        out[unit] = candidates
    return out


def _unit_rows(ctx, unit, uw: UnitWindows, unit_logits, threshold, negs):
    failures: list[dict] = []

    def failed(method: str, error: str) -> None:
        failures.append({"unit": unit, "method": method, "settings": ctx.key, "error": error})

    try:
        text = llm.explain(
            ctx.endpoint, uw, threshold, ctx.vocab, unit_logits, ctx.settings.max_tokens
        )
    except EndpointFailure as exc:
        failed(llm.METHOD, str(exc))
        return None, failures
    pos = llm.positives(uw, ctx.settings.examples, threshold)
    scores = _scores(ctx, unit, text, uw, pos, threshold, negs, lambda m, e: failed(m, e))
    evidence: dict = {"model": ctx.endpoint.model, "shown": len(llm.shown_examples(uw))}
    baseline = token_pattern.explain(uw, unit_logits, ctx.vocab)
    if baseline is not None:
        base_scores = _scores(
            ctx, unit, baseline[0], uw, pos, threshold, negs,
            lambda m, e: failed(f"baseline:{m}", e),
        )  # fmt: skip
        evidence["baseline"] = {
            "method": token_pattern.METHOD,
            "text": baseline[0],
            "scores": base_scores,
        }
    row = {
        "unit": unit,
        "method": llm.METHOD,
        "settings": ctx.key,
        "text": text,
        "explainer": ctx.endpoint.model,
        "evidence": evidence,
        "scores": scores,
    }
    return row, failures


def _rescored(ctx, unit, uw: UnitWindows, threshold, negs, kept: list[dict]):
    """``kept`` explanations of the unit with their scores, and their baseline's, measured
    on this index (the endpoint's scorers only with an endpoint; scores not measured again
    move to ``evidence["earlier_scores"]``)."""
    failures: list[dict] = []

    def failed(method: str, error: str) -> None:
        failures.append({"unit": unit, "method": method, "settings": ctx.key, "error": error})

    pos = llm.positives(uw, ctx.settings.examples, threshold)
    out = []
    for row in kept:
        scores = _scores(ctx, unit, row["text"], uw, pos, threshold, negs, failed)
        evidence = dict(row["evidence"])
        if earlier := {k: v for k, v in row["scores"].items() if k not in scores}:
            evidence["earlier_scores"] = earlier
        if base := evidence.get("baseline"):
            base_scores = _scores(
                ctx, unit, base["text"], uw, pos, threshold, negs,
                lambda m, e: failed(f"baseline:{m}", e),
            )  # fmt: skip
            evidence["baseline"] = base | {"scores": base_scores}
        out.append({"id": row["id"], "unit": unit, "scores": scores, "evidence": evidence})
    return out, failures


def _scores(
    ctx: LlmContext,
    unit: int,
    text: str,
    uw: UnitWindows,
    pos,
    threshold: float,
    negs: dict,
    failed: Callable[[str, str], None],
) -> dict:
    """The explanation's scores: simulation (where it names tokens), then each endpoint
    scorer. A scorer that fails, or lacks the examples it needs, is ``failed`` with the
    reason instead."""
    out = simulation.score(text, uw.held_out, uw.max_act, ctx.tokens) or {}
    seed = unit
    for name, kind in SCORES:
        if kind not in ctx.settings.scorers:
            continue
        try:
            if kind == "detection":
                got = llm.detect(
                    ctx.endpoint, text, pos, negs.get(name, []), ctx.vocab, ctx.settings, seed
                )
            else:
                got = llm.fuzz(ctx.endpoint, text, pos, threshold, ctx.vocab, ctx.settings, seed)
        except EndpointFailure as exc:
            failed(name, str(exc))
            continue
        if got is not None:
            out[name] = got
        elif not pos:
            failed(name, "no held-out example where the unit fires")
        elif kind == "detection":
            failed(name, "no window where the unit stays silent among those tried")
        else:
            failed(name, "no example with enough tokens where the unit does not fire")
    return out
