"""Width, k, batch and learning-rate schedule against held-out FVU for transcoders on a
few layers of the embedded model: how the shipped set's settings were chosen.

Caches the MLP input and output of ``--layers`` over the corpus's first 256 sequences
(the ones ``eval-transcoders`` scores, which training never sees) and the ``--sequences``
after them (training), then trains each configuration with the training code itself
(``TranscoderTrainer.steps``: its loss, AuxK and learning-rate schedule) for ``--epochs``
passes over the training cache, and prints per configuration each layer's held-out FVU
and dead share as ``eval-transcoders`` computes them (``LayerSums``), and what 30 layers
of it weigh in float16.

A configuration is ``WIDTH,K,skip|noskip`` and optionally ``batch=``, ``lr=``,
``decay=`` (``--batch-tokens``, ``--lr``, ``--lr-decay`` of train-transcoders):

    python bench/transcoder_frontier.py 768,64,skip 768,64,skip,batch=1024 --layers 1,3,9,25
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time

import torch

from indexer.corpus import iter_sequences
from indexer.transcoder_eval import LayerSums
from indexer.transcoder_training import TranscoderTrainConfig, TranscoderTrainer, trained_set
from spyglass.model import Model, load_model
from spyglass.sources import MAX_NORM_RATIO, typical_rows
from spyglass.transcoders import input_hook, output_hook

HELD_OUT_SEQUENCES = 256
BUFFER_ROWS = 8128
"""Rows per training buffer, as train-transcoders' default (4 passes of 16 x 127)."""
KEYS = {"batch": ("batch_tokens", int), "lr": ("lr", float), "decay": ("lr_decay", float)}


def cache(model: Model, layers: list[int], start: int, count: int, typical: bool):
    """x [layers, rows, d], y [layers, rows, d] in float16 over sequences start..start+count
    (position 0 left out; with ``typical``, rows massive at any layer too, as training)."""
    hooks = [input_hook(i) for i in layers] + [output_hook(i) for i in layers]
    seqs = iter_sequences("embedded", model.tokenize, seq_len=128, full_only=True)
    seqs = itertools.islice(seqs, start, start + count)
    xs, ys = [], []
    while batch := list(itertools.islice(seqs, 16)):
        acts = model.activations(torch.tensor([s.tokens for s in batch]), hooks)
        x = torch.stack([acts[input_hook(i)][:, 1:].reshape(-1, model.d_model) for i in layers])
        y = torch.stack([acts[output_hook(i)][:, 1:].reshape(-1, model.d_model) for i in layers])
        if typical:
            keep = torch.stack([typical_rows(rows) for rows in y]).all(0)
            x, y = x[:, keep], y[:, keep]
        xs.append(x.half())
        ys.append(y.half())
    return torch.cat(xs, 1), torch.cat(ys, 1)


def parse(spec: str) -> dict:
    width, k, skip, *rest = spec.split(",")
    settings = {"d_sae": int(width), "k": int(k), "skip": skip == "skip"}
    for item in rest:
        key, _, value = item.partition("=")
        field, kind = KEYS[key]
        settings[field] = kind(value)
    return settings


def run(model, layers, train, held_out, settings: dict, epochs: int) -> dict:
    x, y = train
    rows = x.shape[1]
    with tempfile.TemporaryDirectory() as out:
        cfg = TranscoderTrainConfig(layers=tuple(layers), tokens=epochs * rows, out=out, **settings)
        trainer = TranscoderTrainer(cfg, model)
        gen = torch.Generator().manual_seed(0)
        started = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(rows, generator=gen)
            for part in order.split(BUFFER_ROWS):
                for _ in trainer.steps(x[:, part], y[:, part]):
                    pass
        seconds = time.perf_counter() - started
        tcs = trained_set(cfg, trainer.layers, trainer.folded())
    xh, yh = held_out
    scores = []
    for i, layer in enumerate(layers):
        tc = tcs.transcoders[layer]
        sums = LayerSums(tc.cfg.d_sae)
        for part in torch.arange(xh.shape[1]).split(4096):
            sums.add(tc, xh[i, part], yh[i, part], MAX_NORM_RATIO)
        scores.append(sums.reconstruction())
    fvu = torch.tensor([s["fvu"] for s in scores])
    d, width = model.d_model, cfg.d_sae
    params = 2 * d * width + (d * d if cfg.skip else 0)
    return {
        "config": settings, "steps": trainer.state.step, "tokens": trainer.state.tokens,
        "fvu": [round(v, 3) for v in fvu.tolist()], "fvu_median": round(fvu.median().item(), 3),
        "dead": [round(s["dead_fraction"], 4) for s in scores],
        "mb_30_layers_fp16": round(30 * params * 2 / 1e6, 1),
        "seconds": round(seconds),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", help="WIDTH,K,skip|noskip[,batch=N][,lr=X][,decay=F]")
    p.add_argument("--layers", default="1,3,9,25", help="MLP layers (1,3,9,25: hard ones)")
    p.add_argument("--sequences", type=int, default=2000, help="training sequences (2000)")
    p.add_argument("--epochs", type=int, default=2, help="passes over them (2)")
    args = p.parse_args()
    layers = [int(i) for i in args.layers.split(",")]
    model = load_model("embedded", "cpu")
    held_out = cache(model, layers, 0, HELD_OUT_SEQUENCES, typical=False)
    train = cache(model, layers, HELD_OUT_SEQUENCES, args.sequences, typical=True)
    print(
        f"layers {layers}: {train[0].shape[1]} training rows x {args.epochs} epochs, "
        f"{held_out[0].shape[1]} held-out rows (the eval's)",
        flush=True,
    )
    for spec in args.configs:
        print(json.dumps(run(model, layers, train, held_out, parse(spec), args.epochs)), flush=True)


if __name__ == "__main__":
    main()
