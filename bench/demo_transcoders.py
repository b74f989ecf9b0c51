"""What the shipped transcoders add to the demo's first run, measured in one run.

Runs the demo's index and explain twice, one after the other, into fresh databases:
(a) the neurons and the shipped SAE, as before the transcoders; (b) the same plus the
shipped transcoder set. Prints, for each, the index's and explain's wall seconds, the
index command's peak RSS and its printed memory estimate, and the database's size; then
the differences. The host is noisy: compare within one run.

    python bench/demo_transcoders.py [--tokens 131072] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAE = ROOT / "saes" / "embedded-12-res-topk-4608"
TRANSCODERS = ROOT / "saes" / "embedded-transcoders-topk-skip-768"
SPYGLASS = [sys.executable, "-m", "cli"]


def run(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) of the child, and its output."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "peak-rss-kb %M", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    lines = [line for line in done.stderr.splitlines() if line.startswith("peak-rss-kb")]
    peak = int(lines[-1].split()[-1]) * 1024 if lines else 0
    return seconds, peak, done.stdout


def demo(db: Path, tokens: int, transcoders: bool) -> dict:
    index = [*SPYGLASS, "index", "--tokens", str(tokens), "--sae", str(SAE), "--db", str(db)]
    if transcoders:
        index += ["--transcoders", str(TRANSCODERS)]
    t_index, rss, out = run(index)
    estimate = next((line for line in out.splitlines() if line.startswith("memory:")), "")
    explain = [*SPYGLASS, "explain", "--db", str(db), "--model", "embedded", "--no-progress"]
    t_explain, _, _ = run(explain)
    return {
        "index_s": t_index,
        "explain_s": t_explain,
        "peak_rss_gb": rss / 1e9,
        "db_mb": db.stat().st_size / 1e6,
        "estimate": estimate.strip(),
        "summary": next((line for line in out.splitlines() if line.startswith("indexed")), ""),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--keep", help="folder to keep the two databases in (default: a temp dir)")
    args = p.parse_args()
    if not (TRANSCODERS / "config.yaml").is_file():
        sys.exit(f"no transcoder set at {TRANSCODERS}")
    folder = Path(args.keep or tempfile.mkdtemp(prefix="demo-tc-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    rows = {}
    for name, with_tc in (("without", False), ("with", True)):
        rows[name] = demo(folder / f"{name}.db", args.tokens, with_tc)
        r = rows[name]
        print(
            f"{name} transcoders: index {r['index_s']:.1f} s, explain {r['explain_s']:.1f} s, "
            f"peak RSS {r['peak_rss_gb']:.2f} GB, database {r['db_mb']:.0f} MB",
            flush=True,
        )
        print(f"  {r['summary']}\n  {r['estimate']}", flush=True)
    a, b = rows["without"], rows["with"]
    added = (b["index_s"] + b["explain_s"]) - (a["index_s"] + a["explain_s"])
    print(
        f"the transcoders add {added:.1f} s to the first run (index "
        f"{b['index_s'] - a['index_s']:+.1f} s, explain {b['explain_s'] - a['explain_s']:+.1f} s), "
        f"{b['db_mb'] - a['db_mb']:+.0f} MB to the database and "
        f"{b['peak_rss_gb'] - a['peak_rss_gb']:+.2f} GB to the peak RSS"
    )


if __name__ == "__main__":
    main()
