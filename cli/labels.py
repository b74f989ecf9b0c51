"""``spyglass labels export|import``: people's labels as JSON lines, to back them up or to
move them between indexes and servers (``storage.kept``); and ``spyglass upgrade``, which
brings an older index's explanations table to the current form, every row kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from cli.commands import CliError


def cmd_labels_export(args: argparse.Namespace) -> int:
    from spyglass import storage

    # An index written by an older Spyglass is readable too: its explanations table is
    # upgraded in place (rows kept), whatever else it lacks.
    engine = _engine(args.db, create=True, check=False)
    try:
        with engine.connect() as conn:
            lines = [orjson.dumps(r) + b"\n" for r in storage.export_labels(conn, args.model)]
    finally:
        engine.dispose()
    if args.out == "-":
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.flush()
    else:
        out = Path(args.out).expanduser()
        if out.is_dir():
            raise CliError(f"--out {args.out} is a folder; name a file")
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(b"".join(lines))
        tmp.replace(out)  # a backup is whole or absent, never half written
        print(f"exported {len(lines)} labels to {args.out}", file=sys.stderr)
    return 0


def cmd_labels_import(args: argparse.Namespace) -> int:
    from spyglass import storage

    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    lines = []
    for number, text in enumerate(raw.splitlines(), 1):
        if not text.strip():
            continue
        try:
            lines.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise CliError(f"{args.file} line {number}: not JSON ({exc})") from None
    engine = _engine(args.db, create=True)
    try:
        with engine.begin() as conn:  # all or nothing
            r = storage.import_labels(conn, lines, model=args.model)
    except ValueError as exc:
        raise CliError(f"{args.file} {exc}") from None
    finally:
        engine.dispose()
    print(
        f"imported {r.added + r.waiting} labels ({r.waiting} on sources not indexed here: "
        f"kept), {r.present} already here"
    )
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from spyglass import storage

    engine = _engine(args.db, create=False, check=False)
    try:
        kept = storage.upgrade_explanations(engine)
        problem = storage.outdated(engine)
    except storage.DatabaseUnavailable as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.dispose()
    print(
        "nothing to upgrade" if kept is None else f"upgraded: {kept} labels and explanations kept"
    )
    if problem:
        print(f"the index {problem}: index it again (its labels and explanations are kept)")
    return 0


def _engine(db: str, *, create: bool, check: bool = True):
    from spyglass import storage

    try:
        storage.make_engine(db, check=False).dispose()  # FileNotFoundError for a missing file
        return storage.make_engine(db, create=create, check=check)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, storage.DatabaseUnavailable) as exc:
        raise CliError(str(exc)) from None


def add_parser(sub) -> None:
    labels = sub.add_parser(
        "labels",
        help="export or import people's labels (JSON lines)",
        description="People's labels of units, one JSON object a line (model, source, unit, "
        "text, author, created, indexed, unit_key): back them up, or move them between "
        "indexes and servers. Labels outlive a re-index on their own; this is for copies.",
    )
    verbs = labels.add_subparsers(dest="verb", required=True, metavar="{export,import}")
    out = verbs.add_parser("export", help="write every label as JSON lines")
    out.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    out.add_argument("--model", help="only this model's labels (default: all)")
    out.add_argument("--out", default="-", help="a file (default: standard output)")
    out.set_defaults(func=cmd_labels_export)
    imp = verbs.add_parser(
        "import",
        help="add labels from JSON lines (a label already here is not added again)",
        description="Add the labels of an export, in one transaction. Each lands on the unit "
        "of the same model, source and index here; one whose source is not indexed here is "
        "kept and shows once it is. Importing the same file twice adds nothing.",
    )
    imp.add_argument("file", help="the JSON lines file (- for standard input)")
    imp.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    imp.add_argument("--model", help="put them on this model (default: the one each names)")
    imp.set_defaults(func=cmd_labels_import)

    up = sub.add_parser(
        "upgrade",
        help="upgrade an older index's explanations table in place, keeping every row",
        description="An index written before labels outlived re-indexing has an older "
        "explanations table, and the server refuses it. This rebuilds that table in the "
        "current form in one transaction, every label and explanation kept. (Commands that "
        "write to an index do the same on their own.)",
    )
    up.add_argument("--db", default="data/spyglass.db", help="SQLite path or SQLAlchemy URL")
    up.set_defaults(func=cmd_upgrade)
