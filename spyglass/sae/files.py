"""SAELens's folder, read and written: ``cfg.json`` (current and legacy layouts) and
``sae_weights.safetensors``; and whether an SAE fits a model."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spyglass.sae.core import (
    ARCHITECTURES,
    DTYPES,
    TRANSCODER_ARCHITECTURES,
    Sae,
    SaeConfig,
    SaeLoadError,
)

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# Written next to cfg.json by SAELens's trainer in mid-training checkpoints; it holds the
# expected_average_only_in scaling factor that is only folded into the weights at the end.
_SCALER_FILENAME = "activation_scaler.json"

# SAELens 6 only treats a cfg.json as current (no legacy conversion) when its metadata
# carries a sae_lens_version >= 6; files written here follow the 6.0 layout.
_FORMAT_VERSION = "6.0.0"

# Keys SAELens 6 keeps under "metadata" (the model/hook side, as opposed to the SAE's own
# architecture fields, which sit at the top level of cfg.json).
_METADATA_KEYS = frozenset(
    {
        "model_name",
        "hook_name",
        "model_class_name",
        "hook_head_index",
        "model_from_pretrained_kwargs",
        "prepend_bos",
        "exclude_special_tokens",
        "neuronpedia_id",
        "context_size",
        "seqpos_slice",
        "dataset_path",
        "sae_lens_version",
        "sae_lens_training_version",
        "hook_name_out",
        "hook_head_index_out",
        "hf_hook_name",
        "hf_hook_name_out",
    }
)

# Pre-6 SAELens wrote these names; 6.x renames them on load.
_LEGACY_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_head_index": "hook_head_index",
    "activation_fn_str": "activation_fn",
}

# Hooks whose activations are d_model wide, whatever the block (for check_sae_for_model).
_D_MODEL_HOOKS = frozenset(
    {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out"}
)
_D_MODEL_GLOBAL_HOOKS = frozenset({"hook_embed", "hook_pos_embed", "ln_final.hook_normalized"})


def _is_legacy(raw: Mapping[str, Any]) -> bool:
    """True for cfg.json files older than SAELens 6 (SAELens converts those on load)."""
    metadata = raw.get("metadata")
    version = raw.get("sae_lens_version") or (
        metadata.get("sae_lens_version") if isinstance(metadata, dict) else None
    )
    if not version:
        return True
    match = re.match(r"\s*(\d+)", str(version))
    return match is None or int(match.group(1)) < 6


def _flatten_cfg(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One flat dict of every setting, in SAELens 6 names, with SAELens's defaults."""
    flat = {k: v for k, v in raw.items() if k != "metadata"}
    metadata = raw.get("metadata")
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            # SAELens 6 reads model/hook settings from metadata, the rest from the top level.
            if key in _METADATA_KEYS or key not in flat:
                flat[key] = value
    if _is_legacy(raw):
        flat = _convert_legacy(flat)
    return flat


def _convert_legacy(flat: dict[str, Any]) -> dict[str, Any]:
    """SAELens's pre-6 conversion: renamed keys, defaults, topk and bool normalization."""
    out = {_LEGACY_RENAMES.get(k, k): v for k, v in flat.items()}
    out.setdefault("architecture", "standard")
    out.setdefault("apply_b_dec_to_input", True)
    out.setdefault(
        "reshape_activations", "hook_z" if "hook_z" in str(out.get("hook_name", "")) else "none"
    )
    kwargs = out.get("activation_fn_kwargs")
    if out.get("activation_fn") == "topk" and isinstance(kwargs, dict) and "k" in kwargs:
        out["architecture"] = "topk"
        out["k"] = kwargs["k"]
    norm = out.get("normalize_activations")
    if isinstance(norm, bool):
        # Before it was a mode string it was a flag meaning the April-2024 scaling.
        out["normalize_activations"] = "expected_average_only_in" if norm else "none"
    elif norm is None:
        out["normalize_activations"] = "none"
    return out


def _config_from_flat(flat: Mapping[str, Any], raw: dict, scaler_factor: float | None) -> SaeConfig:
    for key in ("d_in", "d_sae"):
        if key not in flat:
            raise SaeLoadError(f"cfg.json has no {key!r}")
    if "architecture" not in flat:
        raise SaeLoadError(
            "cfg.json has no 'architecture' (SAELens 6 format); "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    hook_name = flat.get("hook_name")
    if not hook_name:
        raise SaeLoadError("cfg.json names no hook_name (the hook point the SAE reads)")
    architecture = flat["architecture"]
    topk = architecture in ("topk", "topk_transcoder", "topk_skip_transcoder")
    k = flat.get("k", 100) if topk else None  # 100: SAELens 6's default
    transcoder = architecture in TRANSCODER_ARCHITECTURES
    factor = flat.get("norm_scaling_factor")
    return SaeConfig(
        architecture=architecture,
        d_in=flat["d_in"],
        d_sae=flat["d_sae"],
        hook_name=hook_name,
        model_name=flat.get("model_name"),
        apply_b_dec_to_input=bool(flat.get("apply_b_dec_to_input", not transcoder)),
        normalize_activations=flat.get("normalize_activations") or "none",
        k=k,
        model_from_pretrained_kwargs=dict(flat.get("model_from_pretrained_kwargs") or {}),
        hook_head_index=flat.get("hook_head_index"),
        raw=raw,
        dtype=str(flat.get("dtype") or "float32").removeprefix("torch."),
        norm_scaling_factor=float(factor) if factor is not None else scaler_factor,
        rescale_acts_by_decoder_norm=bool(flat.get("rescale_acts_by_decoder_norm", False)),
        reshape_activations=flat.get("reshape_activations") or "none",
        hook_name_out=flat.get("hook_name_out") if transcoder else None,
        d_out=flat.get("d_out") if transcoder else None,
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SaeLoadError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SaeLoadError(f"{path}: cannot read ({e})") from None


def _scaler_factor(folder: Path) -> float | None:
    """The scaling factor from a SAELens training checkpoint's activation_scaler.json."""
    path = folder / _SCALER_FILENAME
    if not path.is_file():
        return None
    data = _read_json(path)
    factor = data.get("scaling_factor") if isinstance(data, dict) else None
    return float(factor) if isinstance(factor, int | float) else None


def _read_weights(path: Path, device: str, cfg: SaeConfig) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise SaeLoadError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    if "scaling_factor" in tensors:
        # A finetuning scale SAELens once saved; all-ones copies are dropped, as SAELens does.
        scale = tensors.pop("scaling_factor")
        if not torch.allclose(scale, torch.ones_like(scale)):
            raise SaeLoadError(f"{path}: a non-unit finetuning 'scaling_factor' is not supported")
    if cfg.architecture == "jumprelu" and "log_threshold" in tensors and "threshold" not in tensors:
        # Older JumpReLU checkpoints store log(threshold); SAELens converts them the same way.
        tensors["threshold"] = torch.exp(tensors.pop("log_threshold"))
    dtype = DTYPES[cfg.dtype]
    return {name: t.to(dtype) for name, t in tensors.items()}


def load_sae(
    path: str | Path, device: str = "cpu", *, cfg_overrides: Mapping[str, Any] | None = None
) -> Sae:
    """Load an SAE from a SAELens-format folder (``cfg.json`` + ``sae_weights.safetensors``).

    ``cfg_overrides`` replace settings from ``cfg.json`` (SAELens 6 names), as SAELens's
    pretrained directory does for some releases; ``raw`` still shows the file as read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SaeLoadError(f"SAE folder not found: {folder}")
    cfg_path, weights_path = folder / CFG_FILENAME, folder / WEIGHTS_FILENAME
    if not cfg_path.is_file():
        raise SaeLoadError(f"missing {CFG_FILENAME} in {folder}")
    if not weights_path.is_file():
        raise SaeLoadError(f"missing {WEIGHTS_FILENAME} in {folder}")
    raw = _read_json(cfg_path)
    if not isinstance(raw, dict):
        raise SaeLoadError(f"{cfg_path}: expected a JSON object, got {type(raw).__name__}")
    flat = _flatten_cfg(raw)
    flat.update(cfg_overrides or {})
    try:
        cfg = _config_from_flat(flat, raw, _scaler_factor(folder))
    except SaeLoadError as e:
        raise SaeLoadError(f"{cfg_path}: {e}") from None
    if cfg.normalize_activations == "expected_average_only_in" and cfg.norm_scaling_factor is None:
        warnings.warn(
            f"{cfg_path}: normalize_activations is 'expected_average_only_in' but no "
            "norm_scaling_factor is known; inputs are encoded unscaled, as SAELens's "
            "load_from_disk does",
            stacklevel=2,
        )
    tensors = _read_weights(weights_path, device, cfg)
    try:
        return Sae(cfg, tensors)
    except SaeLoadError as e:
        raise SaeLoadError(f"{weights_path}: {e}") from None


# ---- writing ------------------------------------------------------------------------------


def fold_norm_scaling(sae: Sae) -> Sae:
    """An equivalent SAE with the expected_average_only_in factor folded into the weights.

    The same fold SAELens applies after training and in ``from_pretrained``: scaling the
    input by s equals scaling W_enc by s, and W_dec and b_dec by 1/s. Other SAEs are
    returned unchanged.
    """
    scale = sae.cfg.norm_scaling_factor
    if sae.cfg.normalize_activations != "expected_average_only_in" or scale is None:
        return sae
    tensors = dict(sae.tensors)
    tensors["W_enc"] = tensors["W_enc"] * scale
    tensors["W_dec"] = tensors["W_dec"] / scale
    tensors["b_dec"] = tensors["b_dec"] / scale
    cfg = replace(sae.cfg, normalize_activations="none", norm_scaling_factor=None)
    return Sae(cfg, tensors)


def _carried_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata worth keeping from the cfg.json an SAE was loaded from (context size, ...)."""
    metadata = raw.get("metadata")
    if isinstance(metadata, dict) and not _is_legacy(raw):
        return dict(metadata)
    flat = _convert_legacy(dict(raw)) if raw else {}
    return {k: v for k, v in flat.items() if k in _METADATA_KEYS}


def _cfg_json(sae: Sae, extra_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    c = sae.cfg
    own_metadata = {
        "sae_lens_version": _FORMAT_VERSION,
        "sae_lens_training_version": _FORMAT_VERSION,
        "model_name": c.model_name,
        "hook_name": c.hook_name,
        "hook_head_index": c.hook_head_index,
        "model_from_pretrained_kwargs": dict(c.model_from_pretrained_kwargs),
    }
    if c.is_transcoder:
        own_metadata["hook_name_out"] = c.hook_name_out
    clash = sorted(set(extra_cfg or {}) & set(own_metadata))
    if clash:
        raise ValueError(f"extra_cfg may not set {clash[0]!r}: it comes from the SAE's config")
    metadata = _carried_metadata(c.raw)
    metadata.pop("norm_scaling_factor", None)
    metadata.update(extra_cfg or {})
    metadata.update(own_metadata)
    cfg: dict[str, Any] = {
        "architecture": c.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        **({"d_out": c.width_out} if c.is_transcoder else {}),
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
        "reshape_activations": c.reshape_activations,
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm
    elif c.encoding == "topk":
        cfg["k"] = c.k
    cfg["metadata"] = metadata
    return cfg


def save_sae(sae: Sae, folder: str | Path, extra_cfg: Mapping[str, Any] | None = None) -> None:
    """Write ``sae`` as a SAELens 6 folder that ``SAE.load_from_disk`` reads back.

    ``extra_cfg`` goes into cfg.json's ``metadata`` (where SAELens keeps everything that is
    not the SAE's own architecture, and keeps unknown keys). A known expected_average_only_in
    factor is folded into the weights first, since SAELens does not read one from cfg.json.
    """
    sae = fold_norm_scaling(sae)
    cfg = _cfg_json(sae, extra_cfg)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in sae.tensors.items()}
    save_file(tensors, str(out / WEIGHTS_FILENAME))
    (out / CFG_FILENAME).write_text(json.dumps(cfg, indent=2) + "\n")


# ---- fitting a model ----------------------------------------------------------------------


def check_sae_for_model(sae: Sae, d_model: int, n_layers: int) -> None:
    """Raise SaeLoadError if ``sae`` cannot read the given model's hook."""
    hook = sae.cfg.hook_name
    layer = sae.layer
    if layer is not None and not 0 <= layer < n_layers:
        raise SaeLoadError(
            f"SAE hook {hook!r} is in layer {layer}, but the model has {n_layers} layers "
            f"(0-{n_layers - 1})"
        )
    last = hook.rsplit(".", 1)[-1]
    d_model_wide = (layer is not None and last in _D_MODEL_HOOKS) or hook in _D_MODEL_GLOBAL_HOOKS
    if d_model_wide and sae.cfg.d_in != d_model:
        raise SaeLoadError(
            f"SAE d_in is {sae.cfg.d_in} but the model's d_model is {d_model} "
            f"(hook {hook!r} carries d_model-wide activations)"
        )
