"""Evaluate an SAE on held-out corpus tokens: sparsity, reconstruction, and what splicing
it into the model costs in next-token loss and in KL divergence, against a baseline.

The baseline is Gurnee's (2024) ε-random: each activation x moved by a random direction
of the length of the SAE's error, x + ‖x - SAE(x)‖ u with u uniform on the unit sphere.
An SAE whose error were as harmless as a random one of its size would have a KL ratio of
1; Gurnee measured 2 to 4.5 on GPT-2 and Pythia SAEs.

Held-out tokens are the corpus's first ``sequences`` sequences, the ones ``train-sae``
keeps out of training. Position 0 (the attention sink) is never encoded or replaced,
as in training. Rows whose norm exceeds ``max_norm_ratio`` x their batch's median are
left out of the reconstruction statistics, as in training, and their count is reported;
the spliced loss replaces every position >= 1, outliers included.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from indexer.corpus import iter_sequences
from spyglass.model import Model
from spyglass.sae import Sae
from spyglass.sources import MAX_NORM_RATIO, typical_rows

DENSE_ABOVE = 0.1
"""A latent firing on more than this fraction of tokens counts as dense."""


@dataclass(frozen=True)
class EvalConfig:
    corpus: str = "embedded"
    sequences: int = 256
    """Held-out sequences: the corpus's first ones (train-sae's --holdout-sequences)."""
    seq_len: int = 128
    batch_size: int = 16
    max_norm_ratio: float = MAX_NORM_RATIO
    seed: int = 0
    """Seeds the ε-random directions."""


class ReconstructionSums:
    """Running sums over held-out rows of how an encoder's latents reconstruct a target:
    the SAE's own input, or a transcoder's MLP output."""

    def __init__(self, d_sae: int):
        self.tokens = 0
        self.outliers = 0
        self.l0 = 0.0
        self.err = 0.0
        self.sq = 0.0
        self.total: torch.Tensor | None = None
        self.fires = torch.zeros(d_sae, dtype=torch.long)

    def add(self, sae: Sae, x: torch.Tensor, y: torch.Tensor, max_norm_ratio: float) -> None:
        """Rows x [rows, d_in] and their target y [rows, d_out]; rows whose target is a
        massive activation are counted and left out."""
        x, y = x.float(), y.float()
        keep = typical_rows(y, max_norm_ratio)
        self.outliers += int((~keep).sum())
        x, y = x[keep], y[keep]
        with torch.inference_mode():
            f = sae.encode(x)  # [rows, d_sae]
            y_hat = sae.decode(f, x).float()
        active = f != 0
        self.tokens += x.shape[0]
        self.l0 += float(active.sum())
        self.fires += active.sum(0).cpu()
        self.err += float((y - y_hat).pow(2).sum())
        self.sq += float(y.pow(2).sum())
        row_sum = y.sum(0).double().cpu()
        self.total = row_sum if self.total is None else self.total + row_sum

    def reconstruction(self) -> dict:
        """FVU (against the rows' own mean), L0, and the dead and dense shares."""
        mean = self.total / self.tokens
        variance = self.sq - self.tokens * float(mean.pow(2).sum())
        density = self.fires.double() / self.tokens
        return {
            "tokens": self.tokens,
            "outliers_left_out": self.outliers,
            "fvu": self.err / variance,
            "l0": self.l0 / self.tokens,
            "dead_fraction": float((density == 0).double().mean()),
            "dense_fraction": float((density > DENSE_ABOVE).double().mean()),
        }


@dataclass
class _Sums:
    loss_clean: float = 0.0
    loss_spliced: float = 0.0
    loss_zero: float = 0.0
    loss_random: float = 0.0
    kl_spliced: float = 0.0
    kl_random: float = 0.0
    loss_tokens: int = 0


def evaluate_sae(sae: Sae, model: Model, cfg: EvalConfig) -> dict:
    hook = sae.cfg.hook_name
    seqs = iter_sequences(
        cfg.corpus, model.tokenize, seq_len=cfg.seq_len, bos_id=model.bos_id, full_only=True
    )
    seqs = itertools.islice(seqs, cfg.sequences)
    sums, rec = _Sums(), ReconstructionSums(sae.cfg.d_sae)
    gen = torch.Generator(model.device).manual_seed(cfg.seed)
    while batch := list(itertools.islice(seqs, cfg.batch_size)):
        tokens = torch.tensor([s.tokens for s in batch])
        acts = model.activations(tokens, [hook])[hook][:, 1:, :]
        x = acts.reshape(-1, acts.shape[-1])  # [rows, d_in]
        rec.add(sae, x, x, cfg.max_norm_ratio)
        _add_losses(sums, sae, model, tokens, hook, gen)
    if rec.tokens == 0:
        raise ValueError(f"the corpus {cfg.corpus!r} gave no held-out sequence")
    r = rec.reconstruction()
    clean = sums.loss_clean / sums.loss_tokens
    spliced = sums.loss_spliced / sums.loss_tokens
    zero = sums.loss_zero / sums.loss_tokens
    kl_spliced = sums.kl_spliced / sums.loss_tokens
    kl_random = sums.kl_random / sums.loss_tokens
    return {
        "tokens": r["tokens"],
        "outliers_left_out": r["outliers_left_out"],
        "l0": r["l0"],
        "fvu": r["fvu"],
        "loss_clean": clean,
        "loss_spliced": spliced,
        "loss_zero_ablated": zero,
        "loss_recovered": (zero - spliced) / (zero - clean),
        "delta_ce": spliced - clean,
        "kl_spliced": kl_spliced,
        "loss_epsilon_random": sums.loss_random / sums.loss_tokens,
        "kl_epsilon_random": kl_random,
        "kl_ratio": kl_spliced / kl_random if kl_random > 1e-9 else None,
        "dead_fraction": r["dead_fraction"],
        "dense_fraction": r["dense_fraction"],
        "held_out_sequences": cfg.sequences,
        "corpus": cfg.corpus,
    }


def epsilon_random(x: torch.Tensor, x_hat: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x [rows, d] moved by ‖x - x_hat‖ along a random unit direction per row (Gurnee's
    ε-random baseline: an error of the SAE's size, in no direction in particular)."""
    u = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    u = u / u.norm(dim=-1, keepdim=True)
    return x + (x - x_hat).norm(dim=-1, keepdim=True) * u


def _add_losses(sums: _Sums, sae: Sae, model: Model, tokens, hook: str, gen) -> None:
    def replaced(make) -> Callable[[torch.Tensor], torch.Tensor]:
        """An edit replacing every position from 1 on by ``make(x)`` of its rows."""

        def edit(act: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_in]
            out = act.clone()
            x = act[:, 1:, :].reshape(-1, act.shape[-1]).float()
            out[:, 1:, :] = make(x).reshape(out[:, 1:, :].shape).to(act.dtype)
            return out

        return edit

    def spliced(x):
        return sae.decode(sae.encode(x), x)

    def random(x):
        return epsilon_random(x, spliced(x), gen)

    # Predictions made from position 0 are the same in every run: count from 1 on.
    clean = model.next_token_log_probs(tokens)[:, 1:-1]
    targets = tokens[:, 2:].to(clean.device)
    sums.loss_clean += float(loss_sum(clean, targets))
    for make, loss_name, kl_name in ((spliced, "loss_spliced", "kl_spliced"),
                                     (random, "loss_random", "kl_random")):  # fmt: skip
        edited = model.next_token_log_probs(tokens, hook, replaced(make))[:, 1:-1]
        setattr(sums, loss_name, getattr(sums, loss_name) + float(loss_sum(edited, targets)))
        setattr(sums, kl_name, getattr(sums, kl_name) + float(kl_sum(clean, edited)))
        del edited
    zeroed = model.next_token_log_probs(tokens, hook, replaced(torch.zeros_like))[:, 1:-1]
    sums.loss_zero += float(loss_sum(zeroed, targets))
    sums.loss_tokens += targets.numel()


def loss_sum(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``targets`` [b, t] under ``log_probs`` [b, t, V]."""
    return -log_probs.gather(-1, targets.unsqueeze(-1)).sum()


def kl_sum(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Summed KL(p || q) over positions, from log-probabilities [b, t, V]."""
    return (p_log.exp() * (p_log - q_log)).sum()
