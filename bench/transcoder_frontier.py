"""Width, k and skip against FVU for transcoders on a few layers of the embedded model:
how the shipped set's settings were chosen.

Caches the MLP input and output of ``--layers`` over ``--sequences`` training sequences
(after the 256 held out), then trains each configuration for ``--steps`` steps of 4,096
tokens on that cache (several passes over it) with the training code's own
``TranscoderStack`` and loss, and prints per configuration the FVU of each layer on the
cache's last 20,000 tokens (held out from these runs), the dead share there, and what 30
layers of it weigh in float16.

    python bench/transcoder_frontier.py 1024,32,noskip 768,64,skip [--layers 0,8,15,22,29]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from indexer.corpus import iter_sequences
from indexer.transcoder_stack import TranscoderStack, fvu_per_layer, least_squares
from indexer.transcoder_training import TranscoderTrainConfig
from spyglass.model import load_model
from spyglass.sources import typical_rows
from spyglass.transcoders import input_hook, output_hook

HELD_OUT = 20_000


def cache(layers: list[int], sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [layers, rows, d], y [layers, rows, d] (position 0 and massive outputs left out)."""
    model = load_model("embedded", "cpu")
    hooks = [input_hook(i) for i in layers] + [output_hook(i) for i in layers]
    seqs = iter_sequences("embedded", model.tokenize, seq_len=128, full_only=True)
    seqs = itertools.islice(seqs, 256, 256 + sequences)
    xs, ys = [], []
    while batch := list(itertools.islice(seqs, 16)):
        acts = model.activations(torch.tensor([s.tokens for s in batch]), hooks)
        x = torch.stack([acts[input_hook(i)][:, 1:].reshape(-1, model.d_model) for i in layers])
        y = torch.stack([acts[output_hook(i)][:, 1:].reshape(-1, model.d_model) for i in layers])
        keep = torch.stack([typical_rows(rows) for rows in y]).all(0)
        xs.append(x[:, keep].half())
        ys.append(y[:, keep].half())
    return torch.cat(xs, 1).float(), torch.cat(ys, 1).float()


def run(x, y, width: int, k: int, skip: bool, steps: int, lr: float = 1e-3) -> dict:
    x_train, y_train = x[:, :-HELD_OUT], y[:, :-HELD_OUT]
    cfg = TranscoderTrainConfig(d_sae=width, k=k, skip=skip, lr=lr)
    n, _, d = x.shape
    net = TranscoderStack(n, d, d, cfg, torch.Generator().manual_seed(0))
    first = slice(0, 16_000)
    s_in = (d / x_train[:, first].pow(2).sum(-1).mean(1)).sqrt().view(-1, 1, 1)
    s_out = (d / y_train[:, first].pow(2).sum(-1).mean(1)).sqrt().view(-1, 1, 1)
    with torch.no_grad():
        y0 = y_train[:, first] * s_out
        net.b_dec.copy_(y0.mean(1))
        if skip:
            net.W_skip.copy_(least_squares(x_train[:, first] * s_in, y0 - y0.mean(1, keepdim=True)))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    last = torch.zeros(n, width, dtype=torch.long)
    tokens, at, started = 0, 0, time.perf_counter()
    for _ in range(steps):
        if at + 4096 > x_train.shape[1]:
            at = 0
        xb, yb = x_train[:, at : at + 4096] * s_in, y_train[:, at : at + 4096] * s_out
        at += 4096
        pre = net.pre_acts(xb)
        top = pre.topk(k, dim=-1)
        y_hat = net.decode_sparse(top.indices, top.values) + net.linear(xb)
        loss = fvu_per_layer(yb, y_hat).sum()
        dead = (tokens - last) >= 200_000
        if dead.any():
            aux = pre.masked_fill(~dead.unsqueeze(1), -torch.inf).topk(
                min(256, int(dead.sum(1).max())), dim=-1
            )
            err = net.decode_sparse(aux.indices, aux.values.relu())
            loss = loss + fvu_per_layer((yb - y_hat).detach(), err)[dead.any(1)].sum() / 32
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.normalise_decoder()
        tokens += 4096
        fired = torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, top.indices, True)
        last[fired.any(1)] = tokens
    with torch.no_grad():
        xe, ye = x[:, -HELD_OUT:] * s_in, y[:, -HELD_OUT:] * s_out
        pre = net.pre_acts(xe)
        top = pre.topk(k, dim=-1)
        fvu = fvu_per_layer(ye, net.decode_sparse(top.indices, top.values) + net.linear(xe))
        fired = torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, top.indices, True).any(1)
    params = 2 * d * width + (d * d if skip else 0)
    return {
        "width": width, "k": k, "skip": skip, "steps": steps,
        "fvu": [round(v, 3) for v in fvu.tolist()], "fvu_median": round(fvu.median().item(), 3),
        "dead": [round(1 - v, 4) for v in fired.float().mean(1).tolist()],
        "mb_30_layers_fp16": round(30 * params * 2 / 1e6, 1),
        "seconds": round(time.perf_counter() - started),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", help="WIDTH,K,skip|noskip")
    p.add_argument("--layers", default="0,8,15,22,29")
    p.add_argument("--sequences", type=int, default=1920, help="cached sequences (1920)")
    p.add_argument("--steps", type=int, default=250, help="steps of 4,096 tokens (250)")
    args = p.parse_args()
    layers = [int(i) for i in args.layers.split(",")]
    x, y = cache(layers, args.sequences)
    print(f"layers {layers}: {x.shape[1] - HELD_OUT} cached training tokens", flush=True)
    for spec in args.configs:
        width, k, skip = spec.split(",")
        print(json.dumps(run(x, y, int(width), int(k), skip == "skip", args.steps)), flush=True)


if __name__ == "__main__":
    main()
