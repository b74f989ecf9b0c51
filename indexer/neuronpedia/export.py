"""``spyglass export --format neuronpedia``: an index in Neuronpedia's export layout.

    OUT/config/explanation_type.jsonl, explanation_model_type.jsonl,
        explanation_score_model.jsonl, explanation_score_type.jsonl, eval_type.jsonl
    OUT/<model>/<source>/model.jsonl, sourceset.jsonl, source.jsonl
    OUT/<model>/<source>/features/batch-<N>.jsonl.gz       units N*1024 ...
    OUT/<model>/<source>/activations/batch-<N>.jsonl.gz    their examples (none: no file)
    OUT/<model>/<source>/explanations/batch-<N>.jsonl.gz   their explanations
    OUT/config/spyglass/<model>/...                        what Neuronpedia has no field for

``OUT`` plays the part of Neuronpedia's ``v1/`` folder, and the layout follows what its
import (``apps/webapp/app/api/admin/import/route.ts`` and ``lib/db/import.ts``) reads:
- every import first reads the five ``config/`` files and stops at the first missing
  one, so all five are written; Spyglass exports no explanation scores and no evals, so
  the last three hold no line;
- Neuronpedia offers every folder of ``v1/`` but ``config`` as a model, and every folder
  of a model's as one of its sources. Spyglass's own folder (token ids, the sequences,
  exact statistics, scores and evidence, so ``spyglass import`` rebuilds the same index)
  therefore sits under ``config/spyglass/<model>/``, which Neuronpedia neither lists nor
  reads. Exports of format 1 had it at ``<model>/spyglass/``; the importer reads both.
An export without that folder still imports (as Neuronpedia's own exports do).
A transcoder set's layers are sources of one source set, named as ``kinds`` says.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from indexer.neuronpedia.kinds import describe, saelens_config, set_name
from indexer.neuronpedia.records import BOT, CONFIG_FILES
from spyglass import storage

BATCH = 1024
"""Units per batch file (Neuronpedia's own exports hold 1,024 features per file)."""
SIDE = "spyglass"
FORMAT = 2
"""Of Spyglass's own folder: 2 puts it under ``config/`` and keeps the true values of the
skipped first tokens there (1: under the model's folder, the values in the records)."""
CONFIG = "config"
EMPTY_CONFIG = CONFIG_FILES[2:]
"""Config files Neuronpedia's import requires that a Spyglass export has no line for
(explanation scores and evals)."""
TYPES = {
    "token-pattern": "spyglass-token-pattern",
    "llm": "spyglass-llm",
    "human": "spyglass-human",
}
"""Explanation methods as Neuronpedia explanation types."""


@dataclass
class ExportReport:
    sources: list[str] = field(default_factory=list)
    features: int = 0
    activations: int = 0
    explanations: int = 0
    files: int = 0


def side_folder(root: Path, model: str) -> Path:
    """Where Spyglass's own folder of ``model`` sits in an export rooted at ``root``."""
    return root / CONFIG / SIDE / model


def check_out(out: Path) -> None:
    """ValueError unless ``out`` is missing or an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} is not an empty folder; choose a new one")


def export_index(db: str, slug: str, out: str | Path, sources: list[str] | None = None):
    """Write the index of ``slug`` in ``db`` to ``out`` (missing or empty). ValueError for
    an unknown model or source, or a folder that holds anything."""
    out = Path(out)
    check_out(out)
    engine = storage.make_engine(db)
    made = not out.exists()
    try:
        with engine.connect() as conn:
            m, chosen = storage.model_and_sources(conn, slug, sources)
            report = _export(conn, m, chosen, out)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:  # it was empty: leave it so
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    finally:
        engine.dispose()
    return report


def _export(conn, m: storage.ModelRow, chosen, out: Path) -> ExportReport:
    report = ExportReport()
    vocab = storage.all_token_texts(conn, m.id)
    side = side_folder(out, m.slug)
    side.mkdir(parents=True)
    _write_json(side / "index.json", _index_json(m, chosen))
    _write_lines(side / "vocab.jsonl.gz", [vocab[i] for i in sorted(vocab)])
    _write_lines(
        side / "sequences.jsonl.gz",
        ([q.id, q.document, q.offset, q.tokens] for q in storage.iter_sequences(conn, m.id)),
    )
    seqs = storage.sequence_tokens(conn, m.id)  # int32 arrays: 4 bytes a token
    now = m.created
    explainers: set[str] = set()
    types = set(TYPES.values())
    # One model record for every source: its neurons per layer are the MLP's width.
    mlp_width = next((s.n_units for s in storage.list_sources(conn, m.id) if s.kind == "mlp"), 0)
    for s in chosen:
        folder = out / m.slug / s.name
        folder.mkdir(parents=True)
        _write_lines(folder / "model.jsonl", [_model_record(m, mlp_width)])
        _write_lines(folder / "sourceset.jsonl", [_sourceset_record(m, s)])
        _write_lines(folder / "source.jsonl", [_source_record(m, s)])
        for b, lo in enumerate(range(0, s.n_units, BATCH)):
            hi = min(s.n_units, lo + BATCH)
            features, acts, expl, extra = _batch(conn, m, s, lo, hi, vocab, seqs)
            explainers |= {e["explanationModelName"] for e in expl}
            types |= {e["typeName"] for e in expl}
            name = f"batch-{b}.jsonl.gz"
            _write_lines(folder / "features" / name, features)
            if acts:  # Neuronpedia's import fails on an empty one (JSON.parse(''))
                _write_lines(folder / "activations" / name, acts)
            _write_lines(folder / "explanations" / name, expl)
            _write_lines(side / s.name / name, extra)
            report.features += len(features)
            report.activations += len(acts)
            report.explanations += len(expl)
        report.sources.append(s.name)
    _write_lines(out / CONFIG / "explanation_type.jsonl",
                 [_explanation_type(t, now) for t in sorted(types)])  # fmt: skip
    _write_lines(out / CONFIG / "explanation_model_type.jsonl",
                 [_explanation_model(name, now) for name in sorted(explainers)])  # fmt: skip
    for name in EMPTY_CONFIG:
        _write_lines(out / CONFIG / name, [])
    report.files = sum(1 for p in out.rglob("*") if p.is_file())
    return report


def _batch(conn, m: storage.ModelRow, s, lo: int, hi: int, vocab, seqs):
    """Units ``lo:hi`` of source ``s``: their feature, activation and explanation records,
    and their lines of ``spyglass/`` (what the records have no field for)."""
    now = m.created
    features, acts, expl, extra = [], [], [], []
    top = {p.unit: p for p in storage.iter_packed_examples(conn, s.id, lo, hi, interval=False)}
    sampled = {p.unit: p for p in storage.iter_packed_examples(conn, s.id, lo, hi, interval=True)}
    by_unit: dict[int, list] = {}
    for e in storage.source_explanations(conn, s.id, lo, hi):
        by_unit.setdefault(e.unit, []).append(e)
    for u in storage.iter_units(conn, s.id, lo, hi):
        features.append(_feature(m, s, u, vocab, now))
        line = {"index": u.idx, "max_act": u.max_act, "density": u.density,
                "logits": u.logits, "stats": json.loads(u.stats.to_json()) if u.stats else None,
                "top": [], "samples": [], "explanations": [], "skipped": []}  # fmt: skip
        k = 0
        for packed, key in ((top.get(u.idx), "top"), (sampled.get(u.idx), "samples")):
            if packed is None:
                continue
            ends = np.cumsum(packed.fields[:, 5])
            for i, f in enumerate(packed.fields.tolist()):
                interval, rank, seq, pos, start, length = f
                window = packed.acts[ends[i] - length : ends[i]]
                record, head = _activation(m, s, u, k, key, f, window, seqs[seq], vocab)
                acts.append(record)
                if any(head):  # the true values of the first tokens, written as 0
                    line["skipped"].append([k, head])
                meta = [rank, seq, pos, start, float(packed.values[i])]
                line[key].append(meta if key == "top" else [interval, *meta])
                k += 1
        for e in by_unit.get(u.idx, []):
            rec = _explanation(m, s, u.idx, e)
            expl.append(rec)
            line["explanations"].append(
                {
                    "id": rec["id"],
                    "method": e.method,
                    "settings": e.settings,
                    "explainer": e.explainer,
                    "created": e.created,
                    "evidence": e.evidence,
                    "scores": e.scores,
                }  # fmt: skip
            )
        extra.append(line)
    return features, acts, expl, extra


def _index_json(m: storage.ModelRow, chosen) -> dict:
    return {
        "format": FORMAT,
        "model": {
            k: getattr(m, k)
            for k in (
                "slug",
                "spec",
                "corpus",
                "n_layers",
                "d_model",
                "d_vocab",
                "seq_len",
                "n_sequences",
                "n_tokens",
                "skip_first",
                "top_k",
                "seconds",
                "created",
                "options",
            )
        },  # fmt: skip
        "sources": [
            {
                "name": s.name,
                "kind": s.kind,
                "layer": s.layer,
                "hook": s.hook,
                "n_units": s.n_units,
                "sae": s.sae,
                "info": s.info,
            }  # fmt: skip
            for s in chosen
        ],
    }


def _model_record(m: storage.ModelRow, mlp_width: int) -> dict:
    return {"id": m.slug, "displayNameShort": m.slug, "displayName": m.spec,
            "creatorId": BOT, "tlensId": m.spec, "dimension": m.d_model,
            "visibility": "PUBLIC", "inferenceEnabled": False, "instruct": False,
            "layers": m.n_layers, "neuronsPerLayer": mlp_width,
            "owner": "", "createdAt": _time(m.created), "updatedAt": _time(m.created)}  # fmt: skip


def _sourceset_record(m: storage.ModelRow, s) -> dict:
    return {"modelId": m.slug, "name": set_name(s.name), "hasDashboards": True,
            "visibility": "PUBLIC", "description": describe(s.kind),
            "type": s.kind, "creatorName": "Spyglass", "urls": [], "creatorId": BOT,
            "createdAt": _time(m.created)}  # fmt: skip


def _source_record(m: storage.ModelRow, s) -> dict:
    """Without ``saelensConfig`` when the source has no info: Prisma's create refuses a
    JSON null for a ``Json?`` field (it wants ``Prisma.DbNull``), and leaves it NULL when
    the key is missing. A transcoder's names its hooks as SAELens does (``kinds``)."""
    config = saelens_config(s)
    record = {"id": s.name, "modelId": m.slug, "hasDashboards": True,
              "inferenceEnabled": False, "saelensConfig": config, "visibility": "PUBLIC",
              "setName": set_name(s.name), "creatorId": BOT, "num_prompts": m.n_sequences,
              "num_tokens_in_prompt": m.seq_len, "dataset": m.corpus, "notes": None,
              "createdAt": _time(m.created)}  # fmt: skip
    if config is None:
        del record["saelensConfig"]
    return record


def _feature(m, s, u: storage.UnitRow, vocab, now) -> dict:
    st = u.stats or storage.UnitStats()
    hist, lh = st.hist, st.logit_hist
    logit_w = (lh.hi - lh.lo) / len(lh.counts) if lh and lh.counts else 0.0
    mlp = s.kind == "mlp"
    corr_i = [int(i) for i, _ in st.correlated]
    corr_v = [float(v) for _, v in st.correlated]
    return {
        "modelId": m.slug, "layer": s.name, "index": u.idx, "sourceSetName": set_name(s.name),
        "creatorId": BOT, "createdAt": _time(now), "maxActApprox": u.max_act,
        "hasVector": False, "vector": [], "vectorLabel": None,
        "vectorDefaultSteerStrength": None, "hookName": s.hook,
        "topkCosSimIndices": [int(i) for i, _ in st.decoder],
        "topkCosSimValues": [float(v) for _, v in st.decoder],
        "neuron_alignment_indices": [int(n) for _, n, _ in st.neurons],
        "neuron_alignment_values": [float(c) for _, _, c in st.neurons],
        "neuron_alignment_l1": [],
        "correlated_neurons_indices": corr_i if mlp else [],
        "correlated_neurons_pearson": corr_v if mlp else [],
        "correlated_neurons_l1": [],
        "correlated_features_indices": [] if mlp else corr_i,
        "correlated_features_pearson": [] if mlp else corr_v,
        "correlated_features_l1": [],
        "pos_str": [vocab.get(t, "") for t, _ in u.logits.get("top", [])],
        "pos_values": [float(v) for _, v in u.logits.get("top", [])],
        "neg_str": [vocab.get(t, "") for t, _ in u.logits.get("bottom", [])],
        "neg_values": [float(v) for _, v in u.logits.get("bottom", [])],
        "frac_nonzero": u.density,
        "freq_hist_data_bar_heights": [float(c) for c in hist.counts] if hist else [],
        "freq_hist_data_bar_values":
            [(i + 0.5) * hist.width for i in range(len(hist.counts))] if hist else [],
        "logits_hist_data_bar_heights": [float(c) for c in lh.counts] if lh else [],
        "logits_hist_data_bar_values":
            [lh.lo + (i + 0.5) * logit_w for i in range(len(lh.counts))] if lh else [],
        "decoder_weights_dist": [],
    }  # fmt: skip


def _activation(m, s, u, k, key, f, window, seq_tokens, vocab) -> tuple[dict, list[float]]:
    """An example as Neuronpedia's activation record, and the true values of the tokens it
    writes as 0.

    The first ``skip_first`` tokens of a sequence are in no statistic of the index (an
    SAE's latents read 0 there already; an MLP neuron's window keeps its true value), so
    the record writes them as 0.0, as Neuronpedia's own converter does with a BOS token
    it zeroes out. Then every record is what Neuronpedia shows and reads it as:
    ``maxValue == max(values)``, ``maxValueTokenIndex`` the first index of that max in
    ``values``, and ``minValue == min(values)``. The true values go to Spyglass's own
    folder, from which ``spyglass import`` restores them."""
    interval, _rank, seq, pos, start, length = f
    values = [float(v) for v in window]
    tokens = [vocab.get(int(t), "") for t in seq_tokens[start : start + length]]
    skipped = min(len(values), max(0, m.skip_first - start))
    head = values[:skipped]
    values[:skipped] = [0.0] * skipped
    top = max(values, default=0.0)
    if key == "top":
        lo, hi, contains = -1.0, u.max_act, -1.0
    else:
        intervals = u.stats.intervals if u.stats else []
        lo, hi, count = intervals[interval] if interval < len(intervals) else (None, None, None)
        contains = None if count is None else count / max(1, m.unit_tokens)
    record = {
        "id": _id(m.slug, s.name, u.idx, "a", k), "modelId": m.slug, "layer": s.name,
        "index": u.idx, "creatorId": BOT, "createdAt": _time(m.created), "tokens": tokens,
        "values": values, "maxValue": top,
        "maxValueTokenIndex": values.index(top) if values else 0,
        "minValue": min(values, default=0.0),
        "dataIndex": f"{seq}:{start}", "dataSource": m.corpus, "binMin": lo, "binMax": hi,
        "binContains": contains, "qualifyingTokenIndex": pos - start,
    }  # fmt: skip
    return record, head


def _explanation(m, s, unit: int, e: storage.ExplanationRow) -> dict:
    model_name = e.explainer if e.method == "llm" and e.explainer else TYPES.get(e.method, e.method)
    notes = f"by {e.explainer}" if e.method == "human" and e.explainer else None
    return {
        "id": _id(m.slug, s.name, unit, "e", e.id), "modelId": m.slug, "layer": s.name,
        "index": unit, "description": e.text, "authorId": BOT,
        "typeName": TYPES.get(e.method, e.method), "explanationModelName": model_name,
        "notes": notes, "createdAt": _time(e.created), "updatedAt": _time(e.created),
    }  # fmt: skip


def _explanation_type(name: str, now: str) -> dict:
    return {"name": name, "displayName": name, "featured": False, "isAttention": False,
            "description": f"Spyglass's {name.removeprefix('spyglass-')} explanations",
            "url": None, "creatorName": "Spyglass", "creatorId": BOT,
            "createdAt": _time(now), "updatedAt": _time(now)}  # fmt: skip


def _explanation_model(name: str, now: str) -> dict:
    return {"name": name, "displayName": name, "description": f"explanations by {name}",
            "featured": False, "url": None, "creatorName": "Spyglass",
            "createdAt": _time(now), "updatedAt": _time(now)}  # fmt: skip


def _id(*parts) -> str:
    """A 25-character id, the length of Neuronpedia's cuids, the same on every export."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=12).hexdigest()
    return "c" + digest


def _time(iso: str) -> str:
    """An ISO time with its zone, as JSON Schema's date-time wants."""
    return iso if ("+" in iso[10:] or iso.endswith("Z")) else iso + "+00:00"


def _write_json(path: Path, value) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def _write_lines(path: Path, rows) -> None:
    """JSONL, gzipped when the name ends in ``.gz``, written as ``rows`` come."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.open("wb")
    out = raw
    if path.suffix == ".gz":
        out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5, mtime=0)
    with raw, out:
        for r in rows:
            out.write(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
