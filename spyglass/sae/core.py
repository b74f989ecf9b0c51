"""``Sae``: one SAE's config and weights, and its encode and decode for each architecture
(see ``spyglass.sae``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

ENCODE_ROWS = 256
"""Rows a top-k SAE encodes at a time on a CPU (see ``Sae._encode_topk``)."""

SAE_ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
TRANSCODER_ARCHITECTURES = (
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
    "topk_transcoder",
    "topk_skip_transcoder",
)
"""SAELens 6's four transcoders, and TopK ones (circuit-tracer's TopK; SAELens has none)."""
ARCHITECTURES = SAE_ARCHITECTURES + TRANSCODER_ARCHITECTURES
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")

# Tensors each architecture stores besides W_enc, W_dec and b_dec (all of shape [d_sae]).
_LATENT_TENSORS: dict[str, tuple[str, ...]] = {
    "standard": ("b_enc",),
    "topk": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "r_mag", "b_mag"),
    "transcoder": ("b_enc",),
    "skip_transcoder": ("b_enc", "W_skip"),
    "jumprelu_transcoder": ("b_enc", "threshold"),
    "jumprelu_skip_transcoder": ("b_enc", "threshold", "W_skip"),
    "topk_transcoder": ("b_enc",),
    "topk_skip_transcoder": ("b_enc", "W_skip"),
}

# How each architecture encodes: a transcoder encodes as its activation's SAE does.
_ENCODING = {
    "transcoder": "standard",
    "skip_transcoder": "standard",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",
    "topk_transcoder": "topk",
    "topk_skip_transcoder": "topk",
}

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

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
    hook_name_out: str | None = None
    """Transcoders only: the hook point the decoder writes (predicts), e.g.
    ``blocks.7.hook_mlp_out``; the encoder reads ``hook_name``."""
    d_out: int | None = None
    """Transcoders only: width of the output hook (``None``: ``d_in``)."""

    def __post_init__(self) -> None:
        problem = _config_problem(self)
        if problem is not None:
            raise SaeLoadError(problem)

    @property
    def is_transcoder(self) -> bool:
        return self.architecture in TRANSCODER_ARCHITECTURES

    @property
    def encoding(self) -> str:
        """``standard``, ``topk``, ``jumprelu`` or ``gated``: how latents are computed."""
        return _ENCODING.get(self.architecture, self.architecture)

    @property
    def width_out(self) -> int:
        """Width of what the decoder writes: ``d_out`` for a transcoder, else ``d_in``."""
        return self.d_out if self.d_out is not None else self.d_in


def _transcoder_problem(cfg: SaeConfig) -> str | None:
    """Why ``cfg`` cannot describe a usable transcoder, or None."""
    if not isinstance(cfg.hook_name_out, str) or not cfg.hook_name_out:
        return f"a {cfg.architecture} needs hook_name_out (the hook it predicts)"
    if cfg.d_out is not None and (
        isinstance(cfg.d_out, bool) or not isinstance(cfg.d_out, int) or cfg.d_out < 1
    ):
        return f"d_out must be a positive integer, got {cfg.d_out!r}"
    if cfg.apply_b_dec_to_input:
        # b_dec lives in the output space; SAELens refuses this too.
        return f"a {cfg.architecture} cannot apply b_dec to its input"
    if cfg.normalize_activations != "none" or cfg.reshape_activations != "none":
        return f"a {cfg.architecture} reads its input as it is (normalize_activations 'none')"
    return None


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
    if cfg.is_transcoder:
        problem = _transcoder_problem(cfg)
        if problem is not None:
            return problem
    elif cfg.hook_name_out is not None or cfg.d_out is not None:
        return f"hook_name_out and d_out are for transcoders, not a {cfg.architecture} SAE"
    if cfg.encoding == "topk":
        if isinstance(cfg.k, bool) or not isinstance(cfg.k, int) or not 1 <= cfg.k <= cfg.d_sae:
            return f"topk needs k between 1 and d_sae={cfg.d_sae}, got k={cfg.k!r}"
    elif cfg.k is not None:
        return f"k is only meaningful for topk SAEs, got k={cfg.k!r} for {cfg.architecture}"
    if cfg.dtype not in DTYPES:
        return f"unsupported dtype {cfg.dtype!r}; supported: {', '.join(DTYPES)}"
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

    A transcoder reads ``hook_name`` and writes ``hook_name_out``: ``W_dec`` is
    ``[d_sae, d_out]``, ``b_dec`` ``[d_out]``, and a skip transcoder adds
    ``x @ W_skip.T`` with ``W_skip [d_out, d_in]`` (decode then needs ``x``).
    """

    def __init__(self, cfg: SaeConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        problem = _tensors_problem(cfg, tensors)
        if problem is not None:
            raise SaeLoadError(problem)
        self.cfg = cfg
        # Held in cfg.dtype, which is what cfg.json will say when saved (a no-op when equal).
        tensors = {name: t.to(DTYPES[cfg.dtype]) for name, t in tensors.items()}
        self.W_enc: torch.Tensor = tensors["W_enc"]
        self.W_dec: torch.Tensor = tensors["W_dec"]
        self.b_dec: torch.Tensor = tensors["b_dec"]
        self.b_enc: torch.Tensor | None = tensors.get("b_enc")
        self.threshold: torch.Tensor | None = tensors.get("threshold")
        self.b_gate: torch.Tensor | None = tensors.get("b_gate")
        self.r_mag: torch.Tensor | None = tensors.get("r_mag")
        self.b_mag: torch.Tensor | None = tensors.get("b_mag")
        self.W_skip: torch.Tensor | None = tensors.get("W_skip")

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
        arch = self.cfg.encoding
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
            # non-zero. A TopK transcoder keeps their sign, as circuit-tracer's TopK does.
            if not self.cfg.is_transcoder:
                values.relu_()
            out[lo : lo + step].scatter_(-1, indices, values)
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
        out = f @ self.W_dec + self.b_dec  # [..., d_in] ([..., d_out] for a transcoder)
        if self.W_skip is not None:
            if x is None:
                raise ValueError("decode of a skip transcoder needs x, the input that was encoded")
            out = out + self._flat_input(x) @ self.W_skip.T
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
    d_out = cfg.width_out
    shapes = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "W_dec": (cfg.d_sae, d_out),
        "b_dec": (d_out,),
        "W_skip": (d_out, cfg.d_in),
    }
    for name in needed:
        want = shapes.get(name, (cfg.d_sae,))
        got = tuple(tensors[name].shape)
        if got != want:
            widths = f"d_in={cfg.d_in}, d_sae={cfg.d_sae}" + (
                f", d_out={d_out}" if cfg.is_transcoder else ""
            )
            return f"tensor {name!r} has shape {list(got)} but {widths} need {list(want)}"
    return None
