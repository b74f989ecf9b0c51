"""Live model routes: htmx fragments for the unit page's forms, and their JSON API twins.

The fragments take GET query parameters, so a live result has a shareable URL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app import live
from app.deps import ConnDep, ModelsDep, SettingsDep
from app.render import render

fragments = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["live"])


@fragments.get("/{model}/{source}/{index}/activations")
async def activations_fragment(
    request: Request,
    model: str,
    source: str,
    index: str,
    req: Annotated[live.ActivationRequest, Query()],
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    target = await run_in_threadpool(live.find_target, conn, model, source, index)
    result = await live.unit_activations(models, settings, target, req)
    return render(request, "_activations.html", result)


@fragments.get("/{model}/{source}/{index}/examples/{rank}/ablation")
@fragments.get("/{model}/{source}/{index}/examples/{rank}/ablation.json")
async def ablation_fragment(
    request: Request,
    model: str,
    source: str,
    index: str,
    rank: int,
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """The effect on next-token loss along one top example of ablating this unit."""
    target = await run_in_threadpool(live.find_target, conn, model, source, index)
    result = await live.example_ablation(models, settings, conn, target, rank)
    return render(request, "_ablation.html", result, as_json=request.url.path.endswith(".json"))


@fragments.get("/{model}/{source}/{index}/steer")
async def steer_fragment(
    request: Request,
    model: str,
    source: str,
    index: str,
    req: Annotated[live.SteerRequest, Query()],
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    target = await run_in_threadpool(live.find_target, conn, model, source, index)
    result = await live.steer(models, settings, target, req)
    return render(request, "_steer.html", result)


@fragments.get("/{model}/prompt")
@fragments.get("/{model}/prompt.json")
async def prompt_page(
    request: Request,
    model: str,
    req: Annotated[live.PromptRequest, Query()],
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await live.prompt_units(models, settings, conn, model, req)
    return render(request, "prompt.html", result, as_json=request.url.path.endswith(".json"))


@fragments.get("/{model}/steer")
@fragments.get("/{model}/steer.json")
async def steer_page(
    request: Request,
    model: str,
    query: Annotated[live.SteerQuery, Query()],
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await live.steer_units(models, settings, conn, model, query.request())
    return render(request, "steer.html", result, as_json=request.url.path.endswith(".json"))


@api.post("/{model}/steer", response_model=live.MultiSteerResult)
async def steer_units_api(
    model: str,
    req: live.MultiSteerRequest,
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """Default and steered completions of ``prompt``, same seed, steering several units at
    once (neurons and latents, any layers), each with its own mode and strength.

    Caps (422 when exceeded): prompt length, max_new_tokens, number of units, |strength|,
    temperature. Unknown sources or unit indices are 422s too.
    """
    return await live.steer_units(models, settings, conn, model, req)


@fragments.get("/{model}/attribution")
@fragments.get("/{model}/attribution.json")
async def attribution_page(
    request: Request,
    model: str,
    req: Annotated[live.AttributionRequest, Query()],
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await live.attribution(models, settings, conn, model, req)
    return render(request, "attribution.html", result, as_json=request.url.path.endswith(".json"))


@api.post("/{model}/attribution", response_model=live.AttributionResult)
async def attribution_api(
    model: str,
    req: live.AttributionRequest,
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """Direct logit attribution: the target token's logit at ``position`` (minus ``other``'s)
    split into the embedding, every head, every MLP layer, the top neurons and the top SAE
    latents, through the final norm's frozen scale. The parts sum to logit - bias.
    """
    return await live.attribution(models, settings, conn, model, req)


@api.post("/{model}/prompt", response_model=live.PromptResult)
async def prompt_api(
    model: str, req: live.PromptRequest, conn: ConnDep, models: ModelsDep, settings: SettingsDep
):
    """Which units fire on ``text``: the top 25 by max over the prompt, merged exactly across
    the chosen ``source``s (default: all), and the top 10 at each token.

    Caps (422 when exceeded): prompt characters and tokens. An unknown source is a 422.
    """
    return await live.prompt_units(models, settings, conn, model, req)


@api.post("/{model}/{source}/{index}/activations", response_model=live.ActivationResult)
async def activations_api(
    model: str,
    source: str,
    index: str,
    req: live.ActivationRequest,
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """This unit's activation on each token of ``prompt``.

    Caps (422 when exceeded): prompt characters and tokens (see the Settings page in README).
    """
    target = await run_in_threadpool(live.find_target, conn, model, source, index)
    return await live.unit_activations(models, settings, target, req)


@api.post("/{model}/{source}/{index}/steer", response_model=live.SteerResult)
async def steer_api(
    model: str,
    source: str,
    index: str,
    req: live.SteerRequest,
    conn: ConnDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """Default and steered completions of ``prompt``, same seed, side by side.

    Steering adds ``coefficient`` to this neuron's activation at every position.
    Caps (422 when exceeded): prompt length, max_new_tokens, |coefficient|, temperature.
    """
    target = await run_in_threadpool(live.find_target, conn, model, source, index)
    return await live.steer(models, settings, target, req)
