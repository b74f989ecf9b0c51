"""Indexer time beside a bare forward pass, on the same batches, in one run.

    python bench/index.py [--model embedded] [--tokens 65536] [--batch-size 16] [--sae DIR]
                          [--layers all|none|0,1,...]

(a) bare: the forward pass through the hooked layers plus the SAE's own encode, nothing
    else;
(b) pass: the same forward plus every streaming statistic of every neuron of every layer
    and of every latent of the SAE (the shipped one by default; --sae none for none),
    exactly as ``spyglass index`` runs it;
(c) write: turning the statistics into rows and writing them (once per run), with where
    its time goes (``indexer.write.PhaseClock``), with an empty cache of logit summaries;
    then again with them cached, as for a model indexed before (``indexer.logit_cache``).
Prints tokens/s for (a) and (b), the pass ratio b/a and the end-to-end ratio, the time of
(a) over the time of (b) and (c) together: what the user waits for. The runs are
interleaved batch by batch (a, b, a, b, ...), so a burst of CPU stolen by the host hits
all of them alike. The ratio of the CPU seconds of (a) and (b) (every thread's, from
``time.process_time``) is printed as well: CPU time the host steals is not counted in it,
so it varies less between runs. So are the seconds the host stole during each (the steal
column of ``/proc/stat``, over all CPUs; Linux only). Then peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from cli.commands import SHIPPED_SAE
from indexer.config import Plan
from indexer.corpus import iter_sequences
from indexer.pipeline import IndexConfig, PassStats
from indexer.stats import return_freed_memory
from indexer.token_index import CorpusGrid
from indexer.write import PhaseClock, write_sources
from spyglass import storage
from spyglass.model import load_model, mlp_hook
from spyglass.sources import mlp_sources, sae_source


def stolen_seconds() -> float:
    """CPU seconds the hypervisor has stolen from this machine since boot, all CPUs
    together (0 where ``/proc/stat`` has no steal column)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


class Clock:
    """Wall, CPU and stolen seconds, summed over the spans it times."""

    def __init__(self):
        self.seconds = self.cpu_seconds = self.stolen = 0.0

    @contextlib.contextmanager
    def span(self):
        t0, c0, s0 = time.perf_counter(), time.process_time(), stolen_seconds()
        yield
        self.seconds += time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        self.stolen += stolen_seconds() - s0


class Timed(Clock):
    """The indexer's streaming statistics of ``sources``, fed one batch at a time as
    ``build_index`` feeds them, with the seconds spent."""

    def __init__(self, model, cfg, sources):
        super().__init__()
        self.first = 0
        self.stats = PassStats(model, sources, cfg)

    def step(self, batch: torch.Tensor) -> None:
        with self.span():
            self.stats.update(batch, self.first)
        self.first += batch.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--corpus", default="embedded")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument(
        "--sae", default=str(SHIPPED_SAE), help="SAE indexed in (b) ('none': neurons only)"
    )
    ap.add_argument("--layers", default="all", help="MLP layers: all, none, or 0,1,...")
    args = ap.parse_args()

    model = load_model(args.model)
    cfg = IndexConfig(model=args.model, seq_len=args.seq_len, batch_size=args.batch_size)
    if args.layers == "all":
        layers = list(range(model.n_layers))
    else:
        layers = [] if args.layers == "none" else [int(x) for x in args.layers.split(",")]
    seqs = list(
        itertools.islice(
            iter_sequences(
                args.corpus,
                model.tokenize,
                seq_len=args.seq_len,
                bos_id=model.bos_id,
                full_only=True,
            ),
            args.tokens // args.seq_len,
        )
    )
    batches = [
        torch.tensor([s.tokens for s in seqs[i : i + args.batch_size]])
        for i in range(0, len(seqs), args.batch_size)
    ]
    n_tokens = sum(b.numel() for b in batches)
    sae = [] if args.sae == "none" else [sae_source(args.sae, model)]
    hooks = sorted({mlp_hook(layer) for layer in layers} | {s.hook for s in sae})

    def forward_and_encode(tokens: torch.Tensor) -> None:
        def visit(hook: str, act: torch.Tensor) -> None:
            for src in sae:
                if src.hook == hook:
                    for _ in src.unit_blocks(act, 1):
                        pass

        model.activations(tokens, hooks, visit=visit)

    forward_and_encode(batches[0])  # warm-up: the model ...
    warm = Timed(model, cfg, mlp_sources(model, layers[:1]) + sae)  # ... and the kernels
    warm.step(batches[0][:2])

    full = Timed(model, cfg, mlp_sources(model, layers) + sae)
    bare = Clock()
    for b in batches:
        with bare.span():
            forward_and_encode(b)
        return_freed_memory()  # (b) trims the heap each batch (its cost counted there)
        full.step(b)
    stats = full.stats.sources

    def write_all(clock: PhaseClock) -> tuple[float, int]:
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
                plan = Plan(cfg, model, [st.source for st in stats], {})
                parts = [[{st.source.name: st.state_dict() for st in stats}]]
                corpus = CorpusGrid(args.seq_len)
                corpus.add((i, "", 0, s.tokens) for i, s in enumerate(seqs))
                for _ in write_sources(conn, mid, plan, parts, clock, corpus):
                    pass
            engine.dispose()
            return time.perf_counter() - t0, (Path(tmp) / "bench.db").stat().st_size

    # Cold: a cache of logit summaries of its own, empty; then again, with them cached (a
    # model indexed before: ``indexer.logit_cache``).
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SPYGLASS_CACHE_DIR"] = cache
        clock, warm_clock = PhaseClock(), PhaseClock()
        write, size = write_all(clock)
        warm, _ = write_all(warm_clock)

    a, b = n_tokens / bare.seconds, n_tokens / full.seconds
    print(
        f"model {args.model}, {n_tokens} tokens, batch {args.batch_size}x{args.seq_len}, "
        f"{len(layers)} layers x {model.d_mlp} neurons"
        + (f" + {sae[0].n_units} latents ({args.sae})" if sae else "")
        + f", {torch.get_num_threads()} threads, device {model.device}"
    )
    print(f"(a) bare forward:   {a:8.1f} tok/s")
    print(f"(b) pass:           {b:8.1f} tok/s")
    print(f"ratio b/a:          {b / a:8.3f}")
    cpu_ratio = bare.cpu_seconds / full.cpu_seconds
    print(f"ratio b/a, CPU time:{cpu_ratio:8.3f} (all threads' CPU seconds; stolen time aside)")
    print(
        f"stolen by the host: {bare.stolen:8.1f} s during (a) of {bare.seconds:.1f}, "
        f"{full.stolen:.1f} s during (b) of {full.seconds:.1f} (all CPUs)"
    )
    print(f"(c) write phase:    {write:8.1f} s ({size / 1e6:.0f} MB, not in b)")
    for phase, seconds in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
        print(f"      {phase + ':':22s}{seconds:6.1f} s ({seconds / write:.0%})")
    print(
        f"end to end (a)/(b+c): {bare.seconds / (full.seconds + write):6.3f} "
        f"({bare.seconds:.1f} s against {full.seconds:.1f} + {write:.1f} s)"
    )
    cached = warm_clock.seconds["logit effects"]
    print(f"(c) again, logit summaries cached: {warm:.1f} s (logit effects {cached:.1f} s)")
    print(
        f"end to end, model indexed before: {bare.seconds / (full.seconds + warm):6.3f} "
        f"({bare.seconds:.1f} s against {full.seconds:.1f} + {warm:.1f} s)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS:           {rss:8.0f} MB")


if __name__ == "__main__":
    main()
