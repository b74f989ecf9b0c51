"""Random SAE weights for tests, shared by the unit and the sae-lens parity tests.

Importable as ``sae_weights`` because pytest puts ``tests/`` on sys.path.
"""

from __future__ import annotations

import torch


def random_sae_tensors(arch: str, seed: int, d_in: int, d_sae: int) -> dict[str, torch.Tensor]:
    """Weights where many latents fire and many do not, so comparisons mean something."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    tensors = {
        "W_enc": randn(d_in, d_sae) / d_in**0.5,
        "W_dec": randn(d_sae, d_in) / d_sae**0.5,
        "b_dec": 0.3 * randn(d_in),
    }
    if arch == "gated":
        tensors["b_gate"] = 0.2 * randn(d_sae)
        tensors["r_mag"] = 0.3 * randn(d_sae)
        tensors["b_mag"] = 0.05 + 0.1 * randn(d_sae)
    else:
        tensors["b_enc"] = 0.02 + 0.05 * torch.rand(d_sae, generator=gen)
    if arch == "jumprelu":
        # Pre-activations are O(1) for unit-scale inputs: mid-range thresholds cut many.
        tensors["threshold"] = 0.2 + 0.6 * torch.rand(d_sae, generator=gen)
    return tensors
