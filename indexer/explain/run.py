"""``spyglass explain``: explain and score every unit of an index's sources.

A source is read ``CHUNK`` units at a time (their logits, top examples and interval
samples), explained, scored on the held-out examples, and written in its own transaction:
an interrupted run keeps every chunk written, and a run with the same settings skips the
units that already have an explanation made with them, so it costs nothing the second
time and resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from indexer.explain import llm, llm_run, simulation, token_pattern
from indexer.explain.endpoint import Endpoint, Usage, parse_spec
from indexer.explain.windows import unit_windows
from spyglass import storage

CHUNK = 2048


@dataclass
class ExplainReport:
    explained: int = 0
    skipped: int = 0
    """Units that already had an explanation with these settings."""
    silent: int = 0
    """Units with no examples (they never fired): nothing to explain."""
    failed: int = 0
    """Units the endpoint gave no explanation of (recorded in ``explain_failures``)."""
    failed_scores: int = 0
    """Scores the endpoint failed on (recorded; the explanation is kept without them)."""
    errors: list[str] = field(default_factory=list)
    """The first few failures, as recorded."""
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)
    usage: Usage | None = None
    """The endpoint's calls, retries and tokens (LLM explainer)."""
    rescored: int = 0
    """LLM explanations kept from an earlier index, scored on this one (``rescore``)."""
    stale: int = 0
    """LLM explanations whose scores were measured on an earlier index, left as they are."""


def settings_key() -> str:
    """What makes an explanation and its scores: a run skips units explained with the
    same key."""
    what = {
        "method": token_pattern.METHOD,
        "version": token_pattern.VERSION,
        "scorer": ["simulation", simulation.FIRES, simulation.BOOTSTRAP],
        "split": "by sequence: the 1st, 3rd, ... new one shown, the others held out",
        "skip_first": "left out",
    }
    return hashlib.blake2b(json.dumps(what, sort_keys=True).encode(), digest_size=8).hexdigest()


def parse_units(spec: str | None, n_units: int) -> set[int] | None:
    """``"0-99,200,300-"`` as a set of unit indices (None: all). ValueError for a spec
    that does not parse or names a unit past ``n_units``."""
    if spec is None:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        lo_text, dash, hi_text = part.strip().partition("-")
        try:
            lo = int(lo_text)
            hi = (int(hi_text) if hi_text else n_units - 1) if dash else lo
        except ValueError:
            raise ValueError(f"--units: {part.strip()!r} is not N, N-M or N-") from None
        if lo < 0 or hi < lo or hi >= n_units:
            raise ValueError(f"--units: {part.strip()!r} is outside 0-{n_units - 1}")
        out.update(range(lo, hi + 1))
    return out


def explain_index(
    db: str,
    slug: str,
    *,
    sources: list[str] | None = None,
    units: str | None = None,
    progress: bool = True,
    explainer: str = "token-pattern",
    explainer_model: str | None = None,
    llm_settings: llm.LlmSettings | None = None,
    concurrency: int = 4,
    retries: int = 3,
    rescore: bool = False,
) -> ExplainReport:
    """Explain and score the units of ``slug``'s sources in the index at ``db``: with the
    token pattern (scored by simulation), or through the OpenAI-compatible endpoint of
    ``explainer`` (``openai:URL``; scored by simulation and ``llm_settings.scorers``).
    Token-pattern explanations kept from an earlier index are made again; LLM explanations
    are not (they cost endpoint calls): with ``rescore``, those whose scores were measured
    on an earlier index are scored on this one instead, without calling the explainer
    (by simulation, and by the endpoint's scorers when an ``explainer`` endpoint is given).
    ValueError for an unknown model, source or unit, EndpointFailure for an endpoint that
    cannot be reached."""
    started = time.perf_counter()
    endpoint = None
    if explainer != token_pattern.METHOD:
        url = parse_spec(explainer)
        if not explainer_model:
            raise ValueError("--explainer openai:URL needs --explainer-model NAME")
        endpoint = Endpoint(url, explainer_model, attempts=retries + 1)
    llm_settings = llm_settings or llm.LlmSettings()
    if rescore:
        return _rescore_index(db, slug, sources, units, endpoint, llm_settings, concurrency,
                              progress, started)  # fmt: skip
    storage.make_engine(db).dispose()  # FileNotFoundError for a missing file: none is made
    engine = storage.make_engine(db, create=True)  # adds the tables to an older index
    report = ExplainReport()
    if endpoint is None:
        method, key = token_pattern.METHOD, settings_key()
    else:
        method, key = llm.METHOD, llm_run.settings_key(explainer_model, llm_settings)
    try:
        with engine.connect() as conn:
            m, chosen = storage.model_and_sources(conn, slug, sources)
            wanted = {s.name: parse_units(units, s.n_units) for s in chosen}
            vocab = storage.all_token_texts(conn, m.id)
            seqs = storage.sequence_tokens(conn, m.id)
            todo = {}
            for s in chosen:
                # A token pattern is made again on a new index; an LLM's is kept (it costs).
                this_index = method == token_pattern.METHOD
                done = storage.explained_units(conn, s.id, method, key, this_index=this_index)
                todo[s.name] = sorted((wanted[s.name] or set(range(s.n_units))) - done)
                report.skipped += len(wanted[s.name] or range(s.n_units)) - len(todo[s.name])
                report.stale += len(storage.stale_explanations(conn, s.id, llm.METHOD))
        tokens = simulation.TokenIndex(vocab)
        step, explain_block = CHUNK, None
        if endpoint is not None and any(todo.values()):
            endpoint.check()
            ctx = llm_run.LlmContext(
                endpoint, llm_settings, key, vocab, seqs, tokens,
                _model_for(m) if "detection" in llm_settings.scorers else None,
                m.skip_first, concurrency,
            )  # fmt: skip
            step = llm_run.CHUNK

            def explain_block(s, block):
                return llm_run.explain_chunk(ctx, engine, s, block)

        bar = tqdm(
            total=sum(len(v) for v in todo.values()),
            desc="explaining",
            unit="unit",
            disable=not progress,
        )
        for s in chosen:
            remaining = todo[s.name]
            for i in range(0, len(remaining), step):
                block = remaining[i : i + step]
                failures: list[dict] = []
                if explain_block is None:
                    rows = _explain_block(
                        engine, s, block, seqs, vocab, tokens, key, report, m.skip_first
                    )
                else:
                    rows, failures, silent = explain_block(s, block)
                    report.explained += len(rows)
                    report.silent += silent
                    report.failed += sum(f["method"] == llm.METHOD for f in failures)
                    report.failed_scores += sum(f["method"] != llm.METHOD for f in failures)
                    report.errors += [f"{s.name}/{f['unit']} {f['method']}: {f['error']}"
                                      for f in failures][: 5 - len(report.errors)]  # fmt: skip
                with engine.begin() as conn:
                    storage.supersede_explanations(
                        conn,
                        s.id,
                        [r["unit"] for r in rows],
                        method,
                        endpoint and endpoint.model,
                        key,
                    )
                    storage.add_explanations(conn, s.id, rows)
                    storage.add_explain_failures(conn, s.id, failures)
                bar.update(len(block))
            report.sources.append(s.name)
        bar.close()
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    if endpoint is not None:
        report.usage = endpoint.usage
    return report


def _rescore_index(
    db, slug, sources, units, endpoint, llm_settings, concurrency, progress, started
) -> ExplainReport:
    """``explain_index(rescore=True)``."""
    if endpoint is None:  # simulation alone, offline
        llm_settings = dataclasses.replace(llm_settings, scorers=())
    engine = storage.make_engine(db, create=True)
    report = ExplainReport()
    try:
        with engine.connect() as conn:
            m, chosen = storage.model_and_sources(conn, slug, sources)
            stale = {}
            for s in chosen:
                wanted = parse_units(units, s.n_units)
                rows = storage.stale_explanations(conn, s.id, llm.METHOD)
                stale[s.name] = [r for r in rows if wanted is None or r["unit"] in wanted]
            vocab = storage.all_token_texts(conn, m.id)
            seqs = storage.sequence_tokens(conn, m.id)
        if endpoint is not None and any(stale.values()):
            endpoint.check()
        ctx = llm_run.LlmContext(
            endpoint, llm_settings, "", vocab, seqs, simulation.TokenIndex(vocab),
            _model_for(m) if "detection" in llm_settings.scorers else None,
            m.skip_first, concurrency,
        )  # fmt: skip
        bar = tqdm(total=sum(map(len, stale.values())), desc="re-scoring", unit="expl.",
                   disable=not progress)  # fmt: skip
        for s in chosen:
            by_unit: dict[int, list[dict]] = {}
            for r in stale[s.name]:
                by_unit.setdefault(r["unit"], []).append(r)
            todo = sorted(by_unit)
            for i in range(0, len(todo), llm_run.CHUNK):
                block = todo[i : i + llm_run.CHUNK]
                rows, failures, _ = llm_run.explain_chunk(ctx, engine, s, block, by_unit)
                with engine.begin() as conn:
                    report.rescored += storage.rescored(conn, s.id, rows)
                    storage.add_explain_failures(conn, s.id, failures)
                report.failed_scores += len(failures)
                report.errors += [f"{s.name}/{f['unit']} {f['method']}: {f['error']}"
                                  for f in failures][: 5 - len(report.errors)]  # fmt: skip
                bar.update(sum(len(by_unit[u]) for u in block))
            report.sources.append(s.name)
        bar.close()
    finally:
        engine.dispose()
    report.seconds = time.perf_counter() - started
    if endpoint is not None:
        report.usage = endpoint.usage
    return report


def _model_for(m: storage.ModelRow):
    """The indexed model, for measuring detection's negatives."""
    from spyglass.model import load_model

    return load_model(m.spec, options=m.options)


def _explain_block(engine, s, block, seqs, vocab, tokens, key, report, skip_first) -> list[dict]:
    """The explanation rows of the units ``block`` (ascending) of source ``s``."""
    lo, hi = block[0], block[-1] + 1
    wanted = set(block)
    with engine.connect() as conn:
        logits = storage.unit_logits(conn, s.id, lo, hi)
        top = {p.unit: p for p in storage.iter_packed_examples(conn, s.id, lo, hi, interval=False)}
        sampled = {
            p.unit: p for p in storage.iter_packed_examples(conn, s.id, lo, hi, interval=True)
        }
    rows = []
    for unit, max_act, unit_logits in logits:
        if unit not in wanted:
            continue
        windows = unit_windows(unit, max_act, top.get(unit), sampled.get(unit), seqs, skip_first)
        made = token_pattern.explain(windows, unit_logits, vocab)
        if made is None:
            report.silent += 1
            continue
        text, evidence = made
        scores = simulation.score(text, windows.held_out, max_act, tokens)
        rows.append(
            {
                "unit": unit,
                "method": token_pattern.METHOD,
                "settings": key,
                "text": text,
                "evidence": evidence,
                "scores": scores or {},
            }
        )
        report.explained += 1
    return rows
