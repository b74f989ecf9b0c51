"""Train a TopK sparse autoencoder on one hook of a model, streaming activations.

Activations come from the model batch by batch through a small shuffle buffer; the
run never holds more than that buffer. Checkpoints are written atomically every
``checkpoint_every`` steps, and a run started again with the same output folder
resumes from the last one.

The recipe follows OpenAI's TopK SAEs (Gao et al. 2024): decoder rows kept at unit
norm, encoder initialised as the decoder's transpose, ``b_dec`` at the data mean,
an AuxK loss that gives dead latents a gradient. Inputs are scaled so that
E[|x|^2] = d_in; the scale is folded into the saved weights, so the saved SAE reads
raw activations (SAELens ``normalize_activations = "none"``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from indexer.corpus import iter_sequences
from spyglass.model import Model, load_model
from spyglass.sae import Sae, SaeConfig, save_sae
from spyglass.sources import MAX_NORM_RATIO, typical_rows


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; saved beside the SAE so a run can be reproduced."""

    model: str = "embedded"
    corpus: str = "embedded"
    hook: str = "blocks.12.hook_resid_post"
    out: str = "saes/embedded-12-res-topk-4608"
    d_sae: int = 4608
    k: int = 32
    tokens: int = 2_000_000
    """Training tokens (position 0 of each sequence is never used)."""
    holdout_sequences: int = 256
    """The corpus's first sequences, kept out of training for evaluation."""
    seq_len: int = 128
    model_batch: int = 16
    """Sequences per forward pass."""
    buffer_batches: int = 8
    """Forward passes mixed in the shuffle buffer."""
    batch_tokens: int = 4096
    """Activations per optimiser step."""
    lr: float = 4e-4
    aux_k: int = 256
    aux_coef: float = 1 / 32
    dead_after_tokens: int = 500_000
    """A latent that has not fired for this many tokens counts as dead for AuxK."""
    checkpoint_every: int = 100
    max_norm_ratio: float = MAX_NORM_RATIO
    """Rows over this multiple of their forward pass's median norm are left out (see
    spyglass.sources.typical_rows): at layer 12 two such tokens in 8,128 carried 90% of the
    summed squared norm, enough to set the input scale and the loss on their own."""
    seed: int = 0
    device: str | None = None


class TopKSae(torch.nn.Module):
    """The trainable TopK SAE, on scaled inputs."""

    def __init__(self, d_in: int, d_sae: int, k: int, gen: torch.Generator):
        super().__init__()
        w_dec = torch.randn(d_sae, d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w_dec)  # [d_sae, d_in]
        self.W_enc = torch.nn.Parameter(w_dec.t().clone())  # [d_in, d_sae]
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.k = k

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:  # [batch, d_in] -> [batch, d_sae]
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained over a batch [batch, d_in]."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp(min=1e-12)


@dataclass
class TrainState:
    """Everything a resumed run needs besides the parameters and optimiser."""

    step: int = 0
    sequences: int = 0
    """Training sequences consumed (after the hold-out)."""
    tokens: int = 0
    scale: float = 0.0
    """Input scale s: the SAE sees s * x."""
    seconds: float = 0.0
    last_fvu: float = float("nan")
    outliers: int = 0
    """High-norm rows left out (see TrainConfig.max_norm_ratio)."""


def train_sae(cfg: TrainConfig, model: Model | None = None, progress: bool = True) -> dict:
    """Train (or resume) and write the SAE in SAELens format plus ``metrics.json``."""
    out = Path(cfg.out)
    model = model or load_model(cfg.model, cfg.device)
    if not model.has_hook(cfg.hook):
        raise ValueError(f"model {cfg.model!r} has no hook point {cfg.hook!r}")
    gen = torch.Generator().manual_seed(cfg.seed)
    d_in = model.hook_width(cfg.hook)
    sae = TopKSae(d_in, cfg.d_sae, cfg.k, gen).to(model.device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=model.device)
    state, pending = TrainState(), None
    ckpt = out / "checkpoint" / "state.pt"
    if ckpt.exists():
        state, last_fired, pending = _resume(ckpt, cfg, sae, opt, gen)

    n_steps = cfg.tokens // cfg.batch_tokens
    stream = ActivationStream(model, cfg, gen, state.sequences, pending, state.outliers)

    def checkpoint() -> None:
        state.sequences, state.outliers = stream.sequences, stream.outliers
        state.seconds = time.perf_counter() - started
        _checkpoint(ckpt, cfg, sae, opt, gen, state, last_fired, stream.pending)

    bar = tqdm(
        total=n_steps,
        initial=state.step,
        unit="step",
        disable=not progress,
        desc=f"training {cfg.hook} x{cfg.d_sae}",
    )
    started = time.perf_counter() - state.seconds
    batches = iter(stream)
    with bar:
        while state.step < n_steps and (x := next(batches, None)) is not None:
            if state.scale == 0.0:  # first batch of a fresh run
                state.scale = math.sqrt(d_in / x.pow(2).sum(-1).mean().item())
                with torch.no_grad():
                    sae.b_dec.copy_((x * state.scale).mean(0))
            loss, batch_fvu, fired = _step_loss(sae, x * state.scale, last_fired, state, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sae.normalise_decoder()
            state.step += 1
            state.tokens += x.shape[0]
            last_fired[fired] = state.tokens
            state.last_fvu = batch_fvu
            bar.set_postfix(fvu=f"{batch_fvu:.3f}", dead=f"{_dead(last_fired, state, cfg):.1%}")
            bar.update(1)
            if state.step % cfg.checkpoint_every == 0 or state.step == n_steps:
                checkpoint()
    if state.step < n_steps:
        raise ValueError(
            f"the corpus ran out after {state.tokens} training tokens; "
            "lower --tokens or use a larger corpus"
        )
    state.seconds = time.perf_counter() - started
    metrics = {
        "steps": state.step,
        "tokens": state.tokens,
        "seconds": round(state.seconds, 1),
        "train_fvu_last_batch": state.last_fvu,
        "dead_fraction": _dead(last_fired, state, cfg),
        "input_scale": state.scale,
        "outliers_left_out": stream.outliers,
        "config": asdict(cfg),
    }
    return metrics | {"folded": fold_scale(sae, state.scale)}


def _sparse_decode(indices: torch.Tensor, values: torch.Tensor, w_dec: torch.Tensor):
    """sum_j values[:, j] * w_dec[indices[:, j]]: k rows per token instead of a dense
    [batch, d_sae] @ [d_sae, d_in] product (k / d_sae of the work)."""
    return torch.nn.functional.embedding_bag(indices, w_dec, per_sample_weights=values, mode="sum")


def _step_loss(sae: TopKSae, x, last_fired, state: TrainState, cfg: TrainConfig):
    pre = sae.pre_acts(x)  # [batch, d_sae]
    top = pre.topk(sae.k, dim=-1)
    x_hat = _sparse_decode(top.indices, top.values.relu(), sae.W_dec) + sae.b_dec
    main = fvu(x, x_hat)
    loss = main
    dead = (state.tokens - last_fired) >= cfg.dead_after_tokens
    if dead.any():
        # AuxK: the dead latents' top activations reconstruct the residual error.
        k_aux = min(cfg.aux_k, int(dead.sum()))
        aux_top = pre.masked_fill(~dead, -torch.inf).topk(k_aux, dim=-1)
        err_hat = _sparse_decode(aux_top.indices, aux_top.values.relu(), sae.W_dec)
        loss = loss + cfg.aux_coef * fvu((x - x_hat).detach(), err_hat)
    fired = top.indices[top.values > 0].unique()
    return loss, main.item(), fired


def _dead(last_fired: torch.Tensor, state: TrainState, cfg: TrainConfig) -> float:
    if state.tokens < cfg.dead_after_tokens:
        return 0.0
    return ((state.tokens - last_fired) >= cfg.dead_after_tokens).float().mean().item()


class ActivationStream:
    """Shuffled [batch_tokens, d_in] activations from the corpus after the hold-out.

    A buffer of ``buffer_batches`` forward passes is shuffled and handed out in batches;
    rows that do not fill a batch wait for the next buffer. ``sequences`` (read so far),
    ``pending`` (rows not yet handed out, in order) and the generator's state are all a
    resumed run needs to continue exactly as if it had never stopped.
    Position 0 (the attention sink) is never used.
    """

    def __init__(
        self,
        model: Model,
        cfg: TrainConfig,
        gen: torch.Generator,
        sequences: int = 0,
        pending: torch.Tensor | None = None,
        outliers: int = 0,
    ):
        self.model, self.cfg, self.gen = model, cfg, gen
        self.sequences = sequences
        """Training sequences read into buffers so far."""
        self.outliers = outliers
        """High-norm rows left out so far."""
        self.pending = pending
        """Rows read but not yet handed out, in the order they will be."""
        seqs = iter_sequences(
            cfg.corpus, model.tokenize, seq_len=cfg.seq_len, bos_id=model.bos_id, full_only=True
        )
        self._seqs = itertools.islice(seqs, cfg.holdout_sequences + sequences, None)

    def __iter__(self) -> Iterator[torch.Tensor]:
        size = self.cfg.batch_tokens
        while True:
            while self.pending is not None and self.pending.shape[0] >= size:
                batch, self.pending = self.pending[:size], self.pending[size:]
                yield batch
            chunk = self._fill()
            if not chunk:
                return
            buffer = torch.cat(([self.pending] if self.pending is not None else []) + chunk)
            self.pending = buffer[
                torch.randperm(buffer.shape[0], generator=self.gen).to(buffer.device)
            ]

    def _fill(self) -> list[torch.Tensor]:
        chunk = []
        for _ in range(self.cfg.buffer_batches):
            batch = list(itertools.islice(self._seqs, self.cfg.model_batch))
            if not batch:
                break
            self.sequences += len(batch)
            tokens = torch.tensor([s.tokens for s in batch])
            acts = self.model.activations(tokens, [self.cfg.hook])[self.cfg.hook][:, 1:, :]
            rows = acts.reshape(-1, acts.shape[-1]).float()
            keep = typical_rows(rows, self.cfg.max_norm_ratio)
            self.outliers += int((~keep).sum())
            chunk.append(rows[keep])
        return chunk


def _checkpoint(path: Path, cfg, sae, opt, gen, state: TrainState, last_fired, pending) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": asdict(cfg),
            "sae": sae.state_dict(),
            "opt": opt.state_dict(),
            "gen": gen.get_state(),
            "state": asdict(state),
            "last_fired": last_fired,
            "pending": pending,
        },
        tmp,
    )
    os.replace(tmp, path)


def _resume(path: Path, cfg: TrainConfig, sae, opt, gen):
    saved = torch.load(path, map_location=sae.W_dec.device, weights_only=False)
    mismatched = {
        k
        for k, v in asdict(cfg).items()
        if k not in ("tokens", "checkpoint_every", "device") and saved["config"].get(k) != v
    }
    if mismatched:
        raise ValueError(
            f"{path.parent} holds a run with different settings ({', '.join(sorted(mismatched))}); "
            "use another --out or the same settings"
        )
    sae.load_state_dict(saved["sae"])
    opt.load_state_dict(saved["opt"])
    gen.set_state(saved["gen"])
    return TrainState(**saved["state"]), saved["last_fired"], saved["pending"]


@torch.no_grad()
def fold_scale(sae: TopKSae, scale: float) -> dict[str, torch.Tensor]:
    """Weights that read raw activations: (s x - b) W = (x - b/s)(s W); decode divides by s."""
    return {
        "W_enc": sae.W_enc * scale,
        "b_enc": sae.b_enc.clone(),
        "W_dec": sae.W_dec / scale,
        "b_dec": sae.b_dec / scale,
    }


def write_trained_sae(cfg: TrainConfig, metrics: dict, command: str) -> Sae:
    """Save the trained SAE in SAELens format, with ``metrics.json`` saying how it was made."""
    folded = metrics["folded"]
    d_sae, d_in = folded["W_dec"].shape
    sae = Sae(
        SaeConfig(
            architecture="topk",
            d_in=d_in,
            d_sae=d_sae,
            hook_name=cfg.hook,
            model_name=cfg.model,
            apply_b_dec_to_input=True,
            normalize_activations="none",
            k=cfg.k,
        ),
        {name: t.detach().cpu() for name, t in folded.items()},
    )
    out = Path(cfg.out)
    save_sae(sae, out, extra_cfg={"trained_by": "spyglass train-sae"})
    record = {k: v for k, v in metrics.items() if k != "folded"} | {"command": command}
    (out / "metrics.json").write_text(json.dumps(record, indent=1) + "\n")
    return sae
