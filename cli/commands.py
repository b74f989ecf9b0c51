"""The commands of ``spyglass``: each takes the parsed arguments and returns an exit status.

This package is the top of the code: it imports ``indexer`` and ``app`` (lazily, so that
``--help`` is fast), and nothing imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEMO_TOKENS = 131_072
"""Demo corpus size, in tokens (its indexing time is in docs/performance.md)."""
SHIPPED_SAE = Path(__file__).resolve().parent.parent / "saes" / "embedded-12-res-topk-4608"
"""The SAE trained for the embedded model with `spyglass train-sae`, committed in the repo."""
SHIPPED_TRANSCODERS = SHIPPED_SAE.parent / "embedded-transcoders-topk-skip-768"
"""The transcoder set trained for the embedded model with `spyglass train-transcoders`."""


class CliError(Exception):
    """A bad input; printed as one line."""


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
        transcoders=tuple(args.transcoders),
        include_first_token=args.include_first_token,
        text_field=args.text_field,
        split=args.split,
        device=args.device,
        shard=_shard(args.shard),
        units=_shard(args.units, "--units"),
        memory=args.memory,
        work=args.work,
        checkpoint_every=args.checkpoint_every,
        restart=args.restart,
    )
    if args.ray is not None and (args.shard != "0/1" or args.units != "0/1"):
        raise CliError("--ray runs every shard itself; leave out --shard and --units")
    if args.ray is not None and (args.workers < 1 or args.unit_shards < 1):
        raise CliError("--workers and --unit-shards must be at least 1")
    _run_index(cfg, ray=args.ray, workers=args.workers, unit_shards=args.unit_shards)
    return 0


def _shard(text: str, flag: str = "--shard") -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise CliError(f"{flag} must look like I/N (e.g. 0/4), not {text!r}") from None
    if not 0 <= i < n:
        raise CliError(f"{flag} I/N needs 0 <= I < N, got {text}")
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
    for line in report.kept:
        print(line)
    return 0


def _prepare_db(db: str) -> None:
    if "://" not in db:
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _run_index(cfg, *, ray: str | None = None, workers: int = 1, unit_shards: int = 1) -> None:
    from indexer.corpus import CorpusError
    from indexer.pipeline import build_index
    from spyglass.model import ModelLoadError

    if cfg.batch_size < 1 or cfg.top_k < 1:
        raise CliError("--batch-size and --top-k must be positive")
    _prepare_db(cfg.db)
    try:
        if ray is not None:
            from indexer.distributed import index_with_ray

            report = index_with_ray(cfg, address=ray, workers=workers, unit_shards=unit_shards)
        else:
            report = build_index(cfg, announce=lambda line: print(line, flush=True))
    except (ModelLoadError, CorpusError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        print(
            "spyglass: interrupted; run the same command again to resume from the last "
            "checkpoint (the database keeps its previous contents)",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    if (cfg.shard, cfg.units) != ((0, 1), (0, 1)):
        part = f"shard {cfg.shard[0]}/{cfg.shard[1]}"
        if cfg.units != (0, 1):
            part += f" units {cfg.units[0]}/{cfg.units[1]}"
        print(
            f"indexed {report.slug} {part}: "
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
    for line in report.kept:
        print(line)


TRAINING_FIELDS = (
    "model", "corpus", "out", "d_sae", "k", "tokens", "holdout_sequences", "batch_tokens", "lr",
    "seq_len", "seed", "checkpoint_every", "device",
)  # fmt: skip
"""The settings train-sae and train-transcoders share, by their config's field names."""


def add_training_args(p: argparse.ArgumentParser, d) -> None:
    """The arguments of ``TRAINING_FIELDS``, defaults from the config ``d``."""
    p.add_argument("--model", default=d.model, help="model spec, as for index")
    p.add_argument("--corpus", default=d.corpus, help="corpus spec, as for index")
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


def training_settings(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in TRAINING_FIELDS}


def check_training(cfg, *, topk: bool = True) -> None:
    """One-line errors for sizes a training run cannot use."""
    if min(cfg.d_sae, cfg.k, cfg.tokens, cfg.batch_tokens, cfg.checkpoint_every) < 1:
        raise CliError(
            "--d-sae, --k, --tokens, --batch-tokens and --checkpoint-every must be positive"
        )
    if topk and cfg.k > cfg.d_sae:
        raise CliError(f"--k {cfg.k} exceeds --d-sae {cfg.d_sae}")
    if cfg.tokens < cfg.batch_tokens:
        raise CliError(f"--tokens must be at least one step ({cfg.batch_tokens} tokens)")
    if not cfg.lr > 0:
        raise CliError("--lr must be positive")


def cmd_train_sae(args: argparse.Namespace) -> int:
    from indexer.corpus import CorpusError
    from indexer.sae_training import TrainConfig, train_sae, write_trained_sae
    from spyglass.model import ModelLoadError

    cfg = TrainConfig(hook=args.hook, **training_settings(args))
    check_training(cfg)
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
    ratio = metrics["kl_ratio"]
    print(
        f"ΔCE {metrics['delta_ce']:.4f} nats, KL {metrics['kl_spliced']:.4f} against "
        f"{metrics['kl_epsilon_random']:.4f} for ε-random errors of the same size "
        f"(ratio {'-' if ratio is None else f'{ratio:.2f}'})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from app.main import create_app
    from app.write_access import serve_notice
    from spyglass.settings import Settings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        settings = Settings(db=args.db, preload=args.preload)
    except ValidationError as exc:  # a SPYGLASS_* variable that does not parse
        e = exc.errors()[0]
        raise CliError(f"SPYGLASS_{str(e['loc'][0]).upper()}: {e['msg']}") from None
    try:
        app = create_app(settings)
    except FileNotFoundError as exc:
        raise CliError(f"{exc}; build one with `spyglass index` or `spyglass demo`") from exc
    except ValueError as exc:  # an index written by an older Spyglass
        raise CliError(str(exc)) from exc
    if notice := serve_notice(app.state.settings, args.host):
        print(notice)
    print(f"serving {args.db} at http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from indexer.explain.endpoint import EndpointFailure
    from indexer.explain.llm import SCORERS, LlmSettings
    from indexer.explain.run import explain_index
    from spyglass import storage
    from spyglass.model import ModelLoadError

    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    scorers = tuple(s.strip() for s in args.scorer.split(",") if s.strip() not in ("", "none"))
    unknown = sorted(set(scorers) - set(SCORERS))
    if unknown:
        raise CliError(f"--scorer: unknown {', '.join(unknown)} (choose from {', '.join(SCORERS)})")
    counts = {"--score-examples": args.score_examples, "--score-batch": args.score_batch,
              "--concurrency": args.concurrency}  # fmt: skip
    for flag, value in counts.items():
        if value < 1:
            raise CliError(f"{flag} must be at least 1")
    if args.retries < 0:
        raise CliError("--retries must be at least 0")
    try:
        report = explain_index(
            args.db,
            args.model,
            sources=sources,
            units=args.units,
            progress=not args.no_progress,
            explainer=args.explainer,
            explainer_model=args.explainer_model,
            llm_settings=LlmSettings(
                examples=args.score_examples, batch=args.score_batch, scorers=scorers
            ),
            concurrency=args.concurrency,
            retries=args.retries,
            rescore=args.rescore,
        )
    except (FileNotFoundError, EndpointFailure) as exc:
        raise CliError(str(exc)) from None
    except (ValueError, storage.DatabaseUnavailable) as exc:
        raise CliError(str(exc)) from None
    except ModelLoadError as exc:
        raise CliError(f"{exc} (detection measures its negatives with the indexed model; "
                       "--scorer fuzzing needs none)") from None  # fmt: skip
    if args.rescore:
        print(
            f"re-scored {report.rescored} LLM explanations kept from earlier indexes, on "
            f"{len(report.sources)} sources in {report.seconds:.1f} s"
        )
    else:
        print(
            f"explained {report.explained} units of {len(report.sources)} sources in "
            f"{report.seconds:.1f} s ({report.skipped} already explained, {report.silent} "
            "never fired)"
        )
    if report.stale:
        print(
            f"{report.stale} LLM explanations were scored on an earlier index: "
            "`spyglass explain --rescore` scores them on this one"
        )
    if report.usage is not None:
        u = report.usage
        print(
            f"endpoint: {u.calls} calls, {u.retries} retries, {u.prompt_tokens} prompt and "
            f"{u.completion_tokens} completion tokens"
        )
    if report.failed or report.failed_scores:
        print(
            f"failed: {report.failed} units without an explanation (a re-run tries them "
            f"again), {report.failed_scores} scores left out; all recorded in explain_failures"
        )
        for line in report.errors:
            print(f"  {line}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from indexer.neuronpedia.export import export_index
    from spyglass import storage

    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    started = time.perf_counter()
    try:
        r = export_index(args.db, args.model, args.out, sources)
    except (FileNotFoundError, ValueError, storage.DatabaseUnavailable) as exc:
        raise CliError(str(exc)) from None
    print(
        f"exported {r.features} units, {r.activations} activation records and "
        f"{r.explanations} explanations of {len(r.sources)} sources to {args.out} "
        f"({r.files} files, {time.perf_counter() - started:.1f} s)"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from indexer.neuronpedia.importer import import_export
    from spyglass import storage

    started = time.perf_counter()
    try:
        r = import_export(
            args.folder, args.db, model=args.model, slug=args.name, replace=args.replace
        )
    except (ValueError, storage.DatabaseUnavailable) as exc:
        raise CliError(str(exc)) from None
    kind = "a Spyglass export, as it was" if r.exact else "Neuronpedia's records"
    print(
        f"imported {r.slug}: {r.units} units, {r.examples} examples and {r.explanations} "
        f"explanations of {len(r.sources)} sources from {kind} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0
