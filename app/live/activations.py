"""A unit's activation on each token of a typed prompt."""

from __future__ import annotations

from app.live.schema import (
    ActivationRequest,
    ActivationResult,
    TokenActivation,
    check_text,
    check_tokens,
)
from app.live.targets import Target, load_source
from app.model_service import ModelService
from spyglass.model import Model
from spyglass.settings import Settings


async def unit_activations(
    service: ModelService, settings: Settings, target: Target, req: ActivationRequest
) -> ActivationResult:
    check_text(req.prompt, settings)
    unit = target.unit

    def work(model: Model) -> ActivationResult:
        ids = check_tokens(model, req.prompt, settings)
        src = load_source(service, target.source, model)
        values = src.activations_on(model, ids, target.model.skip_first, unit.idx)
        texts = model.token_strings(ids)
        return ActivationResult(
            model=target.model.slug,
            source=target.source.name,
            index=unit.idx,
            max_act=unit.max_act,
            tokens=[TokenActivation(token=t, value=v) for t, v in zip(texts, values, strict=True)],
            prompt_max=max(values),
        )

    return await service.run(target.model.spec, work, target.model.options)
