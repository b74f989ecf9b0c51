"""Crash safety and sharding, end to end on the tiny model: a run killed at random
moments and run again, and any split into shards merged, give the database of one
uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from db_dump import assert_same_index, correlations, dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_settings import tiny_config

from indexer.pipeline import build_index, merge_shards


@pytest.fixture(scope="module")
def single_run(tiny_model_dir, tiny_corpus_dir, tmp_path_factory):
    """One uninterrupted run; the reference every other database must equal."""
    db = tmp_path_factory.mktemp("single") / "one.db"
    build_index(tiny_config(tiny_model_dir, tiny_corpus_dir, db))
    return str(db)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(n=st.integers(2, 4), rnd=st.randoms(use_true_random=False))
def test_any_sharding_merges_to_the_single_run(
    n, rnd, single_run, tiny_model_dir, tiny_corpus_dir, tmp_path_factory
):
    root = tmp_path_factory.mktemp("shards")
    shards = list(range(n))
    rnd.shuffle(shards)  # shards run in any order, each in its own pass
    for i in shards:
        cfg = tiny_config(tiny_model_dir, tiny_corpus_dir, root / "x.db", shard=(i, n))
        build_index(cfg)
    folders = sorted((root / "x.db.work").glob("*/shard-*"))
    assert len(folders) == n
    rnd.shuffle(folders)
    merge_shards(folders, db=str(root / "merged.db"), progress=False)
    assert_same_index(single_run, str(root / "merged.db"))


def test_merge_refuses_a_missing_or_foreign_shard(tiny_model_dir, tiny_corpus_dir, tmp_path):
    for i in range(2):
        build_index(tiny_config(tiny_model_dir, tiny_corpus_dir, tmp_path / "a.db", shard=(i, 3)))
    folders = sorted((tmp_path / "a.db.work").glob("*/shard-*"))
    with pytest.raises(ValueError, match=r"need token shards 0\.\.2 of 3 for each"):
        merge_shards(folders, db=str(tmp_path / "m.db"))
    other = tiny_config(tiny_model_dir, tiny_corpus_dir, tmp_path / "b.db", shard=(2, 3), top_k=4)
    build_index(other)
    foreign = next((tmp_path / "b.db.work").glob("*/shard-2-of-3"))
    with pytest.raises(ValueError, match="other settings"):
        merge_shards([*folders, foreign], db=str(tmp_path / "m.db"))
    assert not (tmp_path / "m.db").exists() or dump(str(tmp_path / "m.db"))["models"] == []


def _cli(model_dir: Path, corpus_dir: Path, db: Path, *extra: str) -> list[str]:
    cfg = tiny_config(model_dir, corpus_dir, db)
    return [
        sys.executable, "-m", "cli", "index",
        "--model", cfg.model, "--corpus", cfg.corpus, "--db", str(db), "--name", cfg.name,
        "--seq-len", str(cfg.seq_len), "--batch-size", str(cfg.batch_size),
        "--top-k", str(cfg.top_k), "--device", "cpu", *extra,
    ]  # fmt: skip


def test_killed_runs_resume_to_the_same_database(
    tiny_model_dir, tiny_corpus_dir, tiny_sae_dir, tmp_path
):
    """kill -9 at random moments (while loading, mid-pass, mid-checkpoint, mid-write),
    then the same command again: the final database equals an uninterrupted run's. An SAE
    among the sources: its activation log is cut back to the checkpoint on each resume."""
    reference = tmp_path / "reference.db"
    killed = tmp_path / "killed.db"
    # The CLI's defaults, but a batch of 1 and a checkpoint after each: many to land in.
    sae = ("--sae", str(tiny_sae_dir), "--batch-size", "1")
    cmd = _cli(tiny_model_dir, tiny_corpus_dir, reference, *sae)
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    cmd = _cli(tiny_model_dir, tiny_corpus_dir, killed, *sae)
    cmd += ["--checkpoint-every", "0"]
    checkpoint = tmp_path / "killed.db.work" / "tiny" / "shard-0-of-1" / "checkpoint.pt"

    def saved() -> float | None:
        return checkpoint.stat().st_mtime_ns if checkpoint.exists() else None

    rnd = random.Random(7)
    kills, states = 0, set()
    for attempt in range(8):
        before = saved()
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if attempt > 0:  # the first dies while still loading; later ones mid-pass
            while proc.poll() is None and saved() == before:
                time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break
        states.add(saved())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert kills >= 4 and len(states) >= 3  # killed at several different points
    assert dump(str(reference)) == dump(str(killed))
    assert correlations(str(reference)) == correlations(str(killed))
    assert not (tmp_path / "killed.db.work").exists()  # a finished run leaves no work behind
