"""``spyglass train-transcoders``, ``eval-transcoders`` and ``convert-transcoders``: a
transcoder per MLP layer, trained in one streaming pass, measured on held-out tokens,
and written in circuit-tracer's or SAELens's layout (``spyglass.transcoders``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.commands import CliError, add_training_args, check_training, training_settings


def parse_layers(text: str | None, flag: str = "--layers") -> tuple[int, ...] | None:
    """``0,3,5-7`` -> (0, 3, 5, 6, 7); None stays None (every layer)."""
    if text is None:
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers += range(int(lo), int(hi) + 1) if hi else [int(lo)]
    except ValueError:
        raise CliError(f"{flag} takes layer numbers like 0,3,5-7, got {text!r}") from None
    if not layers or min(layers) < 0:
        raise CliError(f"{flag} takes non-negative layer numbers, got {text!r}")
    return tuple(sorted(set(layers)))


def cmd_train_transcoders(args: argparse.Namespace) -> int:
    from indexer.corpus import CorpusError
    from indexer.transcoder_training import (
        TranscoderTrainConfig,
        TranscoderTrainer,
        write_trained_transcoders,
    )
    from spyglass.model import ModelLoadError

    cfg = TranscoderTrainConfig(
        layers=parse_layers(args.layers),
        activation=args.activation,
        l0_coef=args.l0_coef,
        skip=args.skip,
        lr_decay=args.lr_decay,
        **training_settings(args),
    )
    check_training(cfg, topk=cfg.activation == "topk")
    if cfg.l0_coef < 0:
        raise CliError("--l0-coef must not be negative")
    if not 0 <= cfg.lr_decay <= 1:
        raise CliError("--lr-decay must be between 0 and 1")
    try:
        trainer = TranscoderTrainer(cfg)
        metrics = trainer.run()
    except (ModelLoadError, CorpusError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    write_trained_transcoders(
        cfg, trainer, metrics, "spyglass " + " ".join(sys.argv[1:]), args.format, args.dtype
    )
    fvus = sorted(v["train_fvu_last_batch"] for v in metrics["layers"].values())
    print(
        f"trained {len(trainer.layers)} transcoders x{cfg.d_sae} ({cfg.activation}"
        f"{f', k={cfg.k}' if cfg.activation == 'topk' else ''}{', skip' if cfg.skip else ''}) "
        f"on {metrics['tokens']} tokens in {metrics['seconds']:.0f} s: last-batch FVU median "
        f"{fvus[len(fvus) // 2]:.3f}, worst {fvus[-1]:.3f} -> {cfg.out} ({args.format})"
    )
    return 0


def cmd_eval_transcoders(args: argparse.Namespace) -> int:
    from indexer.corpus import CorpusError
    from indexer.transcoder_eval import TranscoderEvalConfig, evaluate_transcoders
    from spyglass.model import ModelLoadError, load_model
    from spyglass.sae import SaeLoadError
    from spyglass.transcoders import load_transcoders, load_transcoders_for_model

    if min(args.sequences, args.batch_size) < 1 or args.loss_sequences < 0 or args.seq_len < 3:
        raise CliError(
            "--sequences and --batch-size must be positive, --loss-sequences not negative, "
            "--seq-len at least 3"
        )
    cfg = TranscoderEvalConfig(
        corpus=args.corpus,
        sequences=args.sequences,
        loss_sequences=min(args.loss_sequences, args.sequences),
        seq_len=args.seq_len,
        batch_size=args.batch_size,
    )
    try:
        found = load_transcoders(args.transcoders)
        spec = args.model or found.model_name
        if not spec:
            raise CliError("the transcoders name no model; pass --model")
        model = load_model(spec, args.device)
        tcs = load_transcoders_for_model(args.transcoders, model, parse_layers(args.layers))
        metrics = evaluate_transcoders(tcs.transcoders, model, cfg)
    except (SaeLoadError, ModelLoadError, CorpusError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    path = Path(args.transcoders) / "metrics.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record["eval"] = metrics | {"model": spec}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(_eval_table(metrics))
    return 0


def _eval_table(m: dict) -> str:
    rows = ["layer  FVU    L0     dead   dense  KL      ΔCE"]
    for layer, v in m["layers"].items():
        rows.append(
            f"{layer:>5}  {v['fvu']:.3f}  {v['l0']:5.1f}  {v['dead_fraction']:5.1%}  "
            f"{v['dense_fraction']:5.1%}  {v['kl']:.4f}  {v['delta_ce']:.4f}"
        )
    a = m["all_layers"]
    rows.append(
        f"FVU median {m['fvu_median']:.3f}, worst {m['fvu_max']:.3f}; every layer spliced at "
        f"once: KL {a['kl']:.4f}, ΔCE {a['delta_ce']:.4f} nats (clean loss "
        f"{m['loss_clean']:.3f}, {m['loss_tokens']} tokens)"
    )
    return "\n".join(rows)


def cmd_convert_transcoders(args: argparse.Namespace) -> int:
    from spyglass.sae import SaeLoadError
    from spyglass.transcoders import load_transcoders, save_transcoders

    if Path(args.out).resolve() == Path(args.transcoders).resolve():
        raise CliError("--out must be another folder than the set it converts")
    try:
        tcs = load_transcoders(args.transcoders)
        save_transcoders(tcs, args.out, args.format, dtype=args.dtype)
    except (SaeLoadError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {len(tcs.layers)} transcoders ({tcs.layout} -> {args.format}) to {args.out}")
    return 0


def add_parsers(sub) -> None:
    from indexer.transcoder_training import ACTIVATIONS, TranscoderTrainConfig
    from spyglass.transcoders import CIRCUIT_TRACER, LAYOUTS

    d = TranscoderTrainConfig()
    t = sub.add_parser(
        "train-transcoders",
        help="train a transcoder per MLP layer in one streaming pass (resumable)",
        description="Train one transcoder per MLP layer (reading blocks.L.ln2.hook_normalized, "
        "predicting blocks.L.hook_mlp_out), every layer from the same forward passes over the "
        "corpus, and write the set in circuit-tracer's layout (config.yaml + "
        "layer_<i>.safetensors) or SAELens's (layer_<i>/cfg.json + sae_weights.safetensors), "
        "with metrics.json. Run the same command again to resume from the last checkpoint.",
    )
    add_training_args(t, d)
    t.add_argument("--layers", help="MLP layers, e.g. 0,3,5-7 (default: every layer)")
    t.add_argument("--activation", choices=ACTIVATIONS, default=d.activation, help="(topk)")
    t.add_argument(
        "--l0-coef", type=float, default=d.l0_coef, help=f"L0 penalty, jumprelu ({d.l0_coef})"
    )
    t.add_argument(
        "--lr-decay", type=float, default=d.lr_decay,
        help=f"final share of --tokens over which the learning rate falls to 0 ({d.lr_decay})",
    )  # fmt: skip
    t.add_argument("--skip", action="store_true", help="add a linear skip connection W_skip")
    t.add_argument("--format", choices=LAYOUTS, default=CIRCUIT_TRACER, help="layout written")
    t.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
        help="weights' dtype on disk (float32)",
    )  # fmt: skip
    t.set_defaults(func=cmd_train_transcoders)

    e = sub.add_parser(
        "eval-transcoders",
        help="measure a transcoder set per layer on held-out tokens: FVU, L0, dead/dense, "
        "KL and delta CE with one layer and with every layer spliced in",
        description="Evaluate a transcoder set (either layout) on the corpus's first "
        "--sequences sequences, the ones train-transcoders holds out. Per layer: FVU of the "
        "MLP output, L0, dead and dense shares, next-token KL and delta CE with that layer "
        "alone spliced in; then KL and delta CE with every layer spliced at once. Prints a "
        "table and stores the metrics under 'eval' in the folder's metrics.json.",
    )
    e.add_argument("transcoders", help="a transcoder set's folder (either layout)")
    e.add_argument("--model", help="model spec (default: the model the set names)")
    e.add_argument("--corpus", default="embedded", help="corpus spec (default: embedded)")
    e.add_argument("--layers", help="only these layers, e.g. 0,3,5-7 (default: all)")
    e.add_argument("--sequences", type=int, default=256, help="held-out sequences (256)")
    e.add_argument(
        "--loss-sequences", type=int, default=64,
        help="of those, how many the spliced KL and delta CE use (64)",
    )  # fmt: skip
    e.add_argument("--seq-len", type=int, default=128)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    e.set_defaults(func=cmd_eval_transcoders)

    c = sub.add_parser(
        "convert-transcoders",
        help="write a transcoder set in circuit-tracer's or SAELens's layout",
        description="Read a transcoder set in either layout and write it in the other (or "
        "the same, in another dtype). Hooks are written as the set reads them.",
    )
    c.add_argument("transcoders", help="the set's folder")
    c.add_argument("--out", required=True, help="folder to write")
    c.add_argument("--format", choices=LAYOUTS, required=True, help="layout to write")
    c.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="(as read)")
    c.set_defaults(func=cmd_convert_transcoders)
