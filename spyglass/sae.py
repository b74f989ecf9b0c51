"""Sparse autoencoders in SAELens's on-disk format, without SAELens.

A SAELens SAE is a folder holding ``cfg.json`` and ``sae_weights.safetensors``. This
module reads and writes that folder for the four architectures in common use, with each
architecture's encode computed the way SAELens 6.x computes it:

- ``standard``: ``relu(x' @ W_enc + b_enc)``
- ``topk``: the ``k`` largest of ``x' @ W_enc + b_enc`` (optionally scaled by the decoder
  row norms), passed through ReLU; everything else zero
- ``jumprelu``: ``relu(h) * (h > threshold)`` with ``h = x' @ W_enc + b_enc``
- ``gated``: ``(x' @ W_enc + b_gate > 0) * relu(x' @ (W_enc * exp(r_mag)) + b_mag)``

where ``x'`` is the input after the configured activation normalization and, when
``apply_b_dec_to_input``, minus ``b_dec``. Decoding is ``f @ W_dec + b_dec`` followed by
undoing the normalization.

Pure torch + safetensors: neither transformer_lens nor sae_lens is imported here, except
that :func:`resolve_pretrained` imports sae_lens (lazily) to read its directory of
released SAEs.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CFG_FILENAME = "cfg.json"
ENCODE_ROWS = 256
"""Rows a top-k SAE encodes at a time on a CPU (see ``Sae._encode_topk``)."""
WEIGHTS_FILENAME = "sae_weights.safetensors"
# Written next to cfg.json by SAELens's trainer in mid-training checkpoints; it holds the
# expected_average_only_in scaling factor that is only folded into the weights at the end.
_SCALER_FILENAME = "activation_scaler.json"

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")

# Tensors each architecture stores besides W_enc, W_dec and b_dec (all of shape [d_sae]).
_LATENT_TENSORS: dict[str, tuple[str, ...]] = {
    "standard": ("b_enc",),
    "topk": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "r_mag", "b_mag"),
}

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

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Hooks whose activations are d_model wide, whatever the block (for check_sae_for_model).
_D_MODEL_HOOKS = frozenset(
    {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out"}
)
_D_MODEL_GLOBAL_HOOKS = frozenset({"hook_embed", "hook_pos_embed", "ln_final.hook_normalized"})

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")

# SAELens's layer_norm mode divides by (std + eps) with this eps.
_LAYER_NORM_EPS = 1e-5


class SaeLoadError(Exception):
    """An SAE that cannot be loaded, saved or used; ``str(e)`` is one line naming the problem."""


@dataclass(frozen=True)
class SaeConfig:
    """What an SAE is and where it reads from; built from (and written back to) ``cfg.json``."""

    architecture: str
    """One of ``standard``, ``topk``, ``jumprelu``, ``gated``."""
    d_in: int
    """Width of the activations the SAE reads (the hook's last dimension)."""
    d_sae: int
    """Number of latents."""
    hook_name: str
    """TransformerLens hook point the SAE was trained on, e.g. ``blocks.12.hook_resid_post``."""
    model_name: str | None = None
    """Model the SAE was trained on, as SAELens recorded it (a TransformerLens name)."""
    apply_b_dec_to_input: bool = True
    """Whether ``b_dec`` is subtracted from the input before encoding."""
    normalize_activations: str = "none"
    """Input normalization: ``none``, ``expected_average_only_in``, ``constant_norm_rescale``
    or ``layer_norm``."""
    k: int | None = None
    """Latents kept per input (topk only; ``None`` otherwise)."""
    model_from_pretrained_kwargs: dict = field(default_factory=dict)
    """Model-loading options the SAE was trained with (e.g. ``center_writing_weights``)."""
    hook_head_index: int | None = None
    """Attention head the SAE reads, for per-head hooks; ``None`` for whole-hook SAEs."""
    raw: dict = field(default_factory=dict)
    """The full ``cfg.json`` as read, for display (empty for an SAE built in memory)."""
    dtype: str = "float32"
    """Dtype the weights are held in; inputs are cast to it before encoding, as SAELens does."""
    norm_scaling_factor: float | None = None
    """For ``expected_average_only_in``: inputs are multiplied by this before encoding (and
    reconstructions divided by it). ``None`` means unknown: inputs are used as they are,
    which is what SAELens's ``load_from_disk`` does."""
    rescale_acts_by_decoder_norm: bool = False
    """TopK only: pre-activations are scaled by the decoder row norms before selecting,
    and latents divided by them again when decoding."""
    reshape_activations: str = "none"
    """``hook_z``: inputs are ``[..., n_heads, d_head]`` and are flattened to ``d_in``."""

    def __post_init__(self) -> None:
        problem = _config_problem(self)
        if problem is not None:
            raise SaeLoadError(problem)


def _config_problem(cfg: SaeConfig) -> str | None:
    """Why ``cfg`` cannot describe a usable SAE, or None."""
    if cfg.architecture not in ARCHITECTURES:
        return (
            f"unknown SAE architecture {cfg.architecture!r}; supported: {', '.join(ARCHITECTURES)}"
        )
    for name in ("d_in", "d_sae"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be a positive integer, got {value!r}"
    if not isinstance(cfg.hook_name, str) or not cfg.hook_name:
        return f"hook_name must be a non-empty string, got {cfg.hook_name!r}"
    if cfg.normalize_activations not in NORMALIZATIONS:
        return (
            f"normalize_activations {cfg.normalize_activations!r} is not supported for "
            f"inference; supported: {', '.join(NORMALIZATIONS)}"
        )
    if cfg.architecture == "topk":
        if isinstance(cfg.k, bool) or not isinstance(cfg.k, int) or not 1 <= cfg.k <= cfg.d_sae:
            return f"topk needs k between 1 and d_sae={cfg.d_sae}, got k={cfg.k!r}"
    elif cfg.k is not None:
        return f"k is only meaningful for topk SAEs, got k={cfg.k!r} for {cfg.architecture}"
    if cfg.dtype not in _DTYPES:
        return f"unsupported dtype {cfg.dtype!r}; supported: {', '.join(_DTYPES)}"
    if cfg.norm_scaling_factor is not None and not (
        isinstance(cfg.norm_scaling_factor, int | float)
        and math.isfinite(cfg.norm_scaling_factor)
        and cfg.norm_scaling_factor > 0
    ):
        return f"norm_scaling_factor must be a positive number, got {cfg.norm_scaling_factor!r}"
    if cfg.reshape_activations not in ("none", "hook_z"):
        return f"reshape_activations must be 'none' or 'hook_z', got {cfg.reshape_activations!r}"
    return None


class Sae:
    """An SAE's weights and config, with SAELens's encode/decode for its architecture.

    Tensors: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``, and per
    architecture ``b_enc`` (standard, topk, jumprelu), ``threshold`` (jumprelu), ``b_gate``,
    ``r_mag``, ``b_mag`` (gated), each ``[d_sae]``. Attributes an architecture does not
    have are ``None`` (a gated SAE has no ``b_enc``, as in SAELens).
    """

    def __init__(self, cfg: SaeConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        problem = _tensors_problem(cfg, tensors)
        if problem is not None:
            raise SaeLoadError(problem)
        self.cfg = cfg
        # Held in cfg.dtype, which is what cfg.json will say when saved (a no-op when equal).
        tensors = {name: t.to(_DTYPES[cfg.dtype]) for name, t in tensors.items()}
        self.W_enc: torch.Tensor = tensors["W_enc"]
        self.W_dec: torch.Tensor = tensors["W_dec"]
        self.b_dec: torch.Tensor = tensors["b_dec"]
        self.b_enc: torch.Tensor | None = tensors.get("b_enc")
        self.threshold: torch.Tensor | None = tensors.get("threshold")
        self.b_gate: torch.Tensor | None = tensors.get("b_gate")
        self.r_mag: torch.Tensor | None = tensors.get("r_mag")
        self.b_mag: torch.Tensor | None = tensors.get("b_mag")

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Sae({c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}, hook={c.hook_name!r}"
            + (f", k={c.k}" if c.k is not None else "")
            + ")"
        )

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors this architecture stores, by their SAELens names."""
        names = ("W_enc", "W_dec", "b_dec", *_LATENT_TENSORS[self.cfg.architecture])
        return {name: getattr(self, name) for name in names}

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def layer(self) -> int | None:
        """The block the hook belongs to (``blocks.12.hook_resid_post`` -> 12), else None."""
        match = _LAYER_RE.match(self.cfg.hook_name)
        return int(match.group(1)) if match else None

    def to(self, device: str | torch.device) -> Sae:
        """Move every tensor to ``device`` (in place, like ``nn.Module.to``); returns self."""
        for name, tensor in self.tensors.items():
            setattr(self, name, tensor.to(device))
        return self

    # ---- encode ------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``[..., d_sae]`` for activations ``x [..., d_in]``."""
        sae_in = self._sae_in(x)  # [..., d_in]
        arch = self.cfg.architecture
        if arch == "topk":
            return self._encode_topk(sae_in)
        pre = sae_in @ self.W_enc  # [..., d_sae], shared by every architecture
        if arch == "standard":
            return torch.relu(pre + self.b_enc)
        if arch == "jumprelu":
            hidden = pre + self.b_enc
            # ReLU then the jump: a negative threshold still never lets a negative through.
            return torch.relu(hidden) * (hidden > self.threshold).to(hidden.dtype)
        return self._encode_gated(pre)

    def _encode_topk(self, sae_in: torch.Tensor) -> torch.Tensor:
        """``sae_in`` [..., d_in] to latents [..., d_sae], ``ENCODE_ROWS`` rows at a time on
        a CPU: each slice's [rows, d_sae] pre-activations stay in cache between the matmul
        (bias added inside it) and the top-k, and only the output goes out to memory."""
        flat = sae_in.reshape(-1, sae_in.shape[-1])
        out = torch.zeros(flat.shape[0], self.cfg.d_sae, dtype=flat.dtype, device=flat.device)
        scale = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
        step = ENCODE_ROWS if flat.device.type == "cpu" else max(flat.shape[0], 1)
        for lo in range(0, flat.shape[0], step):
            hidden = torch.addmm(self.b_enc, flat[lo : lo + step], self.W_enc)
            if scale is not None:
                hidden *= scale
            values, indices = torch.topk(hidden, k=self.cfg.k, dim=-1, sorted=False)
            # The k largest are kept even when negative, then ReLU'd: fewer than k may be
            # non-zero.
            out[lo : lo + step].scatter_(-1, indices, values.relu_())
        return out.reshape(*sae_in.shape[:-1], self.cfg.d_sae)

    def _encode_gated(self, pre: torch.Tensor) -> torch.Tensor:
        # pre = x' @ W_enc: [..., d_sae]. Both paths share W_enc; the magnitude path scales
        # it per latent by exp(r_mag), i.e. x' @ (W_enc * exp(r_mag)) == pre * exp(r_mag).
        active = (pre + self.b_gate > 0).to(pre.dtype)
        magnitude = torch.relu(pre * torch.exp(self.r_mag) + self.b_mag)
        return active * magnitude

    def _sae_in(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the encoder sees it: cast, flattened, normalized, minus b_dec."""
        x = self._flat_input(x)
        x = self._normalize_in(x)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x

    def _flat_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.cfg.reshape_activations == "hook_z" and x.shape[-1] != self.cfg.d_in:
            x = x.flatten(-2)  # [..., n_heads, d_head] -> [..., d_in]
        return x

    def _normalize_in(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.cfg.normalize_activations
        if mode == "expected_average_only_in":
            scale = self.cfg.norm_scaling_factor
            return x if scale is None else x * scale
        if mode == "constant_norm_rescale":
            return x * _norm_coefficient(x, self.cfg.d_in)
        if mode == "layer_norm":
            mu, std = _layer_norm_stats(x)
            return (x - mu) / (std + _LAYER_NORM_EPS)
        return x

    # ---- decode ------------------------------------------------------------------------

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``[..., d_in]`` from latents ``f [..., d_sae]``.

        ``constant_norm_rescale`` and ``layer_norm`` SAEs normalize each input by its own
        statistics, so undoing that needs the input ``x`` that ``f`` was encoded from
        (SAELens keeps it from the last encode call; here it is passed explicitly).
        """
        f = f.to(self.dtype)
        if self.cfg.architecture == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            f = f * (1 / self.W_dec.norm(dim=-1))
        out = f @ self.W_dec + self.b_dec  # [..., d_in]
        return self._normalize_out(out, x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``, in the input's own scale."""
        return self.decode(self.encode(x), x)

    def _normalize_out(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        mode = self.cfg.normalize_activations
        if mode == "expected_average_only_in":
            scale = self.cfg.norm_scaling_factor
            return out if scale is None else out / scale
        if mode in ("constant_norm_rescale", "layer_norm"):
            if x is None:
                raise ValueError(f"decode of a {mode} SAE needs x, the input that was encoded")
            x = self._flat_input(x)
            if mode == "constant_norm_rescale":
                return out / _norm_coefficient(x, self.cfg.d_in)
            mu, std = _layer_norm_stats(x)
            return out * std + mu
        return out


def _norm_coefficient(x: torch.Tensor, d_in: int) -> torch.Tensor:
    """SAELens's constant_norm_rescale factor: scales each input to norm sqrt(d_in)."""
    return (d_in**0.5) / x.norm(dim=-1, keepdim=True)  # [..., 1]


def _layer_norm_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased, as torch.std) standard deviation over the last dimension."""
    mu = x.mean(dim=-1, keepdim=True)  # [..., 1]
    return mu, (x - mu).std(dim=-1, keepdim=True)


def _tensors_problem(cfg: SaeConfig, tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``tensors`` do not fit ``cfg``, or None."""
    needed = ("W_enc", "W_dec", "b_dec", *_LATENT_TENSORS[cfg.architecture])
    missing = [name for name in needed if name not in tensors]
    if missing:
        return f"missing tensor {missing[0]!r}: a {cfg.architecture} SAE needs {', '.join(needed)}"
    extra = sorted(set(tensors) - set(needed))
    if extra:
        # Strict, like SAELens: an extra tensor usually means a mislabeled architecture.
        return (
            f"unexpected tensor {extra[0]!r} for a {cfg.architecture} SAE "
            f"(expected {', '.join(needed)})"
        )
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    for name in needed:
        want = shapes.get(name, (cfg.d_sae,))
        got = tuple(tensors[name].shape)
        if got != want:
            return (
                f"tensor {name!r} has shape {list(got)} but d_in={cfg.d_in}, "
                f"d_sae={cfg.d_sae} need {list(want)}"
            )
    return None


# ---- reading cfg.json ---------------------------------------------------------------------


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
    k = flat.get("k", 100) if architecture == "topk" else None  # 100: SAELens 6's default
    factor = flat.get("norm_scaling_factor")
    return SaeConfig(
        architecture=architecture,
        d_in=flat["d_in"],
        d_sae=flat["d_sae"],
        hook_name=hook_name,
        model_name=flat.get("model_name"),
        apply_b_dec_to_input=bool(flat.get("apply_b_dec_to_input", True)),
        normalize_activations=flat.get("normalize_activations") or "none",
        k=k,
        model_from_pretrained_kwargs=dict(flat.get("model_from_pretrained_kwargs") or {}),
        hook_head_index=flat.get("hook_head_index"),
        raw=raw,
        dtype=str(flat.get("dtype") or "float32").removeprefix("torch."),
        norm_scaling_factor=float(factor) if factor is not None else scaler_factor,
        rescale_acts_by_decoder_norm=bool(flat.get("rescale_acts_by_decoder_norm", False)),
        reshape_activations=flat.get("reshape_activations") or "none",
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
    dtype = _DTYPES[cfg.dtype]
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
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
        "reshape_activations": c.reshape_activations,
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm
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


# ---- SAELens's directory of released SAEs ---------------------------------------------------


def _directory_entry(release: str, sae_id: str) -> tuple[Any, str]:
    """SAELens's directory entry for ``release`` and the in-repo folder of ``sae_id``."""
    try:
        # Imported here only: sae-lens is heavy and optional (it pulls in transformer_lens).
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        raise SaeLoadError(
            "looking up a pretrained SAE release needs sae-lens's directory: pip install sae-lens"
        ) from None
    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise SaeLoadError(f"unknown SAE release {release!r} (not in sae-lens's directory)")
    entry = directory[release]
    if sae_id not in entry.saes_map:
        ids = list(entry.saes_map)
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise SaeLoadError(f"release {release!r} has no SAE {sae_id!r}; it has: {shown}")
    if entry.conversion_func is not None:
        raise SaeLoadError(
            f"release {release!r} is stored in the {entry.conversion_func!r} format, not "
            "SAELens's cfg.json + sae_weights.safetensors; Spyglass reads only the latter"
        )
    return entry, entry.saes_map[sae_id]


def resolve_pretrained(release: str, sae_id: str) -> Path:
    """Download (or find in the hub cache) a released SAE; returns its local folder.

    The folder is the same SAELens layout :func:`load_sae` reads. Releases whose directory
    entry sets config overrides or a norm scaling factor need those too:
    :func:`load_pretrained` applies them.
    """
    entry, folder = _directory_entry(release, sae_id)
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in (CFG_FILENAME, WEIGHTS_FILENAME):
        in_repo = f"{folder}/{filename}" if folder else filename
        try:
            paths.append(Path(hf_hub_download(repo_id=entry.repo_id, filename=in_repo)))
        except Exception as e:  # the hub raises many kinds (offline, 404, auth, network)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SaeLoadError(
                f"cannot fetch {in_repo} from {entry.repo_id} "
                f"(release {release!r}, SAE {sae_id!r}): {reason}"
            ) from None
    return paths[0].parent


def pretrained_cfg_overrides(release: str, sae_id: str) -> dict[str, Any]:
    """Settings SAELens's directory adds to a release's cfg.json (incl. norm_scaling_factor)."""
    entry, _ = _directory_entry(release, sae_id)
    overrides = dict(entry.config_overrides or {})
    factor = entry.norm_scaling_factor.get(sae_id)
    if factor is not None:
        overrides["norm_scaling_factor"] = float(factor)
    return overrides


def load_pretrained(release: str, sae_id: str, device: str = "cpu") -> Sae:
    """:func:`resolve_pretrained` then :func:`load_sae` with the directory's overrides."""
    folder = resolve_pretrained(release, sae_id)
    return load_sae(folder, device, cfg_overrides=pretrained_cfg_overrides(release, sae_id))
