"""Hook point names."""

from __future__ import annotations


def mlp_hook(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def hook_layer(name: str) -> int:
    """The block a hook point belongs to: ``blocks.12.hook_resid_post`` -> 12."""
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise ValueError(f"not a per-block hook point: {name!r}")
    return int(parts[1])
