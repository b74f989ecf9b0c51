"""Where the indexer's time goes, per batch: each statistic of each kind of source timed
on its own, beside the bare forward, in one run.

    python bench/where_time_goes.py [--batches 12] [--warm-up 4] [--sae DIR]

Prints ms per batch (of 16 x 128 tokens) for the bare forward, the full pass, and inside
the full pass: the SAE encode ("units"), the compiled top-k/counts/samples pass ("fold")
and the tokens kept for the correlations ("correlation"), for the MLP layers together and
for the SAE.
The first --warm-up batches are not counted (the kernels compile, the sample bins fill).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import time

import torch

from cli.commands import SHIPPED_SAE
from indexer import stats as stats_module
from indexer.corpus import iter_sequences
from indexer.pipeline import IndexConfig, PassStats
from spyglass.model import load_model
from spyglass.sources import mlp_sources, sae_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--warm-up", type=int, default=4)
    ap.add_argument("--sae", default=str(SHIPPED_SAE))
    args = ap.parse_args()

    seconds: collections.Counter[str] = collections.Counter()

    def timed(name, fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            seconds[name] += time.perf_counter() - t0
            return out

        return run

    def timed_blocks(name, fn):
        """``fn``, a generator of blocks, with the time spent making each block."""

        def run(*a, **kw):
            blocks = fn(*a, **kw)
            while True:
                t0 = time.perf_counter()
                block = next(blocks, None)
                seconds[name] += time.perf_counter() - t0
                if block is None:
                    return
                yield block

        return run

    model = load_model("embedded")
    cfg = IndexConfig(model="embedded")
    seqs = iter_sequences(
        "embedded", model.tokenize, seq_len=cfg.seq_len, bos_id=model.bos_id, full_only=True
    )
    n = cfg.batch_size
    batches = [
        torch.tensor([s.tokens for s in itertools.islice(seqs, n)]) for _ in range(args.batches)
    ]
    layers = list(range(model.n_layers))
    stats = PassStats(model, mlp_sources(model, layers) + [sae_source(args.sae, model)], cfg)
    kind = {}
    for st in stats.sources:
        kind[id(st.topk)] = k = "sae" if st.source.sae is not None else "mlp"
        blocks = timed_blocks(f"{k} units", st.source.unit_blocks)
        object.__setattr__(st.source, "unit_blocks", blocks)
        st.correlation.update = timed(f"{k} correlation", st.correlation.update)
    fold = stats_module.fold_batch

    def timed_fold(topk, intervals, *args):
        t0 = time.perf_counter()
        fold(topk, intervals, *args)
        seconds[f"{kind[id(topk)]} fold"] += time.perf_counter() - t0

    stats_module.fold_batch = timed_fold
    bare = full = 0.0
    for i, batch in enumerate(batches):
        if i == args.warm_up:
            seconds.clear()
            bare = full = 0.0
        t0 = time.perf_counter()
        model.mlp_activations(batch, layers)
        t1 = time.perf_counter()
        stats.update(batch, i * n)
        t2 = time.perf_counter()
        bare, full = bare + t1 - t0, full + t2 - t1
    counted = len(batches) - args.warm_up
    print(f"bare forward     {bare / counted * 1e3:7.0f} ms/batch")
    print(f"full pass        {full / counted * 1e3:7.0f} ms/batch (ratio {bare / full:.3f})")
    for name, s in sorted(seconds.items()):
        print(f"  {name:14s} {s / counted * 1e3:7.1f} ms/batch")


if __name__ == "__main__":
    main()
