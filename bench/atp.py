"""Attribution patching's cost in forward passes, measured in one run: the whole analysis
(every neuron of every layer, every latent of the shipped SAE, every head) against a bare
forward pass of the same prompt on the same model.

    python bench/atp.py [--tokens 16] [--verify 20] [--repeats 5]

The prompt pair is two corpus sequences' first ``--tokens`` tokens. Prints the median
seconds of a bare forward, of the analysis without verification (target: at most 3
forward-equivalents), and of the analysis verifying the top ``--verify`` units (target: 3
plus one per verified unit), each as a ratio to the bare forward.
"""

from __future__ import annotations

import argparse
import statistics
import time

from indexer.corpus import iter_sequences
from spyglass.model import load_model
from spyglass.patching import attribution_patching, metric_fn
from spyglass.sources import mlp_sources, sae_source

SAE = "saes/embedded-12-res-topk-4608"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--verify", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device")
    args = ap.parse_args()

    model = load_model("embedded", args.device)
    sources = mlp_sources(model, list(range(model.n_layers))) + [sae_source(SAE, model)]
    seqs = iter_sequences("embedded", model.tokenize, seq_len=args.tokens, full_only=True)
    clean, corrupt = (next(seqs).tokens for _ in range(2))
    target, other = clean[-1], corrupt[-1]
    metric = metric_fn(target, other)

    def timed(fn) -> float:
        fn()  # warm
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    bare = timed(lambda: model.metric_batch(clean, [{}], metric))
    runs = {}
    for verify in (0, args.verify):
        runs[verify] = timed(
            lambda v=verify: attribution_patching(
                model, sources, clean, corrupt, target, other, skip_first=1, verify=v
            )
        )
    units = sum(s.n_units for s in sources) + model.n_layers * model.n_heads
    print(f"{args.tokens}-token pair, {units:,} units ({model.device}); median of {args.repeats}")
    print(f"bare forward:           {bare * 1000:8.1f} ms")
    for verify, seconds in runs.items():
        print(
            f"AtP, verify {verify:3d}:       {seconds * 1000:8.1f} ms = "
            f"{seconds / bare:5.1f} forward-equivalents"
        )


if __name__ == "__main__":
    main()
