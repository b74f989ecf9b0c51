"""Edits of the forward pass that steer it: add to or clamp a neuron, add along a
direction, clamp an SAE latent (``Model.generate`` and the live views apply them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    decoder row, so the SAE's reconstruction error stays in the stream.

    A transcoder latent is read at another hook than the one it writes: ``read_hook``
    (its input, earlier in the same forward pass) gives the latent's current value, and
    the edit is made at ``hook`` (its output)."""

    hook: str
    latent: Callable[[torch.Tensor], torch.Tensor]
    """[..., d_in] activations -> [...] the latent's current value."""
    direction: torch.Tensor
    """[d] the latent's decoder row."""
    value: float
    prompt_only: bool = False
    read_hook: str | None = None
    _seen: dict = field(default_factory=dict, compare=False, repr=False)

    def read(self, act: torch.Tensor) -> torch.Tensor:
        """Keep the input the latent is read from (for a two-hook clamp)."""
        self._seen["act"] = act
        return act

    def apply(self, act: torch.Tensor) -> torch.Tensor:  # [batch, pos, d]
        source = act if self.read_hook is None else self._seen.pop("act")
        delta = self.value - self.latent(source).to(act.dtype)
        return act + delta.unsqueeze(-1) * self.direction.to(act.device, act.dtype)


Steer = NeuronSteer | DirectionSteer | LatentClamp


def steer_hooks(steer, apply) -> list[tuple[str, Callable]]:
    """TransformerLens hooks for ``steer``: ``apply(act, s)`` at each edit's hook, and
    before it, for a two-hook clamp, the read of its input."""
    hooks = []
    for s in steer:
        if getattr(s, "read_hook", None) is not None:
            hooks.append((s.read_hook, lambda act, hook, s=s: s.read(act)))
        hooks.append((s.hook, lambda act, hook, s=s: apply(act, s)))
    return hooks
