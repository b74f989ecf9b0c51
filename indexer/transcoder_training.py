"""Train one transcoder per MLP layer, every layer from the same streamed forward passes.

A transcoder reads the MLP's normalised input (``blocks.{l}.ln2.hook_normalized``) and
predicts the MLP's output (``blocks.{l}.hook_mlp_out``) through sparse latents. Each
forward pass of the model feeds every layer's transcoder: the activations of a few
passes are shuffled together, split into equal optimiser batches, and each batch updates
all layers at once (their weights are stacked, one ``[layers, ...]`` tensor each).

The recipe is ``train-sae``'s (Gao et al. 2024 for TopK: unit-norm decoder rows, ``b_dec``
at the output's mean, AuxK for dead latents), with what a transcoder adds:

- inputs and outputs are scaled per layer so that E[|x|^2] = d_in and E[|y|^2] = d_out;
  the scales are folded into the written weights, which read and write raw activations;
- ``skip``: a linear ``W_skip`` from input to output beside the latents (Paulo et al.
  2025), started at the least-squares fit on the first buffer;
- the learning rate falls linearly to zero over the last ``lr_decay`` share of ``tokens``;
- ``jumprelu``: a per-latent threshold trained with straight-through pseudo-derivatives
  and an L0 penalty (Rajamanoharan et al. 2024) instead of TopK.

Position 0 (the attention sink) is never used, and a token whose MLP output is a massive
activation at any trained layer (``spyglass.sources.typical_rows``) is left out of every
layer. Checkpoints are written atomically at buffer boundaries; nothing carries over from
one buffer to the next except the parameters, so a resumed run continues exactly.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from indexer.corpus import iter_sequences
from indexer.transcoder_stack import TranscoderStack, fvu_per_layer, least_squares
from spyglass.model import Model, load_model
from spyglass.sources import MAX_NORM_RATIO, typical_rows
from spyglass.transcoders import input_hook, output_hook

ACTIVATIONS = ("topk", "jumprelu")


@dataclass(frozen=True)
class TranscoderTrainConfig:
    """What to train and how; saved beside the set so a run can be reproduced."""

    model: str = "embedded"
    corpus: str = "embedded"
    layers: tuple[int, ...] | None = None
    """MLP layers to train (None: every layer)."""
    out: str = "saes/embedded-transcoders"
    d_sae: int = 1024
    activation: str = "topk"
    k: int = 32
    """Latents kept per token (topk)."""
    l0_coef: float = 1e-3
    """Weight of the L0 penalty, per latent firing (jumprelu)."""
    skip: bool = False
    """Add a linear skip connection W_skip [d_out, d_in]."""
    tokens: int = 2_000_000
    """Training tokens (position 0 of each sequence is never used)."""
    holdout_sequences: int = 256
    """The corpus's first sequences, kept out of training for evaluation."""
    seq_len: int = 128
    model_batch: int = 16
    """Sequences per forward pass."""
    buffer_batches: int = 4
    """Forward passes shuffled together."""
    batch_tokens: int = 4096
    """About this many activations per optimiser step (each buffer is split evenly)."""
    lr: float = 1e-3
    lr_decay: float = 0.2
    """Final share of ``tokens`` over which the learning rate falls linearly to zero."""
    aux_k: int = 256
    aux_coef: float = 1 / 32
    dead_after_tokens: int = 500_000
    """A latent that has not fired for this many tokens counts as dead for AuxK."""
    checkpoint_every: int = 100
    """Steps between checkpoints (taken at the next buffer boundary)."""
    max_norm_ratio: float = MAX_NORM_RATIO
    seed: int = 0
    device: str | None = None


_NOT_SETTINGS = ("tokens", "checkpoint_every", "device")
"""Config fields a resumed run may change."""


@dataclass
class TranscoderTrainState:
    """Everything a resumed run needs besides the parameters and optimiser."""

    step: int = 0
    sequences: int = 0
    """Training sequences consumed (after the hold-out)."""
    tokens: int = 0
    seconds: float = 0.0
    outliers: int = 0
    """Tokens left out as massive activations."""
    last_fvu: list[float] | None = None
    last_l0: list[float] | None = None


class TranscoderTrainer:
    """One training run: the stacked transcoders, their optimiser and the stream."""

    def __init__(self, cfg: TranscoderTrainConfig, model: Model | None = None):
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        self.cfg = cfg
        self.model = model or load_model(cfg.model, cfg.device)
        n_layers = self.model.n_layers
        self.layers = list(cfg.layers) if cfg.layers is not None else list(range(n_layers))
        bad = [i for i in self.layers if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} is not in the model (layers 0-{n_layers - 1})")
        self.hooks_in = [input_hook(i) for i in self.layers]
        self.hooks_out = [output_hook(i) for i in self.layers]
        for hook in (self.hooks_in[0], self.hooks_out[0]):
            if not self.model.has_hook(hook):
                raise ValueError(f"model {cfg.model!r} has no hook point {hook!r}")
        self.d_in = self.model.hook_width(self.hooks_in[0])
        self.d_out = self.model.hook_width(self.hooks_out[0])
        device = self.model.device
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.net = TranscoderStack(len(self.layers), self.d_in, self.d_out, cfg, self.gen)
        self.net.to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        n = len(self.layers)
        self.last_fired = torch.zeros(n, cfg.d_sae, dtype=torch.long, device=device)
        self.scale_in = torch.zeros(n, device=device)
        self.scale_out = torch.zeros(n, device=device)
        self.state = TranscoderTrainState()
        self.ckpt = Path(cfg.out) / "checkpoint" / "state.pt"
        if self.ckpt.exists():
            self._resume()
        seqs = iter_sequences(
            cfg.corpus,
            self.model.tokenize,
            seq_len=cfg.seq_len,
            bos_id=self.model.bos_id,
            full_only=True,
        )
        self._seqs = itertools.islice(seqs, cfg.holdout_sequences + self.state.sequences, None)

    @property
    def n_steps(self) -> int:
        return self.cfg.tokens // self.cfg.batch_tokens

    def run(self, progress: bool = True) -> dict:
        """Train until ``cfg.tokens``; returns the metrics (and the folded weights)."""
        cfg, state = self.cfg, self.state
        started = time.perf_counter() - state.seconds
        since_ckpt = 0
        bar = tqdm(
            total=self.n_steps,
            initial=state.step,
            unit="step",
            disable=not progress,
            desc=f"training {len(self.layers)} transcoders x{cfg.d_sae}",
        )
        with bar:
            while state.tokens < cfg.tokens:
                buffer = self._buffer()
                if buffer is None:
                    break
                for _ in self.steps(*buffer):
                    since_ckpt += 1
                    bar.update(1)
                    bar.set_postfix(
                        fvu=f"{_median(state.last_fvu):.3f}", dead=f"{self.dead().max():.1%}"
                    )
                state.seconds = time.perf_counter() - started
                if since_ckpt >= cfg.checkpoint_every or state.tokens >= cfg.tokens:
                    self._checkpoint()
                    since_ckpt = 0
        if state.tokens < cfg.tokens:
            raise ValueError(
                f"the corpus ran out after {state.tokens} training tokens; "
                "lower --tokens or use a larger corpus"
            )
        state.seconds = time.perf_counter() - started
        return {
            "steps": state.step,
            "tokens": state.tokens,
            "seconds": round(state.seconds, 1),
            "outliers_left_out": state.outliers,
            "layers": {
                str(layer): {
                    "train_fvu_last_batch": state.last_fvu[i],
                    "train_l0_last_batch": state.last_l0[i],
                    "dead_fraction": float(self.dead()[i]),
                    "input_scale": float(self.scale_in[i]),
                    "output_scale": float(self.scale_out[i]),
                }
                for i, layer in enumerate(self.layers)
            },
            "config": asdict(cfg),
        }

    def lr_at(self, tokens: int) -> float:
        """The learning rate after ``tokens`` training tokens: ``lr``, then a linear fall
        to zero over the last ``lr_decay`` share of ``cfg.tokens``."""
        decay = self.cfg.lr_decay * self.cfg.tokens
        if decay <= 0:
            return self.cfg.lr
        return self.cfg.lr * min(1.0, max(0.0, (self.cfg.tokens - tokens) / decay))

    def steps(self, xs: torch.Tensor, ys: torch.Tensor) -> Iterator[None]:
        """Optimiser steps on one buffer of raw rows, x [n, rows, d_in] and y [n, rows,
        d_out], split evenly into about ``batch_tokens`` rows each; yields after each. The
        first buffer of a fresh run sets the scales, ``b_dec`` and ``W_skip``."""
        xs, ys = xs.float(), ys.float()
        if self.scale_in[0] == 0:
            self._start(xs, ys)
        n_batches = max(1, round(xs.shape[1] / self.cfg.batch_tokens))
        a, c = self.scale_in.view(-1, 1, 1), self.scale_out.view(-1, 1, 1)
        for x, y in zip(xs.tensor_split(n_batches, 1), ys.tensor_split(n_batches, 1), strict=True):
            self._step(x * a, y * c)
            yield

    def dead(self) -> torch.Tensor:
        """[n] share of each layer's latents that have not fired for dead_after_tokens."""
        if self.state.tokens < self.cfg.dead_after_tokens:
            return torch.zeros(len(self.layers))
        gap = self.state.tokens - self.last_fired
        return (gap >= self.cfg.dead_after_tokens).float().mean(1).cpu()

    # ---- one step ----------------------------------------------------------------------

    def _start(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        """Scales, b_dec and (with skip) W_skip from the first buffer."""
        self.scale_in.copy_((self.d_in / xs.pow(2).sum(-1).mean(1)).sqrt())
        self.scale_out.copy_((self.d_out / ys.pow(2).sum(-1).mean(1)).sqrt())
        x = xs * self.scale_in.view(-1, 1, 1)
        y = ys * self.scale_out.view(-1, 1, 1)
        with torch.no_grad():
            self.net.b_dec.copy_(y.mean(1))
            if self.net.W_skip is not None:
                self.net.W_skip.copy_(least_squares(x, y - y.mean(1, keepdim=True)))

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step of every layer on scaled x [n, b, d_in], y [n, b, d_out]."""
        cfg, net, state = self.cfg, self.net, self.state
        pre = net.pre_acts(x)
        base = net.linear(x)
        if cfg.activation == "topk":
            # circuit-tracer's TopK: the k largest pre-activations keep their sign.
            top = pre.topk(cfg.k, dim=-1)
            values = top.values
            y_hat = net.decode_sparse(top.indices, values) + base
            fired_mask = torch.zeros_like(pre, dtype=torch.bool).scatter_(
                -1, top.indices, values != 0
            )
            l0 = (values != 0).float().sum(-1).mean(-1)
            fvu = fvu_per_layer(y, y_hat)
            loss = fvu.sum() + self._aux(pre, y, y_hat)
        else:
            f, fires = net.jump(pre)
            y_hat = torch.bmm(f, net.W_dec) + base
            fired_mask = f > 0
            l0 = fires.sum(-1).mean(-1)
            fvu = fvu_per_layer(y, y_hat)
            loss = fvu.sum() + cfg.l0_coef * l0.sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(state.tokens)
        self.opt.step()
        net.normalise_decoder()
        state.step += 1
        state.tokens += x.shape[1]
        fired = fired_mask.any(1)  # [n, d_sae]
        self.last_fired[fired] = state.tokens
        state.last_fvu = fvu.detach().cpu().tolist()
        state.last_l0 = l0.detach().cpu().tolist()

    def _aux(self, pre: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """AuxK: each layer's dead latents' top activations reconstruct its error."""
        cfg = self.cfg
        dead = (self.state.tokens - self.last_fired) >= cfg.dead_after_tokens  # [n, d_sae]
        if not dead.any():
            return pre.new_zeros(())
        k_aux = min(cfg.aux_k, int(dead.sum(1).max()))
        masked = pre.masked_fill(~dead.unsqueeze(1), -torch.inf)
        top = masked.topk(k_aux, dim=-1)
        err_hat = self.net.decode_sparse(top.indices, top.values.relu())
        err = (y - y_hat).detach()
        has_dead = dead.any(1)
        return cfg.aux_coef * fvu_per_layer(err, err_hat)[has_dead].sum()

    # ---- the stream ----------------------------------------------------------------------

    def _buffer(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next ``buffer_batches`` forward passes, shuffled: x [n, rows, d_in] and
        y [n, rows, d_out], or None when the corpus has run out."""
        cfg = self.cfg
        xs, ys = [], []
        for _ in range(cfg.buffer_batches):
            batch = list(itertools.islice(self._seqs, cfg.model_batch))
            if not batch:
                break
            self.state.sequences += len(batch)
            tokens = torch.tensor([s.tokens for s in batch])
            acts = self.model.activations(tokens, self.hooks_in + self.hooks_out)
            x = torch.stack([acts[h][:, 1:].reshape(-1, self.d_in) for h in self.hooks_in])
            y = torch.stack([acts[h][:, 1:].reshape(-1, self.d_out) for h in self.hooks_out])
            keep = torch.stack([typical_rows(rows, cfg.max_norm_ratio) for rows in y]).all(0)
            self.state.outliers += int((~keep).sum())
            xs.append(x[:, keep].float())
            ys.append(y[:, keep].float())
        if not xs:
            return None
        x, y = torch.cat(xs, 1), torch.cat(ys, 1)
        order = torch.randperm(x.shape[1], generator=self.gen).to(x.device)
        return x[:, order], y[:, order]

    # ---- checkpoints ---------------------------------------------------------------------

    def _checkpoint(self) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(
            {
                "config": asdict(self.cfg),
                "net": self.net.state_dict(),
                "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(),
                "state": asdict(self.state),
                "last_fired": self.last_fired,
                "scale_in": self.scale_in,
                "scale_out": self.scale_out,
            },
            tmp,
        )
        os.replace(tmp, self.ckpt)

    def _resume(self) -> None:
        saved = torch.load(self.ckpt, map_location=self.model.device, weights_only=False)
        mine = asdict(self.cfg)
        mismatched = {
            k
            for k, v in mine.items()
            if k not in _NOT_SETTINGS and _same(saved["config"].get(k)) != _same(v)
        }
        if mismatched:
            raise ValueError(
                f"{self.ckpt.parent} holds a run with different settings "
                f"({', '.join(sorted(mismatched))}); use another --out or the same settings"
            )
        self.net.load_state_dict(saved["net"])
        self.opt.load_state_dict(saved["opt"])
        self.gen.set_state(saved["gen"])
        self.state = TranscoderTrainState(**saved["state"])
        self.last_fired.copy_(saved["last_fired"])
        self.scale_in.copy_(saved["scale_in"])
        self.scale_out.copy_(saved["scale_out"])

    @torch.no_grad()
    def folded(self) -> list[dict[str, torch.Tensor]]:
        """Per layer, weights that read raw inputs and write raw outputs.

        With a = scale_in and c = scale_out the trained map is
        c y = topk(a x W_enc + b_enc) W_dec + b_dec + a x W_skip^T, so the raw one has
        W_enc * a, W_dec / c, b_dec / c and W_skip * a / c.
        """
        net, out = self.net, []
        for i in range(len(self.layers)):
            a, c = float(self.scale_in[i]), float(self.scale_out[i])
            layer = {
                "W_enc": net.W_enc[i] * a,
                "b_enc": net.b_enc[i].clone(),
                "W_dec": net.W_dec[i] / c,
                "b_dec": net.b_dec[i] / c,
            }
            if net.W_skip is not None:
                layer["W_skip"] = net.W_skip[i] * (a / c)
            if net.log_threshold is not None:
                layer["threshold"] = net.log_threshold[i].exp()
            out.append({name: t.detach().cpu() for name, t in layer.items()})
        return out


def _same(value):
    """Config values compare equal across a JSON-ish round trip (tuples saved as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _median(values: list[float] | None) -> float:
    if not values:
        return float("nan")
    return sorted(values)[len(values) // 2]


def trained_set(cfg: TranscoderTrainConfig, layers: list[int], folded: list[dict]):
    """The trained transcoders as a :class:`spyglass.transcoders.TranscoderSet`."""
    from spyglass.sae import Sae, SaeConfig
    from spyglass.transcoders import TranscoderSet

    arch = {"topk": "topk", "jumprelu": "jumprelu"}[cfg.activation]
    arch = f"{arch}_skip_transcoder" if cfg.skip else f"{arch}_transcoder"
    transcoders = {}
    for layer, tensors in zip(layers, folded, strict=True):
        d_sae, d_out = tensors["W_dec"].shape
        scfg = SaeConfig(
            architecture=arch,
            d_in=tensors["W_enc"].shape[0],
            d_sae=d_sae,
            d_out=d_out,
            hook_name=input_hook(layer),
            hook_name_out=output_hook(layer),
            model_name=cfg.model,
            apply_b_dec_to_input=False,
            k=cfg.k if cfg.activation == "topk" else None,
        )
        transcoders[layer] = Sae(scfg, tensors)
    return TranscoderSet(transcoders, Path(cfg.out), model_name=cfg.model)


def write_trained_transcoders(
    cfg: TranscoderTrainConfig,
    trainer: TranscoderTrainer,
    metrics: dict,
    command: str,
    layout: str,
    dtype: str,
):
    """Save the set in ``layout`` with ``metrics.json`` saying how it was made."""
    import json

    from spyglass.transcoders import save_transcoders

    tcs = trained_set(cfg, trainer.layers, trainer.folded())
    save_transcoders(
        tcs, cfg.out, layout, dtype=dtype, extra={"trained_by": "spyglass train-transcoders"}
    )
    record = metrics | {"command": command, "layout": layout, "dtype": dtype}
    (Path(cfg.out) / "metrics.json").write_text(json.dumps(record, indent=1) + "\n")
    return tcs
