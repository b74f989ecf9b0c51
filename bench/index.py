"""Indexer throughput beside a bare forward pass, on the same batches, in one run.

    python bench/index.py [--model embedded] [--tokens 16384] [--batch-size 16]

(a) bare: the forward pass through the hooked MLP layers, nothing else;
(b) indexer: the same forward plus every streaming statistic of every neuron;
(b') with --sae FOLDER: (b) plus the SAE's latents (encode + statistics);
(c) write: turning the statistics into rows and writing them (once per run).
Prints tokens/s for each and the ratios to (a). The runs are interleaved batch by batch
(a, b, b', a, b, b', ...), so a burst of CPU stolen by the host hits all of them alike.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch

from indexer.corpus import iter_sequences
from indexer.pipeline import IndexConfig, PassStats, _write_source
from spyglass import storage
from spyglass.model import load_model
from spyglass.sources import mlp_sources, sae_source


class Timed:
    """The indexer's streaming statistics of ``sources``, fed one batch at a time as
    ``build_index`` feeds them, with the seconds spent."""

    def __init__(self, model, cfg, sources):
        self.seconds, self.first = 0.0, 0
        self.stats = PassStats(model, sources, cfg)

    def step(self, batch: torch.Tensor) -> None:
        t0 = time.perf_counter()
        self.stats.update(batch, self.first)
        self.first += batch.shape[0]
        self.seconds += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--corpus", default="embedded")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--sae", help="also time the indexer with this SAE's latents")
    args = ap.parse_args()

    model = load_model(args.model)
    cfg = IndexConfig(model=args.model, seq_len=args.seq_len, batch_size=args.batch_size)
    layers = list(range(model.n_layers))
    seqs = list(
        itertools.islice(
            iter_sequences(args.corpus, model.tokenize, seq_len=args.seq_len, bos_id=model.bos_id),
            args.tokens // args.seq_len,
        )
    )
    batches = [
        torch.tensor([s.tokens for s in seqs[i : i + args.batch_size]])
        for i in range(0, len(seqs), args.batch_size)
    ]
    n_tokens = sum(b.numel() for b in batches)
    model.mlp_activations(batches[0], layers)  # warm-up: the model ...
    warm = Timed(model, cfg, mlp_sources(model, layers[:1]))  # ... and the compiled kernels
    warm.step(batches[0][:2])

    neurons = Timed(model, cfg, mlp_sources(model, layers))
    with_sae = (
        Timed(model, cfg, mlp_sources(model, layers) + [sae_source(args.sae, model)])
        if args.sae
        else None
    )
    bare = 0.0
    for b in batches:
        t0 = time.perf_counter()
        model.mlp_activations(b, layers)
        bare += time.perf_counter() - t0
        neurons.step(b)
        if with_sae is not None:
            with_sae.step(b)
    stats, full = neurons.stats.sources, neurons.seconds

    with tempfile.TemporaryDirectory() as tmp:
        engine = storage.make_engine(str(Path(tmp) / "bench.db"), create=True)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            mid = storage.replace_model(
                conn,
                "bench",
                spec=args.model,
                corpus=args.corpus,
                n_layers=model.n_layers,
                d_model=model.d_model,
                d_vocab=model.d_vocab,
                seq_len=args.seq_len,
                skip_first=1,
                top_k=cfg.top_k,
            )
            for st in stats:
                _write_source(conn, mid, st, model, args.seq_len)
        write = time.perf_counter() - t0
        size = (Path(tmp) / "bench.db").stat().st_size

    a, b = n_tokens / bare, n_tokens / full
    print(
        f"model {args.model}, {n_tokens} tokens, batch {args.batch_size}x{args.seq_len}, "
        f"{len(layers)} layers x {model.d_mlp} neurons, {torch.get_num_threads()} threads"
    )
    print(f"(a) bare forward:   {a:8.1f} tok/s")
    print(f"(b) full indexer:   {b:8.1f} tok/s")
    print(f"ratio b/a:          {b / a:8.3f}")
    if with_sae is not None:
        c = n_tokens / with_sae.seconds
        print(f"(b') with the SAE:  {c:8.1f} tok/s  ratio b'/a {c / a:.3f} ({args.sae})")
    print(f"(c) write phase:    {write:8.1f} s ({size / 1e6:.0f} MB, not in b)")


if __name__ == "__main__":
    main()
