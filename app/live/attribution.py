"""Direct logit attribution: a token's logit split into the embedding, every head, every
MLP layer, the top neurons and the top latents of each indexed SAE."""

from __future__ import annotations

from app import meaning, urls
from app.live.schema import (
    AttributionRequest,
    AttributionResult,
    LimitError,
    Part,
    check_text,
    check_tokens,
)
from app.live.targets import load_source, model_and_sources
from app.model_service import ModelService
from app.reader import IndexReader
from spyglass.model import Model
from spyglass.settings import Settings
from spyglass.sources import LATENT_KINDS


def one_token(model: Model, text: str, field: str) -> int:
    ids = model.tokenize(text)
    if len(ids) != 1:
        raise LimitError(
            f"{field} {text!r} is {len(ids)} tokens; give exactly one",
            field=field,
            rule="one_token",
        )
    return ids[0]


async def attribution(
    service: ModelService,
    settings: Settings,
    reader: IndexReader,
    slug: str,
    req: AttributionRequest,
) -> AttributionResult:
    m, sources = await reader.run(model_and_sources, slug)
    result = AttributionResult(model=slug, text=req.text)
    if not req.text:
        return result
    check_text(req.text, settings, field="text")
    saes = [s for s in sources if s.kind in LATENT_KINDS]
    indexed = {s.name for s in sources}

    def work(model: Model):
        ids = check_tokens(model, req.text, settings, field="text")
        pos = len(ids) - 1 if req.position is None else req.position
        if not 0 <= pos < len(ids):
            raise LimitError(
                f"position must be in 0..{len(ids) - 1}, got {pos}", field="position", rule="range"
            )
        target = one_token(model, req.target, "target") if req.target else None
        other = one_token(model, req.other, "other") if req.other else None
        loaded = [load_source(service, s, model) for s in saes]
        a = model.attribute(ids, pos, target, other, hooks=sorted({s.hook for s in loaded}))
        latents = []
        for src in loaded:
            f = src.units(a.hook_acts[src.hook].unsqueeze(0), m.skip_first)[0, pos]
            contrib = f * a.through(src.directions(model)).to(f)
            for i in contrib.abs().topk(min(10, contrib.shape[0])).indices.tolist():
                if contrib[i] != 0:
                    latents.append((src.name, i, float(contrib[i])))
        neurons = []
        for layer, n in enumerate(a.neurons):
            for i in n.abs().topk(min(3, n.shape[0])).indices.tolist():
                neurons.append((f"{layer}-mlp", i, float(n[i])))
        names = model.token_strings([a.target] + ([other] if other is not None else []))
        return pos, a, latents, neurons, names, model.token_strings(ids)

    pos, a, latents, neurons, names, texts = await service.run(m.spec, work, m.options)

    def link(source: str, i: int) -> str | None:
        return urls.unit(slug, source, i) if source in indexed else None

    components = [Part(label="embedding", value=a.embed)]
    if a.pos_embed:
        components.append(Part(label="position embedding", value=a.pos_embed))
    for layer, (h, b, mlp) in enumerate(zip(a.heads.tolist(), a.attn_bias, a.mlp, strict=True)):
        components.append(Part(label=f"attention {layer}", value=sum(h) + b))
        mlp_source = f"{layer}-mlp"
        url = urls.source(slug, mlp_source) if mlp_source in indexed else None
        components.append(Part(label=f"MLP {layer}", value=mlp, url=url))
    neuron_parts = [
        Part(label=f"{s}/{i}", value=v, url=link(s, i), source=s, index=i) for s, i, v in neurons
    ]
    latent_parts = [
        Part(label=f"{s}/{i}", value=v, url=link(s, i), source=s, index=i) for s, i, v in latents
    ]
    neuron_parts, latent_parts = await reader.run(
        lambda conn: (
            meaning.labelled(conn, m.id, neuron_parts),
            meaning.labelled(conn, m.id, latent_parts),
        )
    )
    return result.model_copy(
        update={
            "tokens": texts,
            "position": pos,
            "target": names[0],
            "other": names[1] if len(names) > 1 else None,
            "logit": a.logit,
            "bias": a.bias,
            "parts_sum": a.parts_sum,
            "scale": a.scale,
            "components": components,
            "heads": a.heads.tolist(),
            "neurons": neuron_parts,
            "latents": latent_parts,
        }
    )
