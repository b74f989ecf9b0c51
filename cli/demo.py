"""``spyglass demo``: index the embedded model, corpus, shipped SAE and shipped transcoders
(unless done), explain their units, and serve; an index an older Spyglass wrote is rebuilt
around its labels."""

from __future__ import annotations

import argparse

from cli.commands import SHIPPED_SAE, SHIPPED_TRANSCODERS, _run_index, cmd_explain, cmd_serve


def cmd_demo(args: argparse.Namespace) -> int:
    from indexer.pipeline import IndexConfig
    from spyglass.sources import transcoder_spec
    from spyglass.transcoders import layers_on_disk

    saes = (str(SHIPPED_SAE),) if (SHIPPED_SAE / "cfg.json").is_file() else ()
    layers = layers_on_disk(SHIPPED_TRANSCODERS)
    transcoders = (str(SHIPPED_TRANSCODERS),) if layers else ()
    wanted = set(saes) | {transcoder_spec(SHIPPED_TRANSCODERS, layer) for layer in layers}
    _remove_outdated_demo_index(args.db)
    if args.reindex or _indexed_saes(args.db, "embedded") != wanted:
        _run_index(IndexConfig(db=args.db, tokens=args.tokens, saes=saes, transcoders=transcoders))
    else:
        print(f"reusing the embedded index in {args.db} (pass --reindex to rebuild it)")
    cmd_explain(
        argparse.Namespace(
            db=args.db,
            model="embedded",
            sources=None,
            units=None,
            no_progress=False,
            explainer="token-pattern",
            explainer_model=None,
            scorer="none",
            score_examples=10,
            score_batch=5,
            concurrency=1,
            retries=0,
            rescore=False,
        )
    )
    args.preload = True
    return cmd_serve(args)


def _remove_outdated_demo_index(db: str) -> None:
    """The demo's own database, written by an older Spyglass, is rebuilt, not patched; its
    labels and explanations are kept (an older explanations table is upgraded in place,
    every other table dropped and indexed again)."""
    from spyglass import storage

    try:
        storage.make_engine(db).dispose()
        return
    except FileNotFoundError:
        return
    except storage.OutdatedIndexError:
        pass
    try:
        storage.make_engine(db, create=True).dispose()  # upgrades the explanations table
        return
    except storage.OutdatedIndexError as exc:
        print(f"{exc}: rebuilding the demo index, its labels and explanations kept")
    engine = storage.make_engine(db, check=False)
    try:
        storage.drop_all_but_explanations(engine)
    finally:
        engine.dispose()


def _indexed_saes(db: str, slug: str) -> set[str] | None:
    """The SAE folders indexed for ``slug`` in ``db``; None when there is no such index."""
    from sqlalchemy import inspect

    from spyglass import storage

    try:
        engine = storage.make_engine(db)
    except FileNotFoundError:
        return None
    try:
        with engine.connect() as conn:
            model = storage.get_model(conn, slug)
            if model is None or not inspect(conn).has_table(storage.token_units.name):
                return None  # none, or one written before the token index: index again
            return {s.sae for s in storage.list_sources(conn, model.id) if s.sae}
    except Exception:  # noqa: BLE001 - an unreadable or foreign file simply has no index
        return None
    finally:
        engine.dispose()
