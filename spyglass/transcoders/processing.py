"""A transcoder set fitted to a loaded model: the conversions between circuit-tracer's
unprocessed model and Spyglass's folded and centred one (see ``spyglass.transcoders``)."""

from __future__ import annotations

from dataclasses import replace

import torch

from spyglass.sae import Sae, SaeLoadError
from spyglass.transcoders.layouts import (
    INPUT_HOOK,
    MLP_IN_HOOK,
    TranscoderSet,
    load_transcoders,
)

# ---- conversion ---------------------------------------------------------------------------


def fold_input_norm(tc: Sae, weight: torch.Tensor, bias: torch.Tensor | None) -> Sae:
    """The same transcoder reading the normalised input ``x̂`` instead of ``x̂ * weight +
    bias`` (``mlp.hook_in`` -> ``ln2.hook_normalized``)."""
    t = {name: v.clone() for name, v in tc.tensors.items()}
    w = weight.to(t["W_enc"])
    b = bias.to(t["W_enc"]) if bias is not None else None
    if b is not None:
        t["b_enc"] = t["b_enc"] + b @ t["W_enc"]
        if "W_skip" in t:
            t["b_dec"] = t["b_dec"] + t["W_skip"] @ b
    t["W_enc"] = t["W_enc"] * w.unsqueeze(1)  # [d_in, d_sae]: row j read x̂_j * w_j
    if "W_skip" in t:
        t["W_skip"] = t["W_skip"] * w.unsqueeze(0)
    hook = tc.cfg.hook_name.replace(MLP_IN_HOOK, INPUT_HOOK)
    return Sae(replace(tc.cfg, hook_name=hook), t)


def centre_output(tc: Sae) -> Sae:
    """The transcoder whose output has its mean over the output's width removed, as a
    centred model's ``hook_mlp_out`` has."""
    t = {name: v.clone() for name, v in tc.tensors.items()}
    t["W_dec"] = t["W_dec"] - t["W_dec"].mean(-1, keepdim=True)
    t["b_dec"] = t["b_dec"] - t["b_dec"].mean()
    if "W_skip" in t:
        t["W_skip"] = t["W_skip"] - t["W_skip"].mean(0, keepdim=True)
    return Sae(tc.cfg, t)


# ---- fitting a model ----------------------------------------------------------------------


def for_model(tcs: TranscoderSet, model, layers: tuple[int, ...] | None = None) -> TranscoderSet:
    """The set (or ``layers`` of it) converted to ``model``'s processed weights and checked
    against it: hooks it has, widths that fit (see the module docstring)."""
    chosen = tcs.layers if layers is None else list(layers)
    missing = [layer for layer in chosen if layer not in tcs.transcoders]
    if missing:
        raise SaeLoadError(
            f"the set has no transcoder for layer {missing[0]} (it has {_span(tcs.layers)})"
        )
    out, widths = {}, {}  # widths by hook name relative to the block: one probe each
    for layer in chosen:
        tc = tcs[layer]
        if not 0 <= layer < model.n_layers:
            raise SaeLoadError(
                f"the set has layer {layer}, but the model has {model.n_layers} layers"
            )
        if tc.cfg.hook_name.endswith("." + MLP_IN_HOOK):
            weight, bias = model.unfolded_norm(layer, "ln2")
            tc = fold_input_norm(tc, weight, bias)
        if model.centred_writes and tc.cfg.hook_name_out.endswith(".hook_mlp_out"):
            tc = centre_output(tc)
        for hook, width in (
            (tc.cfg.hook_name, tc.cfg.d_in),
            (tc.cfg.hook_name_out, tc.cfg.width_out),
        ):
            if not model.has_hook(hook):
                raise SaeLoadError(
                    f"the model has no hook point {hook!r} (layer {layer}'s transcoder)"
                )
            relative = hook.split(".", 2)[-1]
            if relative not in widths:
                widths[relative] = model.hook_width(hook)
            if widths[relative] != width:
                raise SaeLoadError(
                    f"layer {layer}'s transcoder expects {hook!r} {width} wide, the model's is "
                    f"{widths[relative]}"
                )
        out[layer] = tc.to(model.device)
    return replace(tcs, transcoders=out)


def load_transcoders_for_model(path, model, layers: tuple[int, ...] | None = None) -> TranscoderSet:
    """:func:`load_transcoders` then :func:`for_model`."""
    return for_model(load_transcoders(path), model, layers)


def _span(layers: list[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
