"""SAEs released through SAELens's directory: looked up there (sae-lens imported
lazily, only here), fetched from the hub, loaded with the directory's overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spyglass.sae.core import Sae, SaeLoadError
from spyglass.sae.files import CFG_FILENAME, WEIGHTS_FILENAME, load_sae


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
