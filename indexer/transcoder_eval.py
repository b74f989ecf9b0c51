"""Evaluate a transcoder set on held-out corpus tokens, per layer.

For each layer: the FVU of the MLP's output, L0, the dead and dense shares, and the
next-token KL divergence and ΔCE (loss increase) with that layer's MLP output replaced
by its transcoder's prediction; then the same two with every layer replaced at once,
each transcoder reading the input the replaced layers before it produce (the
"replacement model" of circuit tracing).

Held-out tokens are the corpus's first ``sequences`` sequences, the ones
``train-transcoders`` keeps out; the losses use the first ``loss_sequences`` of them
(a layer alone costs a forward from that layer on, for every layer). Position 0 (the
attention sink) is never replaced, and predictions are scored from position 1 on. Rows
whose MLP output is a massive activation (``typical_rows``) are left out of that layer's
reconstruction statistics, as in training, and counted; the spliced losses replace every
position from 1 on.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

import torch

from indexer.corpus import iter_sequences
from indexer.sae_eval import ReconstructionSums, kl_sum, loss_sum
from spyglass.model import Model
from spyglass.sae import Sae
from spyglass.sources import MAX_NORM_RATIO


@dataclass(frozen=True)
class TranscoderEvalConfig:
    corpus: str = "embedded"
    sequences: int = 256
    """Held-out sequences: the corpus's first ones (train-transcoders' hold-out)."""
    loss_sequences: int = 64
    """Of those, the first ones the spliced losses are measured on."""
    seq_len: int = 128
    batch_size: int = 16
    max_norm_ratio: float = MAX_NORM_RATIO


class LayerSums(ReconstructionSums):
    """One layer's running sums over held-out rows: reconstruction and spliced losses."""

    def __init__(self, d_sae: int):
        super().__init__(d_sae)
        self.loss = 0.0
        self.kl = 0.0


def _replace_from_1(act: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    out = act.clone()
    out[:, 1:] = new[:, 1:].to(act.dtype)
    return out


def evaluate_transcoders(
    transcoders: dict[int, Sae], model: Model, cfg: TranscoderEvalConfig
) -> dict:
    """Per-layer metrics and the all-layers splice, as one JSON-able dict."""
    layers = sorted(transcoders)
    sums = {layer: LayerSums(transcoders[layer].cfg.d_sae) for layer in layers}
    all_loss = all_kl = clean_loss = 0.0
    loss_tokens = 0
    seqs = iter_sequences(
        cfg.corpus, model.tokenize, seq_len=cfg.seq_len, bos_id=model.bos_id, full_only=True
    )
    seqs = itertools.islice(seqs, cfg.sequences)
    done = 0
    while batch := list(itertools.islice(seqs, cfg.batch_size)):
        tokens = torch.tensor([s.tokens for s in batch])
        with_loss = done < cfg.loss_sequences
        if with_loss:
            tokens_l = tokens[: cfg.loss_sequences - done]
        done += len(batch)
        acts, clean = _clean_run(model, tokens, transcoders, with_loss)
        for layer in layers:
            tc = transcoders[layer]
            x = acts[tc.cfg.hook_name][:, 1:].reshape(-1, tc.cfg.d_in)
            y = acts[tc.cfg.hook_name_out][:, 1:].reshape(-1, tc.cfg.width_out)
            sums[layer].add(tc, x, y, cfg.max_norm_ratio)
        if not with_loss:
            continue
        n = tokens_l.shape[0]
        clean = clean[:n, 1:-1]
        targets = tokens_l[:, 2:].to(clean.device)
        clean_loss += float(loss_sum(clean, targets))
        loss_tokens += targets.numel()
        for layer in layers:
            edited = _one_layer(model, tokens_l, transcoders[layer], acts, layer, n)[:, 1:-1]
            sums[layer].loss += float(loss_sum(edited, targets))
            sums[layer].kl += float(kl_sum(clean, edited))
        edited = _all_layers(model, tokens_l, transcoders)[:, 1:-1]
        all_loss += float(loss_sum(edited, targets))
        all_kl += float(kl_sum(clean, edited))
    if done == 0:
        raise ValueError(f"the corpus {cfg.corpus!r} gave no held-out sequence")
    clean_mean = clean_loss / max(loss_tokens, 1)
    per_layer = {}
    for layer in layers:
        s = sums[layer]
        per_layer[str(layer)] = s.reconstruction() | {
            "delta_ce": s.loss / loss_tokens - clean_mean,
            "kl": s.kl / loss_tokens,
        }
    fvus = sorted(v["fvu"] for v in per_layer.values())
    return {
        "layers": per_layer,
        "fvu_median": statistics.median(fvus),
        "fvu_max": fvus[-1],
        "loss_clean": clean_mean,
        "all_layers": {"delta_ce": all_loss / loss_tokens - clean_mean, "kl": all_kl / loss_tokens},
        "held_out_sequences": cfg.sequences,
        "loss_sequences": min(cfg.loss_sequences, done),
        "loss_tokens": loss_tokens,
        "corpus": cfg.corpus,
    }


def _clean_run(model: Model, tokens, transcoders: dict[int, Sae], with_logits: bool):
    """One forward keeping each layer's resid_pre and both transcoder hooks."""
    names = set()
    for layer, tc in transcoders.items():
        names |= {tc.cfg.hook_name, tc.cfg.hook_name_out, f"blocks.{layer}.hook_resid_pre"}
    acts: dict[str, torch.Tensor] = {}

    def keep(act, hook):
        acts[hook.name] = act.detach()

    if not with_logits:
        model.activations(tokens, sorted(names), visit=lambda name, a: acts.__setitem__(name, a))
        return acts, None
    clean = model.edited_log_probs(tokens, [(n, keep) for n in sorted(names)])
    return acts, clean


def _prediction(tc: Sae, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1]).float()
    return tc.decode(tc.encode(flat), flat).reshape(*x.shape[:-1], -1)


def _one_layer(model: Model, tokens, tc: Sae, acts, layer: int, n: int) -> torch.Tensor:
    """Log-probs with only ``layer``'s MLP output replaced, run from that layer on."""
    predicted = _prediction(tc, acts[tc.cfg.hook_name][:n])

    def splice(act, hook):
        return _replace_from_1(act, predicted)

    resid = acts[f"blocks.{layer}.hook_resid_pre"][:n]
    return model.edited_log_probs(tokens, [(tc.cfg.hook_name_out, splice)], start=(layer, resid))


def _all_layers(model: Model, tokens, transcoders: dict[int, Sae]) -> torch.Tensor:
    """Log-probs with every layer's MLP output replaced, each transcoder reading the
    input of this (replaced) run."""
    inputs: dict[int, torch.Tensor] = {}
    edits = []
    for layer, tc in transcoders.items():

        def read(act, hook, layer=layer):
            inputs[layer] = act

        def splice(act, hook, layer=layer, tc=tc):
            return _replace_from_1(act, _prediction(tc, inputs.pop(layer)))

        edits += [(tc.cfg.hook_name, read), (tc.cfg.hook_name_out, splice)]
    return model.edited_log_probs(tokens, edits)
