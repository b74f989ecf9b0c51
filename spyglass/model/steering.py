"""Edits of the forward pass that steer it: add to or clamp a neuron, add along a
direction, clamp an SAE latent (``Model.generate`` and the live views apply them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spyglass.model.hooks import mlp_hook


@dataclass(frozen=True)
class NeuronSteer:
    """Add ``coefficient`` to one MLP neuron's activation, or with ``clamp`` set it to
    ``coefficient``, at every position (or the prompt's only)."""

    layer: int
    """Block index whose ``mlp.hook_post`` is edited."""
    neuron: int
    """Neuron index within that layer."""
    coefficient: float
    """Amount added to the neuron's activation, or the value it is clamped to."""
    clamp: bool = False
    prompt_only: bool = False
    """Edit the prompt's positions only, not the generated ones."""

    @property
    def hook(self) -> str:
        return mlp_hook(self.layer)

    def apply(self, act: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_mlp]
        if self.clamp:
            act[..., self.neuron] = self.coefficient
        else:
            act[..., self.neuron] += self.coefficient
        return act


@dataclass(frozen=True)
class DirectionSteer:
    """Add ``coefficient * direction`` at a hook point at every position (an SAE latent's
    decoder row, say), or the prompt's only."""

    hook: str
    direction: torch.Tensor
    """[d] the vector added, scaled by ``coefficient``."""
    coefficient: float
    prompt_only: bool = False

    def apply(self, act: torch.Tensor) -> torch.Tensor:  # [batch, pos, d]
        return act + self.coefficient * self.direction.to(act.device, act.dtype)


@dataclass(frozen=True)
class LatentClamp:
    """Clamp an SAE latent to ``value``: add (value - its current activation) times its
    decoder row, so the SAE's reconstruction error stays in the stream."""

    hook: str
    latent: Callable[[torch.Tensor], torch.Tensor]
    """[..., d] activations -> [...] the latent's current value."""
    direction: torch.Tensor
    """[d] the latent's decoder row."""
    value: float
    prompt_only: bool = False

    def apply(self, act: torch.Tensor) -> torch.Tensor:  # [batch, pos, d]
        delta = self.value - self.latent(act).to(act.dtype)
        return act + delta.unsqueeze(-1) * self.direction.to(act.device, act.dtype)


Steer = NeuronSteer | DirectionSteer | LatentClamp
