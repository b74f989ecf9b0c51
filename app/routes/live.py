"""Live model routes: htmx fragments for the unit page's forms, the live pages (prompt,
steering, attribution) with their JSON twins, and the ``/api`` operations.

GET pages and fragments take query parameters, so a live result has a shareable URL. None
of these holds a thread or a database connection while it waits for the model.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.deps import JobModelsDep, JobsDep, ModelsDep, ReaderDep, SettingsDep
from app.errors import LIVE_ERRORS
from app.live import ablation, activations, atp, attribution, prompt, steer, steer_eval
from app.live.schema import (
    AblationMode,
    AblationResult,
    ActivationRequest,
    ActivationResult,
    AttributionRequest,
    AttributionResult,
    MultiSteerRequest,
    MultiSteerResult,
    PromptRequest,
    PromptResult,
    SteerQuery,
    SteerRequest,
    SteerResult,
)
from app.live.targets import find_target
from app.render import render

fragments = APIRouter(include_in_schema=False)
twins = APIRouter(tags=["live pages"], responses=LIVE_ERRORS)
api = APIRouter(prefix="/api", tags=["live"], responses=LIVE_ERRORS)


# ---- the unit page's fragments --------------------------------------------------------------


@fragments.get("/{model}/{source}/{index}/activations")
async def activations_fragment(
    request: Request,
    model: str,
    source: str,
    index: str,
    req: Annotated[ActivationRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    target = await reader.run(find_target, model, source, index)
    result = await activations.unit_activations(models, settings, target, req)
    return render(request, "_activations.html", result)


@fragments.get("/{model}/{source}/{index}/steer")
async def steer_fragment(
    request: Request,
    model: str,
    source: str,
    index: str,
    req: Annotated[SteerRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    target = await reader.run(find_target, model, source, index)
    result = await steer.steer(models, settings, target, req)
    return render(request, "_steer.html", result)


@twins.get(
    "/{model}/{source}/{index}/examples/{rank}/ablation.json",
    response_model=AblationResult,
    summary="The effect on next-token loss of ablating a unit along one top example",
)
async def ablation_json(
    request: Request,
    model: str,
    source: str,
    index: str,
    rank: int,
    reader: ReaderDep,
    models: ModelsDep,
    mode: AblationMode = "zero",
):
    return await _ablation(request, model, source, index, rank, reader, models, mode, True)


@fragments.get("/{model}/{source}/{index}/examples/{rank}/ablation")
async def ablation_fragment(
    request: Request,
    model: str,
    source: str,
    index: str,
    rank: int,
    reader: ReaderDep,
    models: ModelsDep,
    mode: AblationMode = "zero",
):
    return await _ablation(request, model, source, index, rank, reader, models, mode, False)


async def _ablation(request, model, source, index, rank, reader, models, mode, as_json: bool):
    target = await reader.run(find_target, model, source, index)
    result = await ablation.example_ablation(models, reader, target, rank, mode)
    return render(request, "_ablation.html", result, as_json=as_json)


# ---- live pages and their JSON twins --------------------------------------------------------


@twins.get("/{model}/prompt.json", response_model=PromptResult, summary="Which units fire")
async def prompt_json(
    request: Request,
    model: str,
    req: Annotated[PromptRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await prompt.prompt_units(models, settings, reader, model, req)
    return render(request, "prompt.html", result, as_json=True)


@fragments.get("/{model}/prompt")
async def prompt_page(
    request: Request,
    model: str,
    req: Annotated[PromptRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await prompt.prompt_units(models, settings, reader, model, req)
    return render(request, "prompt.html", result)


@twins.get(
    "/{model}/steer.json", response_model=MultiSteerResult, summary="Steering with several units"
)
async def steer_json(
    request: Request,
    model: str,
    query: Annotated[SteerQuery, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await steer.steer_units(models, settings, reader, model, query.request())
    return render(request, "steer.html", result, as_json=True)


@fragments.get("/{model}/steer")
async def steer_page(
    request: Request,
    model: str,
    query: Annotated[SteerQuery, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await steer.steer_units(models, settings, reader, model, query.request())
    return render(request, "steer.html", result)


@twins.get(
    "/{model}/attribution.json",
    response_model=AttributionResult,
    summary="Direct logit attribution",
)
async def attribution_json(
    request: Request,
    model: str,
    req: Annotated[AttributionRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await attribution.attribution(models, settings, reader, model, req)
    return render(request, "attribution.html", result, as_json=True)


@fragments.get("/{model}/attribution")
async def attribution_page(
    request: Request,
    model: str,
    req: Annotated[AttributionRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await attribution.attribution(models, settings, reader, model, req)
    return render(request, "attribution.html", result)


@twins.get(
    "/{model}/steer/eval.json",
    response_model=steer_eval.SteerEvalResult,
    summary="Steering measured over a prompt set",
    responses={
        202: {
            "model": steer_eval.SteerEvalResult,
            "description": "Under way: its progress; ask again after Retry-After seconds.",
        }
    },
)
async def steer_eval_json(
    request: Request,
    model: str,
    req: Annotated[steer_eval.SteerEvalRequest, Query()],
    reader: ReaderDep,
    models: JobModelsDep,
    jobs: JobsDep,
    settings: SettingsDep,
):
    """Starts the evaluation (or finds it under way: the same query is the same job) and
    answers 202 with its progress (``status`` "running", ``done`` of ``total`` strengths,
    Retry-After) until it has finished, then 200 with the result."""
    result = await steer_eval.steer_eval(models, jobs, settings, reader, model, req, wait=False)
    if result.status == "running":
        response = render(request, "steer_eval.html", result, as_json=True, status=202)
        response.headers["Retry-After"] = "1"
        return response
    return render(request, "steer_eval.html", result, as_json=True)


@fragments.get("/{model}/steer/eval")
async def steer_eval_page(
    request: Request,
    model: str,
    req: Annotated[steer_eval.SteerEvalRequest, Query()],
    reader: ReaderDep,
    models: JobModelsDep,
    jobs: JobsDep,
    settings: SettingsDep,
):
    result = await steer_eval.steer_eval(models, jobs, settings, reader, model, req, wait=False)
    return render(request, "steer_eval.html", result)


@twins.get("/{model}/atp.json", response_model=atp.AtpResult, summary="Attribution patching")
async def atp_json(
    request: Request,
    model: str,
    req: Annotated[atp.AtpRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await atp.atp(models, settings, reader, model, req)
    return render(request, "atp.html", result, as_json=True)


@fragments.get("/{model}/atp")
async def atp_page(
    request: Request,
    model: str,
    req: Annotated[atp.AtpRequest, Query()],
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    result = await atp.atp(models, settings, reader, model, req)
    return render(request, "atp.html", result)


# ---- /api -----------------------------------------------------------------------------------


@api.post("/{model}/steer", response_model=MultiSteerResult)
async def steer_units_api(
    model: str, req: MultiSteerRequest, reader: ReaderDep, models: ModelsDep, settings: SettingsDep
):
    """Default and steered completions of ``prompt``, same seed, steering several units at
    once (neurons and latents, any layers), each with its own mode and strength.

    Caps (422 when exceeded): prompt length, max_new_tokens, number of units, |strength|,
    temperature. Unknown sources or unit indices are 422s too.
    """
    return await steer.steer_units(models, settings, reader, model, req)


@api.post("/{model}/attribution", response_model=AttributionResult)
async def attribution_api(
    model: str, req: AttributionRequest, reader: ReaderDep, models: ModelsDep, settings: SettingsDep
):
    """Direct logit attribution: the target token's logit at ``position`` (minus ``other``'s)
    split into the embedding, every head, every MLP layer, the top neurons and the top SAE
    latents, through the final norm's frozen scale. The parts sum to logit - bias.
    """
    return await attribution.attribution(models, settings, reader, model, req)


@api.post("/{model}/atp", response_model=atp.AtpResult)
async def atp_api(
    model: str, req: atp.AtpRequest, reader: ReaderDep, models: ModelsDep, settings: SettingsDep
):
    """Attribution patching: for a clean and a corrupt prompt of the same length, every
    indexed unit's and every head's first-order estimate of its effect on the metric
    (logit of ``target`` minus ``other`` at the last position), and the measured effect of
    patching the top ``verify`` units to their corrupt values.

    Caps (422 when exceeded): prompt characters and tokens, ``verify``. Prompts of
    different token lengths, an unknown source or a target of several tokens are 422s.
    """
    return await atp.atp(models, settings, reader, model, req)


@api.post("/{model}/steer/eval", response_model=steer_eval.SteerEvalResult)
async def steer_eval_api(
    model: str,
    req: steer_eval.SteerEvalRequest,
    reader: ReaderDep,
    models: JobModelsDep,
    jobs: JobsDep,
    settings: SettingsDep,
):
    """Steering measured over a prompt set: for each strength (a multiple of each unit's
    max activation) and prompt, the mean change in log p(targets) over the steered
    continuation, the KL divergence on neutral text, and the unsteered loss on the
    continuation; per strength their mean, standard deviation and the share of prompts
    moved the intended way.

    Caps (422 when exceeded): units, strengths, prompts, new tokens, the total forward
    passes, each strength x max activation.

    Answers once every strength is measured: the strengths are measured one model job
    each, so other requests take their turns between them; the same request already under
    way (from the page or its JSON twin, which answer 202 with progress) is waited for,
    not started again.
    """
    return await steer_eval.steer_eval(models, jobs, settings, reader, model, req, wait=True)


@api.post("/{model}/prompt", response_model=PromptResult)
async def prompt_api(
    model: str, req: PromptRequest, reader: ReaderDep, models: ModelsDep, settings: SettingsDep
):
    """Which units fire on ``text``: the top 25 by max over the prompt, merged exactly across
    the chosen ``source``s (default: all), and the top 10 at each token.

    Caps (422 when exceeded): prompt characters and tokens. An unknown source is a 422.
    """
    return await prompt.prompt_units(models, settings, reader, model, req)


@api.post("/{model}/{source}/{index}/activations", response_model=ActivationResult)
async def activations_api(
    model: str,
    source: str,
    index: str,
    req: ActivationRequest,
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """This unit's activation on each token of ``prompt``.

    Caps (422 when exceeded): prompt characters and tokens, before and after tokenizing.
    """
    target = await reader.run(find_target, model, source, index)
    return await activations.unit_activations(models, settings, target, req)


@api.post("/{model}/{source}/{index}/steer", response_model=SteerResult)
async def steer_api(
    model: str,
    source: str,
    index: str,
    req: SteerRequest,
    reader: ReaderDep,
    models: ModelsDep,
    settings: SettingsDep,
):
    """Default and steered completions of ``prompt``, same seed, side by side.

    Steering adds ``coefficient`` to this neuron's activation at every position.
    Caps (422 when exceeded): prompt length, max_new_tokens, |coefficient|, temperature.
    """
    target = await reader.run(find_target, model, source, index)
    return await steer.steer(models, settings, target, req)
