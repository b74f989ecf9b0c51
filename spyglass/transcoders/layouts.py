"""Transcoder sets on disk: circuit-tracer's layout and SAELens's, read and written (see
``spyglass.transcoders`` for both layouts)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spyglass.sae import Sae, SaeConfig, SaeLoadError, load_sae, save_sae
from spyglass.sae.core import TRANSCODER_ARCHITECTURES

CIRCUIT_TRACER = "circuit-tracer"
SAELENS = "saelens"
LAYOUTS = (CIRCUIT_TRACER, SAELENS)
CONFIG_YAML = "config.yaml"
INPUT_HOOK = "ln2.hook_normalized"
MLP_IN_HOOK = "mlp.hook_in"
OUTPUT_HOOK = "hook_mlp_out"
_THRESHOLD = "activation_function.threshold"
_LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")
_LAYER_DIR = re.compile(r"^layer_(\d+)$")


def input_hook(layer: int) -> str:
    """Where a layer's transcoder reads: the MLP's normalised input."""
    return f"blocks.{layer}.{INPUT_HOOK}"


def output_hook(layer: int) -> str:
    """What a layer's transcoder predicts: the MLP's output."""
    return f"blocks.{layer}.{OUTPUT_HOOK}"


@dataclass
class TranscoderSet:
    """Transcoders by layer, each a :class:`Sae` with a transcoder architecture, in the
    model's conventions as circuit-tracer's unprocessed model sees them (see the module
    docstring; ``for_model`` converts them to a folded and centred one)."""

    transcoders: dict[int, Sae]
    folder: Path | None = None
    layout: str = SAELENS
    model_name: str | None = None
    extra: dict = field(default_factory=dict)
    """Other config.yaml keys, kept when written again."""

    @property
    def layers(self) -> list[int]:
        return sorted(self.transcoders)

    def __getitem__(self, layer: int) -> Sae:
        return self.transcoders[layer]

    @property
    def first(self) -> Sae:
        return self.transcoders[self.layers[0]]


# ---- reading ------------------------------------------------------------------------------


def is_transcoder_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a transcoder set in either layout (or one SAELens transcoder)."""
    folder = Path(path)
    if (folder / CONFIG_YAML).is_file():
        return True
    return _saelens_transcoder(folder) or any(
        _saelens_transcoder(p) for p in _layer_dirs(folder).values()
    )


def _saelens_transcoder(folder: Path) -> bool:
    cfg = folder / "cfg.json"
    if not cfg.is_file():
        return False
    try:
        arch = json.loads(cfg.read_text()).get("architecture")
    except (json.JSONDecodeError, OSError, AttributeError, UnicodeDecodeError):
        return False
    return arch in TRANSCODER_ARCHITECTURES


def _layer_dirs(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        m = _LAYER_DIR.match(p.name)
        if m and p.is_dir():
            found[int(m.group(1))] = p
    return found


def load_transcoders(path: str | Path, device: str = "cpu") -> TranscoderSet:
    """Read a transcoder set in either layout; raises a one-line :class:`SaeLoadError`."""
    folder = Path(path)
    if not folder.is_dir():
        raise SaeLoadError(f"transcoder folder not found: {folder}")
    if (folder / CONFIG_YAML).is_file():
        return _load_circuit_tracer(folder, device)
    if _saelens_transcoder(folder):
        tc = load_sae(folder, device)
        return TranscoderSet({_layer_of(tc, folder): tc}, folder, SAELENS, tc.cfg.model_name)
    dirs = _layer_dirs(folder)
    if not dirs:
        raise SaeLoadError(
            f"{folder} holds no transcoders: expected config.yaml with layer_<i>.safetensors "
            "(circuit-tracer), layer_<i>/ SAELens transcoder folders, or one SAELens transcoder"
        )
    transcoders = {}
    for layer, sub in sorted(dirs.items()):
        tc = load_sae(sub, device)
        if not tc.cfg.is_transcoder:
            raise SaeLoadError(f"{sub}: a {tc.cfg.architecture} SAE, not a transcoder")
        if _layer_of(tc, sub) != layer:
            raise SaeLoadError(f"{sub} reads {tc.cfg.hook_name!r}, not layer {layer}")
        transcoders[layer] = tc
    first = transcoders[min(transcoders)]
    return TranscoderSet(transcoders, folder, SAELENS, first.cfg.model_name)


def layers_on_disk(path: str | Path) -> list[int]:
    """The layers of the circuit-tracer set at ``path`` by its files, without reading any
    weights; [] when there is no such set."""
    folder = Path(path)
    if not (folder / CONFIG_YAML).is_file():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _LAYER_FILE.match(p.name)))


def _layer_of(tc: Sae, where: Path) -> int:
    if tc.layer is None:
        raise SaeLoadError(f"{where}: hook {tc.cfg.hook_name!r} names no block")
    return tc.layer


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SaeLoadError(f"{path}: cannot read ({first})") from None
    if not isinstance(data, dict):
        raise SaeLoadError(f"{path}: expected a mapping of settings")
    return data


def _load_circuit_tracer(folder: Path, device: str) -> TranscoderSet:
    cfg_path = folder / CONFIG_YAML
    cfg = _read_yaml(cfg_path)
    kind = cfg.get("model_kind")
    if kind != "transcoder_set":
        raise SaeLoadError(
            f"{cfg_path}: model_kind {kind!r} is not supported; Spyglass reads per-layer "
            "transcoder sets (model_kind: transcoder_set)"
        )
    hooks = {}
    for key in ("feature_input_hook", "feature_output_hook"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            raise SaeLoadError(f"{cfg_path}: needs {key} (a hook name relative to the block)")
        hooks[key] = cfg[key]
    activation = cfg.get("activation")
    if activation not in (None, "relu", "topk", "jump_relu", "jumprelu"):
        raise SaeLoadError(f"{cfg_path}: activation {activation!r} is not relu, topk or jump_relu")
    k = cfg.get("k")
    if activation == "topk" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise SaeLoadError(f"{cfg_path}: activation topk needs a positive integer k")
    files = {}
    for p in folder.iterdir():
        m = _LAYER_FILE.match(p.name)
        if m:
            files[int(m.group(1))] = p
    if not files:
        raise SaeLoadError(f"{folder}: config.yaml but no layer_<i>.safetensors")
    transcoders = {}
    for layer, path in sorted(files.items()):
        transcoders[layer] = _circuit_tracer_layer(path, layer, hooks, activation, k, device)
    extra = {
        key: v
        for key, v in cfg.items()
        if key not in ("model_kind", "feature_input_hook", "feature_output_hook", "activation", "k",
                       "model_name", "transcoders", "scan")
    }  # fmt: skip
    return TranscoderSet(transcoders, folder, CIRCUIT_TRACER, cfg.get("model_name"), extra)


def _circuit_tracer_layer(path: Path, layer: int, hooks: dict, activation, k, device) -> Sae:
    try:
        t = load_file(str(path), device=device)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise SaeLoadError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if name not in t:
            raise SaeLoadError(f"{path}: missing tensor {name!r}")
    threshold = t.pop(_THRESHOLD, t.pop("threshold", None))
    skip = "W_skip" in t
    extra = sorted(set(t) - {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip"})
    if extra:
        raise SaeLoadError(f"{path}: unexpected tensor {extra[0]!r}")
    if activation == "topk":
        arch = "topk_skip_transcoder" if skip else "topk_transcoder"
    elif threshold is not None or activation in ("jump_relu", "jumprelu"):
        if threshold is None:
            raise SaeLoadError(f"{path}: activation jump_relu but no {_THRESHOLD!r}")
        if bool((threshold < 0).any()):
            # circuit-tracer's JumpReLU passes negative values such a threshold lets
            # through; SAELens's (and Spyglass's) applies ReLU first.
            raise SaeLoadError(f"{path}: negative JumpReLU thresholds are not supported")
        arch = "jumprelu_skip_transcoder" if skip else "jumprelu_transcoder"
    else:
        arch = "skip_transcoder" if skip else "transcoder"
    d_sae, d_in = t["W_enc"].shape
    tensors = {
        "W_enc": t["W_enc"].float().T.contiguous(),
        "W_dec": t["W_dec"].float(),
        "b_enc": t["b_enc"].float(),
        "b_dec": t["b_dec"].float(),
    }
    if skip:
        tensors["W_skip"] = t["W_skip"].float()
    if threshold is not None and "jumprelu" in arch:
        tensors["threshold"] = threshold.float()
    try:
        cfg = SaeConfig(
            architecture=arch,
            d_in=d_in,
            d_sae=d_sae,
            d_out=t["b_dec"].shape[0],
            hook_name=f"blocks.{layer}.{hooks['feature_input_hook']}",
            hook_name_out=f"blocks.{layer}.{hooks['feature_output_hook']}",
            apply_b_dec_to_input=False,
            k=k if activation == "topk" else None,
        )
        return Sae(cfg, tensors)
    except SaeLoadError as e:
        raise SaeLoadError(f"{path}: {e}") from None


# ---- writing ------------------------------------------------------------------------------


def save_transcoders(
    tcs: TranscoderSet,
    folder: str | Path,
    layout: str,
    *,
    dtype: str | None = None,
    extra: dict | None = None,
) -> None:
    """Write ``tcs`` in ``layout`` (``circuit-tracer`` or ``saelens``), weights in ``dtype``
    (default: as held). ``extra`` adds settings to config.yaml or to each cfg.json's
    metadata."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    hooks = {_relative_hooks(tc) for tc in tcs.transcoders.values()}
    if len(hooks) != 1:
        raise SaeLoadError("the set's layers read or write different hooks; one layout needs one")
    if layout == SAELENS:
        for layer, tc in tcs.transcoders.items():
            if dtype is not None:
                tc = Sae(replace(tc.cfg, dtype=dtype), tc.tensors)
            save_sae(tc, out / f"layer_{layer}", extra_cfg=extra)
        return
    ((feature_in, feature_out),) = hooks
    first = tcs.first.cfg
    cfg = {
        "model_kind": "transcoder_set",
        "feature_input_hook": feature_in,
        "feature_output_hook": feature_out,
        **({"model_name": tcs.model_name} if tcs.model_name else {}),
        **tcs.extra,
        **(extra or {}),
    }
    if first.encoding == "topk":
        cfg["activation"] = "topk"
        cfg["k"] = first.k
    elif first.encoding == "jumprelu":
        cfg["activation"] = "jump_relu"
    else:
        cfg["activation"] = "relu"
    torch_dtype = getattr(torch, dtype) if dtype else None
    for layer, tc in tcs.transcoders.items():
        if tc.cfg.encoding != first.encoding or tc.cfg.k != first.k:
            raise SaeLoadError("circuit-tracer needs one activation (and k) for every layer")
        t = {
            "W_enc": tc.W_enc.T,
            "W_dec": tc.W_dec,
            "b_enc": tc.b_enc,
            "b_dec": tc.b_dec,
        }
        if tc.W_skip is not None:
            t["W_skip"] = tc.W_skip
        if tc.threshold is not None:
            t[_THRESHOLD] = tc.threshold
        t = {n: v.detach().to("cpu", torch_dtype).contiguous() for n, v in t.items()}
        save_file(t, str(out / f"layer_{layer}.safetensors"))
    (out / CONFIG_YAML).write_text(yaml.safe_dump(cfg, sort_keys=False))


def _relative_hooks(tc: Sae) -> tuple[str, str]:
    """(input, output) hook names relative to the block: ``ln2.hook_normalized``."""
    names = []
    for hook in (tc.cfg.hook_name, tc.cfg.hook_name_out or ""):
        m = re.match(r"^blocks\.\d+\.(.+)$", hook)
        if m is None:
            raise SaeLoadError(f"transcoder hook {hook!r} names no block")
        names.append(m.group(1))
    return names[0], names[1]
