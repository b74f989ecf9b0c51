"""Sources: the sets of units the indexer reads at one hook point each.

A source is one layer's MLP neurons (``5-mlp``, read at ``blocks.5.mlp.hook_post``), one
SAE's latents (``12-res-topk-4608``, the SAE's encoding of its hook), or one layer's
transcoder latents (``7-tc-topk-1024``, encoded from ``blocks.7.ln2.hook_normalized``,
written to ``blocks.7.hook_mlp_out``). All give [batch, pos, units] activations to the
same streaming statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from spyglass.model import DirectionSteer, LatentClamp, Model, NeuronSteer, Steer, mlp_hook
from spyglass.sae import Sae, check_sae_for_model, load_sae

LATENT_KINDS = ("sae", "transcoder")
"""Source kinds whose units are latents (read through an SAE or a transcoder)."""
BLOCK_BYTES = 256 << 20
"""Largest [sequences, pos, latents] float32 block an SAE's latents are encoded into at a
time while indexing (``Source.unit_blocks``)."""
MAX_NORM_RATIO = 10.0
"""Rows whose norm exceeds this multiple of their batch's median are massive-activation
tokens: SAEs are neither trained nor evaluated on them, and their latents read 0."""


def typical_rows(
    rows: torch.Tensor, ratio: float = MAX_NORM_RATIO, among: torch.Tensor | None = None
) -> torch.Tensor:
    """[rows] mask of rows [rows, d] whose norm is at most ``ratio`` x the batch's median
    (the median of the rows ``among`` [rows] marks, when given: a batch's real tokens,
    not its padding).

    SmolLM2 has rare massive-activation tokens besides position 0 (norm ~25,000 against a
    median of ~140 at layer 12); the one rule for them, shared by training, evaluation
    and indexing.
    """
    norms = rows.norm(dim=-1)
    reference = norms if among is None else norms[among]
    return norms <= ratio * reference.median()


_HOOK_SHORT = {
    "hook_resid_post": "res",
    "hook_resid_pre": "res-pre",
    "hook_resid_mid": "res-mid",
    "hook_mlp_out": "mlp-out",
    "hook_attn_out": "attn-out",
    "hook_post": "mlp-post",
    "hook_z": "attn-z",
}


@dataclass(frozen=True)
class Source:
    """One set of units read at one hook point."""

    name: str
    """URL name: ``5-mlp``, ``12-res-topk-4608`` or ``7-tc-topk-1024``."""
    kind: str
    """``mlp``, ``sae`` or ``transcoder``."""
    layer: int
    hook: str
    n_units: int
    sae: Sae | None = None
    sae_spec: str | None = None
    """Where the SAE was loaded from (a folder; for a transcoder ``folder#layer``), for
    live requests."""

    @property
    def write_hook(self) -> str:
        """Where the unit writes: a transcoder's output hook, else the hook it is read at.
        Steering, patching and gradients act here."""
        if self.sae is not None and self.sae.cfg.is_transcoder:
            return self.sae.cfg.hook_name_out
        return self.hook

    def units(
        self, act: torch.Tensor, skip_first: int, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit activations [batch, pos, units] from the hook's activation [batch, pos, d].
        ``lengths`` [batch]: each sequence's real tokens (None: all pos); an SAE's latents
        read 0 on padding, which takes no part in the norm rule either."""
        return next(iter(self.unit_blocks(act, skip_first, lengths, max_bytes=None)))[1]

    def unit_blocks(
        self,
        act: torch.Tensor,
        skip_first: int,
        lengths: torch.Tensor | None = None,
        *,
        max_bytes: int | None = BLOCK_BYTES,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``units`` a few sequences at a time: (first sequence, [b, pos, units]) blocks of
        at most ``max_bytes`` (one sequence at least; None: the whole batch at once), so a
        wide SAE's [batch, pos, units] float32 block never exists whole. The norm rule is
        judged on the whole batch, so the blocks are exactly the batch's ``units``."""
        if self.sae is None:
            yield 0, act
            return
        n_seq, seq_len = act.shape[:2]
        rows = act.reshape(-1, act.shape[-1])
        position = torch.arange(rows.shape[0], device=rows.device) % seq_len
        real = None
        if lengths is not None:
            ends = lengths.to(rows.device).repeat_interleave(seq_len)
            real = position < ends
        ok = typical_rows(rows, among=real)
        ok &= position >= skip_first
        if real is not None:
            ok &= real
        per_seq = seq_len * self.n_units * 4
        step = n_seq if max_bytes is None else max(1, min(n_seq, max_bytes // per_seq))
        for lo in range(0, n_seq, step):
            a, b = lo * seq_len, min(n_seq, lo + step) * seq_len
            out = self.sae.encode(rows[a:b]).float()  # every row, then the others zeroed
            out.index_fill_(0, (~ok[a:b]).nonzero().squeeze(1), 0)  # a mask took 3 ms
            yield lo, out.reshape(-1, seq_len, self.n_units)

    def activations_on(
        self, model: Model, ids: list[int], skip_first: int, index: int
    ) -> list[float]:
        """Unit ``index``'s activation on each token of one sequence, as the indexer sees it."""
        act = model.activations(torch.tensor([ids]), [self.hook])[self.hook]
        return self.units(act, skip_first)[0, :, index].tolist()

    def steer(
        self, index: int, coefficient: float, *, clamp: bool = False, prompt_only: bool = False
    ) -> Steer:
        """Push unit ``index``: add ``coefficient`` to a neuron's activation, or add
        ``coefficient`` times a latent's decoder row at the SAE's hook. With ``clamp`` the
        unit's activation is set to ``coefficient`` instead (for a latent: its decoder row
        is added times the difference, keeping the SAE's error term)."""
        if self.sae is None:
            return NeuronSteer(self.layer, index, coefficient, clamp, prompt_only)
        direction = self.sae.W_dec[index]
        if not clamp:
            return DirectionSteer(self.write_hook, direction, coefficient, prompt_only)
        sae = self.sae

        def latent(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1]).float()
            return sae.encode(flat)[:, index].reshape(x.shape[:-1])

        # A transcoder latent is read at its input hook and clamped at its output.
        read = self.hook if self.write_hook != self.hook else None
        return LatentClamp(self.write_hook, latent, direction, coefficient, prompt_only, read)

    def directions(self, model: Model) -> torch.Tensor:
        """What each unit writes to the residual stream [units, d_model]."""
        if self.sae is None:
            return model.neuron_directions(self.layer)
        return self.sae.W_dec

    def info(self) -> dict | None:
        """For an SAE: its config and the metrics.json beside it (training and eval)."""
        if self.sae is None:
            return None
        cfg = self.sae.cfg
        info = {
            "sae": self.sae_spec,
            "architecture": cfg.architecture,
            "d_sae": cfg.d_sae,
            "k": cfg.k,
            "hook": cfg.hook_name,
        }
        folder = self.sae_spec or ""
        if cfg.is_transcoder:
            info["hook_out"] = cfg.hook_name_out
            folder, _ = split_transcoder_spec(folder) or (folder, None)
        metrics = Path(folder) / "metrics.json"
        if metrics.is_file():
            record = json.loads(metrics.read_text())
            if cfg.is_transcoder:
                record = _layer_metrics(record, self.layer)
            info["metrics"] = record
        return info


def units_on_prompt(
    sources: list[Source], model: Model, ids: list[int], skip_first: int
) -> dict[str, torch.Tensor]:
    """Each source's unit activations [T, U] on one prompt, from one forward pass."""
    acts = model.activations(torch.tensor([ids]), sorted({s.hook for s in sources}))
    return {s.name: s.units(acts[s.hook], skip_first)[0].float() for s in sources}


def mlp_sources(model: Model, layers: list[int]) -> list[Source]:
    return [Source(f"{i}-mlp", "mlp", i, mlp_hook(i), model.d_mlp) for i in layers]


def sae_source(spec: str, model: Model) -> Source:
    """Load the SAE at ``spec`` (a SAELens-format folder) and check it fits ``model``."""
    sae = load_sae(spec).to(model.device)
    check_sae_for_model(sae, model.d_model, model.n_layers)
    hook = sae.cfg.hook_name
    if not model.has_hook(hook):
        raise ValueError(f"the SAE at {spec} reads {hook!r}, which the model does not have")
    if model.hook_width(hook) != sae.cfg.d_in:
        raise ValueError(
            f"the SAE at {spec} has d_in {sae.cfg.d_in} but {hook!r} is "
            f"{model.hook_width(hook)} wide"
        )
    return Source(sae_source_name(sae), "sae", sae.layer or 0, hook, sae.cfg.d_sae, sae, spec)


def sae_source_name(sae: Sae) -> str:
    """``12-res-topk-4608``: layer, hook kind, architecture, width."""
    last = sae.cfg.hook_name.rsplit(".", 1)[-1]
    kind = _HOOK_SHORT.get(last, last.removeprefix("hook_").replace("_", "-"))
    return f"{sae.layer}-{kind}-{sae.cfg.architecture}-{sae.cfg.d_sae}"


# ---- transcoders ----------------------------------------------------------------------------


def transcoder_spec(folder: str | Path, layer: int) -> str:
    """How a transcoder source records where it was loaded from: ``folder#layer``."""
    return f"{folder}#{layer}"


def split_transcoder_spec(spec: str) -> tuple[str, int] | None:
    """``folder#7`` -> (``folder``, 7); None for a plain SAE folder."""
    folder, sep, layer = spec.rpartition("#")
    return (folder, int(layer)) if sep and layer.isdigit() else None


def transcoder_sources(
    path: str, model: Model, layers: tuple[int, ...] | None = None
) -> list[Source]:
    """One source per layer of the transcoder set at ``path`` (either layout), converted
    to ``model``'s processed weights and checked against it."""
    from spyglass.transcoders import load_transcoders_for_model

    tcs = load_transcoders_for_model(path, model, layers)
    return [transcoder_source(tc, path, layer) for layer, tc in tcs.transcoders.items()]


def transcoder_source(tc: Sae, folder: str, layer: int) -> Source:
    name = f"{layer}-tc-{tc.cfg.encoding.replace('standard', 'relu')}"
    name += f"{'-skip' if tc.W_skip is not None else ''}-{tc.cfg.d_sae}"
    spec = transcoder_spec(folder, layer)
    return Source(name, "transcoder", layer, tc.cfg.hook_name, tc.cfg.d_sae, tc, spec)


def load_unit_model(spec: str, model: Model) -> Sae:
    """The SAE or transcoder an indexed source records (``sources.sae``), for ``model``."""
    found = split_transcoder_spec(spec)
    if found is None:
        return sae_source(spec, model).sae
    folder, layer = found
    from spyglass.transcoders import load_transcoders_for_model

    return load_transcoders_for_model(folder, model, (layer,))[layer]


def _layer_metrics(record: dict, layer: int) -> dict:
    """A transcoder set's metrics.json, narrowed to one layer (training and eval)."""
    out = {k: v for k, v in record.items() if k not in ("layers", "eval")}
    if isinstance(record.get("layers"), dict):
        out["training"] = record["layers"].get(str(layer))
    if isinstance(record.get("eval"), dict):
        ev = record["eval"]
        out["eval"] = (ev.get("layers") or {}).get(str(layer))
        out["eval_all_layers"] = ev.get("all_layers")
    return out
