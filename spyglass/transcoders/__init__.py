"""Transcoder sets: one transcoder per MLP layer, read and written in two layouts.

A transcoder reads the MLP's normalised input and predicts the MLP's output. In
TransformerLens's HookedTransformer names, layer ``l``'s reads
``blocks.{l}.ln2.hook_normalized`` and writes ``blocks.{l}.hook_mlp_out``.

Layouts (``load_transcoders`` tells them apart; ``save_transcoders`` writes either):

- ``circuit-tracer``: a folder with ``config.yaml`` (``model_kind: transcoder_set``,
  ``feature_input_hook`` and ``feature_output_hook`` relative to the block, e.g.
  ``ln2.hook_normalized`` and ``hook_mlp_out``, and ``activation``/``k`` for TopK) and one
  ``layer_{i}.safetensors`` per layer holding ``W_enc [d_tc, d_model]``, ``W_dec
  [d_tc, d_model]``, ``b_enc``, ``b_dec``, optionally ``W_skip [d_out, d_in]`` and
  ``activation_function.threshold`` (JumpReLU). circuit-tracer computes
  ``act(x @ W_enc.T + b_enc) @ W_dec + b_dec + x @ W_skip.T``; its TopK keeps the k largest
  pre-activations with their sign, its JumpReLU is ``pre * (pre > threshold)``.
- ``saelens``: a folder of SAELens transcoder folders, one per layer (``layer_{i}/cfg.json``
  + ``sae_weights.safetensors``), architectures ``transcoder``, ``skip_transcoder``,
  ``jumprelu_transcoder``, ``jumprelu_skip_transcoder`` (SAELens 6) and
  ``topk_transcoder``, ``topk_skip_transcoder`` (circuit-tracer's TopK; SAELens has none).
  A single SAELens transcoder folder is a set of one layer.

Weight processing. circuit-tracer runs the model unprocessed (``fold_ln=False``, no
centring); Spyglass folds the norms' weights into the next layer and centres the writing
weights (TransformerLens centres only LayerNorm models). What that changes at the hooks:

- ``ln2.hook_normalized`` is the norm's output before its weight: the same either way.
- ``mlp.hook_in`` (circuit-tracer's name for the MLP's input, after the norm's weight
  ``w`` and bias ``b``) is ``x̂ * w + b`` with ``x̂`` the normalised input, so
  ``(x̂ * w + b) @ W_enc.T = x̂ @ (W_enc * w).T + W_enc @ b``: read here, the weight is
  folded into ``W_enc`` (and ``W_skip``), the bias into ``b_enc`` (and ``b_dec``).
- ``hook_mlp_out`` of a centred model is the unprocessed one minus its mean over
  ``d_model``: read here, ``W_dec``, ``b_dec`` and ``W_skip`` are centred the same way.
  Written out, a centred decoder is kept as it is: the mean it lacks is one no LayerNorm
  downstream can see.
"""

from spyglass.transcoders.layouts import (
    CIRCUIT_TRACER,
    CONFIG_YAML,
    INPUT_HOOK,
    LAYOUTS,
    MLP_IN_HOOK,
    OUTPUT_HOOK,
    SAELENS,
    TranscoderSet,
    input_hook,
    is_transcoder_folder,
    layers_on_disk,
    load_transcoders,
    output_hook,
    save_transcoders,
)
from spyglass.transcoders.processing import (
    centre_output,
    fold_input_norm,
    for_model,
    load_transcoders_for_model,
)

__all__ = [
    "CIRCUIT_TRACER",
    "CONFIG_YAML",
    "INPUT_HOOK",
    "LAYOUTS",
    "MLP_IN_HOOK",
    "OUTPUT_HOOK",
    "SAELENS",
    "TranscoderSet",
    "centre_output",
    "fold_input_norm",
    "for_model",
    "input_hook",
    "is_transcoder_folder",
    "layers_on_disk",
    "load_transcoders",
    "load_transcoders_for_model",
    "output_hook",
    "save_transcoders",
]
