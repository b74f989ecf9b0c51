"""Attribution patching (AtP; Kramár, Lieberum et al. 2024) over every indexed unit and
every attention head: which units matter for a behaviour, estimated for all of them at
once and measured for the top ones.

``metric`` = logit(target) - logit(other) at the clean prompt's last position (logit of
target alone without ``other``). A unit's activation a is read where the index reads it:
an MLP neuron at ``hook_post``, an SAE latent as the SAE's encoding of its hook (its error
term kept in the stream), a head as its output ``hook_z``, at every position from
``skip_first`` on (the positions the index covers).

- **estimate** (first order): sum over positions of (a_corrupt - a_clean) . dmetric/da at
  the clean run, from one clean forward and backward pass and one corrupt forward, for
  every unit. For a latent, dmetric/da is the gradient at its hook dotted with its decoder
  row.
- **patched** (measured): metric of the clean run with the unit's activation replaced by
  its corrupt-run value at every position, minus the clean metric. For a latent the
  replacement adds (a_corrupt - a_clean) times its decoder row at the hook. The top units
  by |estimate| are measured, all in one batch.

**A unit that does not change gets exactly 0**, estimate and patched effect, by
construction rather than by float sums cancelling: a unit whose clean and corrupt
activations are equal (``==``, as ``torch.equal`` compares, at every position it covers)
has its estimate set to 0.0 (``torch.where``; 0 x a non-finite gradient would be NaN), and
it is never run for its patched effect, which is 0.0. Running it would not give 0 on every
CPU: its row of the verification batch goes through batched kernels whose rounding may
differ row by row from the unpatched row's, and a head is replaced by values from the
unbatched corrupt run. Both runs are one code path (autograd on; the corrupt one skips
the backward pass), so equal inputs give bitwise-equal activations and the mask sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spyglass.model import Model
from spyglass.sources import Source

HEADS = "heads"
"""The pseudo-source of attention heads: unit ``layer * n_heads + head``."""


@dataclass(frozen=True)
class PatchResult:
    metric_clean: float
    metric_corrupt: float
    estimates: dict[str, torch.Tensor]
    """Per source (and ``HEADS``): [units] the first-order estimate of each."""
    patched: dict[tuple[str, int], float]
    """The measured effect of each verified unit (0.0, not run, for an unchanged one)."""


def metric_fn(target: int, other: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The metric of logits [T, V]: at the last position."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        value = logits[-1, target]
        return value - logits[-1, other] if other is not None else value

    return metric


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def attribution_patching(
    model: Model,
    sources: list[Source],
    clean: list[int],
    corrupt: list[int],
    target: int,
    other: int | None,
    *,
    skip_first: int,
    heads: bool = True,
    verify: int = 20,
    also: list[tuple[str, int]] | None = None,
) -> PatchResult:
    """AtP estimates of every unit of ``sources`` (and every head), and the patched effect
    of the ``verify`` units with the largest |estimate| and of the units ``also`` names.
    ``clean`` and ``corrupt`` have the same length."""
    if len(clean) != len(corrupt):
        raise ValueError(f"clean is {len(clean)} tokens and corrupt {len(corrupt)}")
    metric = metric_fn(target, other)
    # A transcoder latent is read at its input hook and written at its output hook: its
    # gradient is taken where it writes.
    hooks = sorted({h for s in sources for h in (s.hook, s.write_hook)}
                   | ({z_hook(i) for i in range(model.n_layers)} if heads else set()))  # fmt: skip
    m_clean, acts, grads = model.with_grads(clean, hooks, metric)
    m_corrupt, corrupt_acts, _ = model.with_grads(corrupt, hooks, metric, backward=False)
    estimates: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}  # per source: [T, units] a_corrupt - a_clean
    same: dict[str, torch.Tensor] = {}  # per source: [units] unchanged at every position
    for s in sources:
        a_clean = _units(s, acts[s.hook], skip_first)
        a_corrupt = _units(s, corrupt_acts[s.hook], skip_first)
        deltas[s.name] = delta = a_corrupt - a_clean
        same[s.name] = (a_corrupt == a_clean).all(0)
        grad = grads[s.write_hook].float()
        if s.sae is not None:
            grad = grad @ s.sae.W_dec.float().T  # [T, d] -> [T, latents]
        estimates[s.name] = torch.where(same[s.name], 0.0, (delta * grad).sum(0)).cpu()
    if heads:
        per_layer, same_heads = [], []
        for layer in range(model.n_layers):
            h = z_hook(layer)
            z_clean, z_corrupt = acts[h][skip_first:], corrupt_acts[h][skip_first:]
            unchanged = (z_corrupt == z_clean).all(2).all(0)  # [heads]
            dz = (z_corrupt - z_clean).float()  # [T - skip_first, heads, d_head]
            estimate = (dz * grads[h][skip_first:].float()).sum((0, 2))
            per_layer.append(torch.where(unchanged, 0.0, estimate))
            same_heads.append(unchanged)
        estimates[HEADS] = torch.cat(per_layer).cpu()
        same[HEADS] = torch.cat(same_heads)
    top = top_units(estimates, verify)
    top += [key for key in also or [] if key not in top]
    # An unchanged unit is not run: its patched effect is 0.0 by construction (see above).
    run = [(name, i) for name, i in top if not bool(same[name][i])]
    patched = dict.fromkeys(top, 0.0)
    if run:
        edits = [_edit(model, sources, name, i, deltas, corrupt_acts, skip_first)
                 for name, i in run]  # fmt: skip
        base, *measured = model.metric_batch(clean, [{}, *edits], metric)
        patched.update({key: value - base for key, value in zip(run, measured, strict=True)})
    return PatchResult(m_clean, m_corrupt, estimates, patched)


def _units(s: Source, act: torch.Tensor, skip_first: int) -> torch.Tensor:
    """A source's unit activations [T, units] from its hook's [T, d], as indexed, with the
    first ``skip_first`` positions 0 (they are no part of any unit)."""
    out = s.units(act.detach().unsqueeze(0), skip_first)[0].float()
    if s.sae is None:
        out = out.clone()
        out[:skip_first] = 0
    return out


def top_units(
    estimates: dict[str, torch.Tensor], n: int, *, nonzero: bool = True
) -> list[tuple[str, int]]:
    """The ``n`` units of largest |estimate| (none at 0, with ``nonzero``), largest
    first, as (source, index)."""
    names = list(estimates)
    if not names or n <= 0:
        return []
    flat = torch.cat([estimates[k].abs() for k in names])
    starts = torch.tensor([0, *[len(estimates[k]) for k in names]]).cumsum(0)
    best = flat.topk(min(n, len(flat)))
    out = []
    for score, at in zip(best.values.tolist(), best.indices.tolist(), strict=True):
        if score > 0 or not nonzero:
            k = int(torch.searchsorted(starts, at, right=True)) - 1
            out.append((names[k], at - int(starts[k])))
    return out


def _edit(model, sources, name, i, deltas, corrupt_acts, skip_first) -> dict:
    """The edit of one verification run: unit ``i`` of ``name`` given its corrupt-run
    activation at every position from ``skip_first`` on."""
    if name == HEADS:
        layer, head = divmod(i, model.n_heads)
        h = z_hook(layer)

        def head_patch(act: torch.Tensor) -> torch.Tensor:  # [T, heads, d_head]
            act[skip_first:, head] = corrupt_acts[h][skip_first:, head].to(act)
            return act

        return {h: head_patch}
    s = next(x for x in sources if x.name == name)
    delta = deltas[name][:, i]  # [T]
    if s.sae is None:

        def neuron_patch(act: torch.Tensor) -> torch.Tensor:  # [T, d_mlp]
            act[:, i] = act[:, i] + delta.to(act)
            return act

        return {s.hook: neuron_patch}
    row = s.sae.W_dec[i].float()

    def latent_patch(act: torch.Tensor) -> torch.Tensor:  # [T, d]
        return act + (delta[:, None] * row[None, :]).to(act)

    return {s.write_hook: latent_patch}
