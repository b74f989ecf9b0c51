"""Spyglass's source kinds (``mlp``, ``sae``, ``transcoder``) in Neuronpedia's terms, both
ways: the set a source belongs to, what its source set and ``saelensConfig`` say, and the
kind an export without Spyglass's folder is read back as.

Neuronpedia's conventions, in hijohnnylin/neuronpedia (read at commit ebb8426):
- a source id is ``<layer>-<set name>`` (``apps/webapp/lib/utils/source.ts``:
  ``getLayerNumFromSource``, ``getSourceSetNameFromSource``), one source per layer of a set;
  transcoder sets are named so (``gemmascope-transcoder-16k``,
  ``llamascope-2-transcoder-16k-k64``) and a circuit-tracer graph finds its transcoder
  features' dashboards at ``<node layer>-<metadata.feature_details.neuronpedia_source_set>``
  (``apps/webapp/components/provider/graph-provider.tsx``,
  ``apps/webapp/app/api/graph/graph-schema.json``). A Spyglass transcoder set's sources
  ``0-tc-topk-skip-768``, ``1-tc-topk-skip-768``, ... are therefore the layers of set
  ``tc-topk-skip-768``;
- ``SourceSet.type`` is a free string (``""`` by default, ``Custom`` for a user's set):
  Spyglass writes its kind there;
- SAELens names a transcoder's input hook ``hook_name`` (``blocks.L.ln2.hook_normalized``
  for GemmaScope's, which Neuronpedia's inference reads:
  ``apps/inference/neuronpedia_inference/engine_adapter.py``) and its output
  ``hook_name_out``; a transcoder source's ``saelensConfig`` carries both beside Spyglass's
  own info (``hook``, ``hook_out``), and its features' ``hookName`` is the input hook, as
  for an SAE.
"""

from __future__ import annotations

from spyglass import storage

KINDS = {"mlp": "MLP neurons", "sae": "SAE latents", "transcoder": "transcoder latents"}
"""Each kind as a source set's description says it."""
INPUT_HOOK = "ln2.hook_normalized"
OUTPUT_HOOK = "hook_mlp_out"
"""Where a layer's transcoder reads and writes, as in ``spyglass.transcoders`` (which
imports torch; an export or import needs none)."""


def set_name(name: str) -> str:
    """Neuronpedia's source id is ``<layer>-<set name>``: ``5-mlp`` is set ``mlp``."""
    head, _, rest = name.partition("-")
    return rest if head.isdigit() and rest else name


def describe(kind: str) -> str:
    return f"{KINDS.get(kind, kind)} indexed by Spyglass"


def hook_out(info: dict | None, layer: int) -> str:
    """Where a transcoder writes: its info's (Spyglass's key or SAELens's), else the MLP's
    output of its layer."""
    found = _get(info, "hook_out") or _get(info, "hook_name_out")
    return str(found or f"blocks.{layer}.{OUTPUT_HOOK}")


def transcoder_hook(layer: int) -> str:
    return f"blocks.{layer}.{INPUT_HOOK}"


def saelens_config(s: storage.SourceRow) -> dict | None:
    """A source's ``saelensConfig``: its info; a transcoder's with SAELens's names of its
    hooks too. None without info (the record then has no such key)."""
    if s.info is None or s.kind != "transcoder":
        return s.info
    return {**s.info, "hook_name": s.hook, "hook_name_out": hook_out(s.info, s.layer)}


def read_kind(name: str, hook: str, set_type: str, config: dict | None) -> str:
    """The kind of a source in an export without Spyglass's folder: what its source set's
    type says, else a transcoder by its config (an architecture SAELens names
    ``*transcoder``, or an output hook), its input hook or its set's name, else an MLP
    by its hook or name, else an SAE."""
    if set_type in KINDS:
        return set_type
    if (
        str(_get(config, "architecture") or "").endswith("transcoder")
        or _get(config, "hook_out")
        or _get(config, "hook_name_out")
        or hook.endswith(INPUT_HOOK)
        or "transcoder" in set_name(name)
    ):
        return "transcoder"
    if hook.endswith("mlp.hook_post") or name.endswith("-mlp"):
        return "mlp"
    return "sae"


def config_hook(config: dict | None) -> str:
    """The input hook a ``saelensConfig`` names (SAELens 6 keeps it in ``metadata``)."""
    return str(_get(config, "hook_name") or _get(config, "hook") or "")


def transcoder_info(config: dict | None, layer: int) -> dict:
    """A transcoder source's info from its ``saelensConfig``, with its output hook."""
    return {**(config or {}), "hook_out": hook_out(config, layer)}


def _get(config: dict | None, key: str):
    """A key of a config, or of its ``metadata`` (where SAELens 6 keeps hook names)."""
    config = config or {}
    meta = config.get("metadata")
    return config.get(key) or (meta.get(key) if isinstance(meta, dict) else None)
