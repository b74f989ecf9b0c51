"""Sparse autoencoders in SAELens's on-disk format, without SAELens.

A SAELens SAE is a folder holding ``cfg.json`` and ``sae_weights.safetensors``. This
package reads and writes that folder for the four architectures in common use, with each
architecture's encode computed the way SAELens 6.x computes it:

- ``standard``: ``relu(x' @ W_enc + b_enc)``
- ``topk``: the ``k`` largest of ``x' @ W_enc + b_enc`` (optionally scaled by the decoder
  row norms), passed through ReLU; everything else zero
- ``jumprelu``: ``relu(h) * (h > threshold)`` with ``h = x' @ W_enc + b_enc``
- ``gated``: ``(x' @ W_enc + b_gate > 0) * relu(x' @ (W_enc * exp(r_mag)) + b_mag)``

where ``x'`` is the input after the configured activation normalization and, when
``apply_b_dec_to_input``, minus ``b_dec``. Decoding is ``f @ W_dec + b_dec`` followed by
undoing the normalization.

Transcoders (``transcoder``, ``skip_transcoder``, ``jumprelu_transcoder``,
``jumprelu_skip_transcoder`` as in SAELens 6, and ``topk_transcoder``,
``topk_skip_transcoder``) read ``hook_name`` and predict ``hook_name_out``: they encode as
the SAE of their activation does (a TopK transcoder keeps the sign of its k largest
pre-activations, as circuit-tracer's TopK does), never subtract ``b_dec`` from the input,
and a skip transcoder adds ``x @ W_skip.T`` to its decode. ``spyglass.transcoders`` reads
and writes whole sets of them.

Pure torch + safetensors: neither transformer_lens nor sae_lens is imported by this
package, except that :func:`resolve_pretrained` imports sae_lens (lazily) to read its
directory of released SAEs.

Modules: ``core`` (``SaeConfig``, ``Sae``: encode and decode), ``files`` (the folder, read
and written; whether an SAE fits a model), ``pretrained`` (SAELens's released SAEs).
"""

from spyglass.sae.core import (
    ARCHITECTURES,
    ENCODE_ROWS,
    NORMALIZATIONS,
    SAE_ARCHITECTURES,
    TRANSCODER_ARCHITECTURES,
    Sae,
    SaeConfig,
    SaeLoadError,
)
from spyglass.sae.files import (
    CFG_FILENAME,
    WEIGHTS_FILENAME,
    check_sae_for_model,
    fold_norm_scaling,
    load_sae,
    save_sae,
)
from spyglass.sae.pretrained import load_pretrained, pretrained_cfg_overrides, resolve_pretrained

__all__ = [
    "ARCHITECTURES",
    "SAE_ARCHITECTURES",
    "TRANSCODER_ARCHITECTURES",
    "CFG_FILENAME",
    "ENCODE_ROWS",
    "NORMALIZATIONS",
    "WEIGHTS_FILENAME",
    "Sae",
    "SaeConfig",
    "SaeLoadError",
    "check_sae_for_model",
    "fold_norm_scaling",
    "load_pretrained",
    "load_sae",
    "pretrained_cfg_overrides",
    "resolve_pretrained",
    "save_sae",
]
