"""Two versions of ``indexer/kernels.py`` side by side in one forward pass: each MLP
layer's block is folded by both (in alternating order) into two separate states.

    git show b571616:indexer/kernels.py > /tmp/old_kernels.py
    python bench/kernel_ab.py /tmp/old_kernels.py indexer/kernels.py [--batches 14]
        [--warm-up 4]

Prints ms per batch of each (the first --warm-up batches not counted) and checks that
both left the same top-k and interval states (bin 0 of the counts, which no reader
uses, aside). On a host with noisy neighbours this in-process comparison is the one to
trust: a burst of stolen CPU hits both versions alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from indexer import core
from indexer.core import fold_batch
from indexer.corpus import iter_sequences
from indexer.pipeline import IndexConfig, SourceStats
from spyglass.model import load_model
from spyglass.sources import mlp_sources


def load_kernels(path: str, name: str, folder: Path):
    """``path`` imported as module ``name`` from a copy in ``folder`` (a fresh folder, so
    numba's on-disk cache never mixes the two versions)."""
    if not Path(path).is_file():
        sys.exit(f"kernel_ab: no file {path}")
    copy = folder / f"{name}.py"
    shutil.copyfile(path, copy)
    spec = importlib.util.spec_from_file_location(name, copy)
    if spec is None or spec.loader is None:
        sys.exit(f"kernel_ab: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def comparable(name: str, value: torch.Tensor) -> torch.Tensor:
    if name == "counts":
        value = value[:, 1:]
    if value.dtype == torch.float16:
        value = value.view(torch.int16)
    return value.nan_to_num(0.0) if value.is_floating_point() else value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="a kernels.py")
    ap.add_argument("b", help="another kernels.py")
    ap.add_argument("--batches", type=int, default=14)
    ap.add_argument("--warm-up", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kernel_ab-") as folder:  # removed however it ends
        compare(args, Path(folder))


def compare(args: argparse.Namespace, folder: Path) -> None:
    versions = {name: load_kernels(path, f"kernels_{name}", folder) for name, path in
                (("a", args.a), ("b", args.b))}  # fmt: skip

    model = load_model("embedded")
    cfg = IndexConfig(model="embedded")
    seqs = iter_sequences(
        "embedded", model.tokenize, seq_len=cfg.seq_len, bos_id=model.bos_id, full_only=True
    )
    sources = mlp_sources(model, list(range(model.n_layers)))
    states = {
        name: {s.hook: SourceStats(s, cfg, model.device) for s in sources} for name in versions
    }
    seconds = dict.fromkeys(versions, 0.0)
    hooks = sorted(states["a"])
    # Compile both versions on two sequences, into states of their own, so that even the
    # first batch (--warm-up 0: where a state starts empty) times folding, not compiling.
    probe = torch.tensor([s.tokens for s in itertools.islice(seqs, 2)])
    for version in versions.values():
        st = SourceStats(sources[0], cfg, model.device)
        core.kernels.fold = version.fold
        model.activations(probe, [hooks[0]], visit=lambda _, act, st=st: fold_batch(
            st.topk, st.intervals, act, 0))  # fmt: skip
    for i in range(args.batches):
        batch = torch.tensor([s.tokens for s in itertools.islice(seqs, cfg.batch_size)])
        first = i * cfg.batch_size

        def visit(hook: str, act: torch.Tensor, i: int = i, first: int = first) -> None:
            order = list(versions)
            if (i + hooks.index(hook)) % 2:
                order.reverse()
            for name in order:
                st = states[name][hook]
                core.kernels.fold = versions[name].fold
                t0 = time.perf_counter()
                fold_batch(st.topk, st.intervals, act, first)
                if i >= args.warm_up:
                    seconds[name] += time.perf_counter() - t0

        model.activations(batch, hooks, visit=visit)
    counted = max(args.batches - args.warm_up, 1)
    a, b = (seconds[name] / counted * 1e3 for name in versions)
    print(f"a {a:.1f} ms/batch   b {b:.1f} ms/batch   b/a {b / a:.3f}  ({args.a} vs {args.b})")
    differ = []
    for hook in hooks:
        sa, sb = states["a"][hook].state_dict(), states["b"][hook].state_dict()
        for part in ("topk", "intervals"):
            for key, value in sa[part].items():
                if isinstance(value, torch.Tensor) and not torch.equal(
                    comparable(key, value), comparable(key, sb[part][key])
                ):
                    differ.append(f"{hook} {part}.{key}")
    print("states equal" if not differ else "states differ: " + ", ".join(differ))


if __name__ == "__main__":
    main()
